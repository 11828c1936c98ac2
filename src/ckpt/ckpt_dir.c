/* ckpt_dir.c — run directories: finding the newest good checkpoint, keep-K
 * rotation, and the lock that stops two jobs from sharing a directory.
 *
 * find_latest trusts nothing: the file `latest` names is fully verified (header,
 * digest before HDF5 parses anything, then every dataset checksum), and when it
 * fails or is missing, the ckpt-<step>.h5 files are tried by decreasing step. A
 * .tmp file is never a candidate (it was not committed).
 *
 * The lock is flock(2) on DIR/mpirec.lock, plus an owner record (host, pid,
 * SLURM job id, start time) written into that file for the error message of the
 * job that loses. flock, unlike fcntl locks, belongs to the open file
 * description, so closing some other descriptor of the file cannot drop it, and
 * the kernel releases it when the holder dies: a preempted or killed job never
 * blocks its requeued successor. (On NFS, Linux maps flock to byte-range locks
 * through lockd; where locking is unsupported the error says so.)
 *
 * Not here: anything MPI. Rank 0 calls these.
 */
#include "ckpt_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mpirec/log.h"

int ck_parse_step(const char *name, const char *prefix, int tmp, int64_t *step)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0 || name[pl] != '-')
        return 0;
    const char *d = name + pl + 1, *q = d;
    int64_t v = 0;
    while (*q >= '0' && *q <= '9' && q - d < 18)
        v = v * 10 + (*q++ - '0');
    if (q == d)
        return 0;
    if (strcmp(q, tmp ? ".h5.tmp" : ".h5") != 0)
        return 0;
    *step = v;
    return 1;
}

typedef struct StepFile {
    int64_t step;
    char name[256];
} StepFile;

static int cmp_step_desc(const void *a, const void *b)
{
    const StepFile *x = a, *y = b;
    if (x->step != y->step)
        return x->step < y->step ? 1 : -1;
    return -strcmp(x->name, y->name);
}

/* The files <prefix>-<step>.h5 of dir, newest first. -1 with errno on failure. */
static int64_t list_steps(const char *dir, const char *prefix, StepFile **out)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    StepFile *v = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t step;
        if (strlen(de->d_name) >= sizeof v->name || !ck_parse_step(de->d_name, prefix, 0, &step))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            StepFile *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = nv;
        }
        v[n].step = step;
        snprintf(v[n].name, sizeof v[n].name, "%s", de->d_name);
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(v, (size_t)n, sizeof *v, cmp_step_desc);
    *out = v;
    return n;
}

void ck_rotate(const char *dir, const char *prefix, const char *current, int keep)
{
    StepFile *v = NULL;
    int64_t n = list_steps(dir, prefix, &v);
    if (n < 0) {
        mr_log(MR_LOG_WARN, "checkpoint rotation: cannot list %s: %s", dir, strerror(errno));
        return;
    }
    int64_t kept = 0;
    char p[CK_PATH_MAX + 300];
    for (int64_t i = 0; i < n; i++) {
        int is_current = strcmp(v[i].name, current) == 0;
        if (is_current || kept < keep) {
            kept++;
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
        if (unlink(p) != 0 && errno != ENOENT)
            mr_log(MR_LOG_WARN, "checkpoint rotation: cannot remove %s: %s", p, strerror(errno));
        else
            mr_log(MR_LOG_DEBUG, "checkpoint rotation: removed %s", p);
    }
    free(v);
    /* Leftovers of interrupted writes (the lock keeps other jobs out of dir). */
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t step;
        if (!ck_parse_step(de->d_name, prefix, 1, &step))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (unlink(p) != 0 && errno != ENOENT)
            mr_log(MR_LOG_WARN, "checkpoint rotation: cannot remove %s: %s", p, strerror(errno));
    }
    closedir(d);
}

/* ---- find_latest --------------------------------------------------------------- */

static void add_skipped(char *skipped, size_t n, const char *name, const char *why)
{
    if (!skipped || n == 0)
        return;
    size_t len = strlen(skipped);
    if (len + 1 >= n)
        return;
    snprintf(skipped + len, n - len, "%s%s: %s", len ? "; " : "", name, why);
}

/* Open and fully verify one candidate. */
static int try_candidate(const char *path, MrErr *e)
{
    MrCkptReader *r = NULL;
    int rc = ck_open_checked(&r, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, e);
    if (!rc)
        rc = mr_ckpt_verify(r, e);
    mr_ckpt_close(&r);
    return rc;
}

static int valid_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int mr_ckpt_find_latest(const char *dir, char *path, size_t n, char *skipped, size_t skipped_n,
                        MrErr *e)
{
    ck_h5_quiet();
    if (n)
        path[0] = '\0';
    if (skipped && skipped_n)
        skipped[0] = '\0';
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT)
            return MR_OK;
        return mr_err_set(e, MR_EIO, "cannot access checkpoint directory %s: %s", dir,
                          strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return mr_err_set(e, MR_EIO, "%s is not a directory", dir);

    char tried[256] = "";
    char p[CK_PATH_MAX + 300];
    MrErr e2;
    /* 1. `latest`. */
    snprintf(p, sizeof p, "%s/latest", dir);
    FILE *f = fopen(p, "rb");
    if (f) {
        char name[512] = "";
        size_t got = fread(name, 1, sizeof name - 1, f);
        name[got] = '\0';
        fclose(f);
        while (got && (name[got - 1] == '\n' || name[got - 1] == '\r' || name[got - 1] == ' '))
            name[--got] = '\0';
        if (!valid_name(name) || got >= sizeof tried) {
            add_skipped(skipped, skipped_n, "latest", "does not hold a file name");
        } else {
            snprintf(tried, sizeof tried, "%s", name);
            snprintf(p, sizeof p, "%s/%s", dir, name);
            mr_err_clear(&e2);
            if (try_candidate(p, &e2) == MR_OK) {
                if (snprintf(path, n, "%s", p) >= (int)n)
                    return mr_err_set(e, MR_EIO, "path too long: %s", p);
                return MR_OK;
            }
            char what[300];
            snprintf(what, sizeof what, "%s (named by latest)", name);
            add_skipped(skipped, skipped_n, what, e2.msg);
        }
    } else if (errno != ENOENT) {
        add_skipped(skipped, skipped_n, "latest", strerror(errno));
    }

    /* 2. Every ckpt-<step>.h5, newest first. */
    StepFile *v = NULL;
    int64_t cnt = list_steps(dir, "ckpt", &v);
    if (cnt < 0)
        return mr_err_set(e, MR_EIO, "cannot list checkpoint directory %s: %s", dir,
                          strerror(errno));
    for (int64_t i = 0; i < cnt; i++) {
        if (strcmp(v[i].name, tried) == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, v[i].name);
        mr_err_clear(&e2);
        if (try_candidate(p, &e2) == MR_OK) {
            free(v);
            if (snprintf(path, n, "%s", p) >= (int)n)
                return mr_err_set(e, MR_EIO, "path too long: %s", p);
            return MR_OK;
        }
        add_skipped(skipped, skipped_n, v[i].name, e2.msg);
    }
    free(v);
    return MR_OK;
}

/* ---- the run-directory lock ---------------------------------------------------- */

struct MrCkptLock {
    int fd;
    char path[CK_PATH_MAX + 32];
};

int mr_ckpt_dir_lock(const char *dir, const char *owner_text, MrCkptLock **lock, MrErr *e)
{
    *lock = NULL;
    int rc = ck_mkdirs(dir, e);
    if (rc)
        return rc;
    MrCkptLock *l = calloc(1, sizeof *l);
    if (!l)
        return mr_err_set(e, MR_ENOMEM, "out of memory taking the lock of %s", dir);
    if (snprintf(l->path, sizeof l->path, "%s/%s", dir, MR_CKPT_LOCK_NAME) >= (int)sizeof l->path) {
        free(l);
        return mr_err_set(e, MR_EIO, "path too long: %s", dir);
    }
    l->fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (l->fd < 0) {
        rc = mr_err_set(e, MR_EIO, "cannot open lock file %s: %s", l->path, strerror(errno));
        free(l);
        return rc;
    }
    if (flock(l->fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EWOULDBLOCK) {
            char owner[600] = "";
            ssize_t got = pread(l->fd, owner, sizeof owner - 1, 0);
            owner[got > 0 ? got : 0] = '\0';
            size_t len = strlen(owner);
            while (len && (owner[len - 1] == '\n' || owner[len - 1] == ' '))
                owner[--len] = '\0';
            rc = mr_err_set(e, MR_EIO,
                            "checkpoint directory %s is in use by another job (%s); two jobs must "
                            "not share a run directory: give this one another output directory, "
                            "or wait until that job ends (its lock goes away when it exits)",
                            dir, owner[0] ? owner : "owner unknown");
        } else {
            rc = mr_err_set(e, MR_EIO, "cannot lock %s: %s (does this file system support flock?)",
                            l->path, strerror(err));
        }
        close(l->fd);
        free(l);
        return rc;
    }
    char host[256] = "unknown", started[32] = "";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *job = getenv("SLURM_JOB_ID");
    char rec[1024];
    int len = snprintf(rec, sizeof rec, "host=%s pid=%ld slurm_job=%s started=%s%s%s\n", host,
                       (long)getpid(), job && *job ? job : "none", started,
                       owner_text && *owner_text ? " owner=" : "", owner_text ? owner_text : "");
    if (len >= (int)sizeof rec)
        len = (int)sizeof rec - 1;
    if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, rec, (size_t)len, 0) != len) {
        rc =
            mr_err_set(e, MR_EIO, "cannot write the owner record %s: %s", l->path, strerror(errno));
        close(l->fd);
        free(l);
        return rc;
    }
    *lock = l;
    return MR_OK;
}

void mr_ckpt_dir_unlock(MrCkptLock **lock)
{
    if (!lock || !*lock)
        return;
    MrCkptLock *l = *lock;
    *lock = NULL;
    /* Empty the record first, so nobody reads a stale owner after we are gone. */
    if (ftruncate(l->fd, 0) != 0) {
        /* Nothing useful to do: closing releases the lock all the same. */
    }
    close(l->fd);
    free(l);
}

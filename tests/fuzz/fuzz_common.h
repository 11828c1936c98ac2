/* fuzz_common.h — helpers of the file-loader fuzz targets: the input is written to
 * a private temporary file (in $TMPDIR, else /dev/shm, else /tmp) that the loader
 * under test opens by name, as it would a file on disk. */
#ifndef MPIREC_FUZZ_COMMON_H
#define MPIREC_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

/* A directory of our own (created once per process, removed at exit). */
static char fz_dir[512];

static void fz_rm_dir(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", fz_dir);
}

static const char *fz_tmpdir(void)
{
    if (fz_dir[0])
        return fz_dir;
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (!base || !*base)
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fz_dir, sizeof fz_dir, "%s/mpirec-fuzz-%d", base, (int)getpid());
    if (mkdir(fz_dir, 0700) != 0 && errno != EEXIST)
        abort();
    atexit(fz_rm_dir);
    return fz_dir;
}

/* Write data to <tmpdir>/<name> (replacing it); returns the path (static). */
static const char *fz_write(const char *name, const uint8_t *data, size_t size)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", fz_tmpdir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    close(fd);
    return path;
}

/* Every HDF5 file, group, dataset, attribute... the loader opened is closed again
 * (a leaked id is invisible to LeakSanitizer: HDF5 still references it). */
static void fz_no_open_ids(const char *what)
{
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n != 0) {
        fprintf(stderr, "%s left %zd HDF5 ids open\n", what, n);
        abort();
    }
}

#endif

#!/bin/bash
# start.sh — start (or confirm running) a private one-node Slurm 22.05 cluster on
# this host without systemd: munged, slurmctld and slurmd, all three with their
# state, sockets, logs and PID files under SLURM_LOCAL_DIR. Used by
# tests/e2e/slurm_preempt.sh. Adapted from ../shared/notes/slurm-local (tested
# recipe and pitfalls: ../shared/notes/toolchain.md section 4); differences:
#   - SLURM_LOCAL_DIR is required (no shared default), so two users or two test
#     runs never share daemons;
#   - the two Slurm ports default to free ports chosen now (not 6817/6818, which a
#     real or another local cluster may use); they are recorded in env.sh.
# Idempotent: daemons whose PID file points at a live process of the right name
# are left alone (and then the existing slurm.conf is kept).
# Env: SLURM_LOCAL_DIR (required; its munge socket path must stay < 100 bytes),
#      CPUS (default nproc), CTLD_PORT, SLURMD_PORT (default: free ports),
#      START_TIMEOUT (60 s).
# Afterwards: source "$SLURM_LOCAL_DIR/env.sh" (exports SLURM_CONF) before sbatch/squeue/...
# Stop with stop.sh (same SLURM_LOCAL_DIR): PID files only, never by name.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLURM_LOCAL_DIR:?set SLURM_LOCAL_DIR to a private directory}
HOST=$(hostname -s)
CPUS=${CPUS:-$(nproc)}
START_TIMEOUT=${START_TIMEOUT:-60}
CONF=$DIR/slurm.conf

# free_port: a TCP port nobody listens on now (the kernel picks it).
free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
CTLD_PORT=${CTLD_PORT:-$(free_port)}
SLURMD_PORT=${SLURMD_PORT:-$(free_port)}
[ "$CTLD_PORT" != "$SLURMD_PORT" ] || SLURMD_PORT=$(free_port)

die() { echo "start.sh: $*" >&2; exit 1; }
[[ "$DIR" = /* ]] || die "SLURM_LOCAL_DIR must be an absolute path: $DIR"
[ ${#DIR} -lt 80 ] || die "SLURM_LOCAL_DIR is too long for a unix socket path: $DIR"
for b in munged mungekey slurmctld slurmd scontrol sinfo; do
  command -v "$b" >/dev/null || die "$b not found (apt-get install munge slurmctld slurmd slurm-client)"
done

# pid_alive PIDFILE NAME: true if PIDFILE names a live (non-zombie) process whose comm is NAME
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ] || return 1
  [ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ]
}

# wait_pidfile PIDFILE NAME LOG
wait_pidfile() {
  local i
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    pid_alive "$1" "$2" && return 0
    sleep 0.1
  done
  echo "---- tail of $3" >&2; tail -20 "$3" >&2 || true
  die "$2 did not start (no live PID in $1)"
}

mkdir -p "$DIR"/{state,spool,run,log,munge}
chmod 755 "$DIR" "$DIR/munge"          # munged requires an accessible socket dir
export SLURM_CONF=$CONF

running=0
pid_alive "$DIR/run/slurmctld.pid" slurmctld && running=1
pid_alive "$DIR/run/slurmd.pid" slurmd && running=1
if [ "$running" = 0 ] || [ ! -f "$CONF" ]; then
  sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" \
      -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
      "$HERE/slurm.conf.in" > "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
else
  echo "start.sh: daemons already running, keeping existing $CONF"
fi
printf 'export SLURM_CONF=%q\n' "$CONF" > "$DIR/env.sh"

# 1. munge, on a private socket named in slurm.conf (AuthInfo=socket=...)
if pid_alive "$DIR/munge/munged.pid" munged; then
  echo "start.sh: munged already running (pid $(cat "$DIR/munge/munged.pid"))"
else
  rm -f "$DIR/munge/munged.pid" "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock"
  [ -s "$DIR/munge/munge.key" ] || mungekey -c -k "$DIR/munge/munge.key"
  chmod 600 "$DIR/munge/munge.key"
  munged -S "$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
  wait_pidfile "$DIR/munge/munged.pid" munged "$DIR/log/munged.log"
  echo "start.sh: munged started (pid $(cat "$DIR/munge/munged.pid"))"
fi

# 2. slurmctld (daemonizes, writes SlurmctldPidFile)
if pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
  echo "start.sh: slurmctld already running (pid $(cat "$DIR/run/slurmctld.pid"))"
else
  rm -f "$DIR/run/slurmctld.pid"
  slurmctld -f "$CONF"
  wait_pidfile "$DIR/run/slurmctld.pid" slurmctld "$DIR/log/slurmctld.log"
  echo "start.sh: slurmctld started (pid $(cat "$DIR/run/slurmctld.pid"))"
fi

# 3. slurmd (daemonizes, writes SlurmdPidFile)
if pid_alive "$DIR/run/slurmd.pid" slurmd; then
  echo "start.sh: slurmd already running (pid $(cat "$DIR/run/slurmd.pid"))"
else
  rm -f "$DIR/run/slurmd.pid"
  slurmd -f "$CONF"
  wait_pidfile "$DIR/run/slurmd.pid" slurmd "$DIR/log/slurmd.log"
  echo "start.sh: slurmd started (pid $(cat "$DIR/run/slurmd.pid"))"
fi

# 4. wait until the controller answers and the node is usable
state=""
for ((i = 0; i < START_TIMEOUT * 2; i++)); do
  if scontrol ping 2>/dev/null | grep -q UP; then
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1)
    case "$state" in
      idle*|mixed*|allocated*|completing*) break ;;
      down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
  fi
  sleep 0.5
done
case "$state" in
  idle*|mixed*|allocated*|completing*) ;;
  *) tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
     die "cluster not ready after ${START_TIMEOUT}s (node state '$state')" ;;
esac
echo "start.sh: cluster up: node $HOST state $state, CPUs $CPUS; now run: source $DIR/env.sh"

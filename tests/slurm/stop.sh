#!/bin/bash
# stop.sh — stop the daemons started by start.sh, found only through their PID
# files in $SLURM_LOCAL_DIR (required). Cancels this cluster's jobs first, so no
# slurmstepd or job process outlives the daemons. Never kills by name; a PID file
# whose process is gone or is no longer the named program is ignored.
# Env: KEEP_JOBS=1 skips the scancel step. Adapted from ../shared/notes/slurm-local.
set -uo pipefail
DIR=${SLURM_LOCAL_DIR:?set SLURM_LOCAL_DIR to the directory start.sh used}
export SLURM_CONF=$DIR/slurm.conf

pid_of() {  # pid_of PIDFILE NAME -> prints pid if PIDFILE names a live NAME process
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ] || return 1
  echo "$pid"
}

alive() {  # alive PID NAME: process exists, is not a zombie, and is still NAME
  [ "$(cat /proc/"$1"/comm 2>/dev/null)" = "$2" ] || return 1
  [ "$(awk '{print $3}' /proc/"$1"/stat 2>/dev/null)" != Z ]
}

stop_all() {  # stop_all PIDFILE:NAME ... (SIGTERM to all at once, wait 15 s, then SIGKILL)
  local spec file name pid i left pids=() names=() files=()
  for spec in "$@"; do
    file=${spec%%:*}; name=${spec##*:}
    if pid=$(pid_of "$file" "$name"); then
      kill -TERM "$pid" 2>/dev/null && { pids+=("$pid"); names+=("$name"); files+=("$file"); }
    else
      echo "stop.sh: $name not running"; rm -f "$file"
    fi
  done
  for ((i = 0; i < 150; i++)); do
    left=0
    for j in "${!pids[@]}"; do alive "${pids[j]}" "${names[j]}" && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for j in "${!pids[@]}"; do
    if alive "${pids[j]}" "${names[j]}"; then
      echo "stop.sh: ${names[j]} (pid ${pids[j]}) ignored SIGTERM for 15 s, sending SIGKILL"
      kill -KILL "${pids[j]}" 2>/dev/null
    fi
    rm -f "${files[j]}"
    echo "stop.sh: ${names[j]} (pid ${pids[j]}) stopped"
  done
}

# cancel jobs of this cluster so no slurmstepd/job processes outlive the daemons
if [ "${KEEP_JOBS:-0}" != 1 ] && pid_of "$DIR/run/slurmctld.pid" slurmctld >/dev/null \
   && pid_of "$DIR/run/slurmd.pid" slurmd >/dev/null; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    echo "stop.sh: cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null
    for ((i = 0; i < 60; i++)); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi

stop_all "$DIR/run/slurmd.pid:slurmd" "$DIR/run/slurmctld.pid:slurmctld" "$DIR/munge/munged.pid:munged"

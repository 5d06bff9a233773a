#!/usr/bin/env bash
# Stop what start-slurm.sh started, by the pid files it wrote (never by process name), newest first.
#   cluster/dev/stop-slurm.sh              # all of it
#   cluster/dev/stop-slurm.sh slurmdbd     # only these daemons (e.g. to run without accounting)
set -euo pipefail
STATE=${ORCH_SLURM_STATE:-/var/tmp/orch-dev-slurm}
# every slurmd first (one per node: slurmd.n1, slurmd.n2), then the rest
DAEMONS=${*:-$(cd "$STATE" 2>/dev/null && ls slurmd*.pid 2>/dev/null | grep -v '\.daemon\.pid$' | sed 's/\.pid$//') slurmctld slurmdbd mariadbd munged}
for name in $DAEMONS; do
  pidfile="$STATE/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "stop-slurm: $name ($pid) ignored SIGTERM for 10 s: SIGKILL" >&2; kill -KILL "$pid" || true; fi
  fi
  rm -f "$pidfile"
  echo "stop-slurm: stopped $name ($pid)" >&2
done

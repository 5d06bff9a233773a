#!/usr/bin/env bash
# Stop the PostgreSQL server that start-postgres.sh started (the one of this data directory, nothing else).
#   cluster/dev/stop-postgres.sh [--purge]    # --purge also deletes the data directory
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${ORCH_PG_DIR:-$REPO/mlruns/run/postgres}"
DATA="$DIR/data"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -s "$DATA/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >&2
else
  echo "postgres not running ($DATA)" >&2
fi
rm -f "$DIR/postgres.pid"
if [ "${1:-}" = "--purge" ]; then rm -rf "$DIR"; fi

#!/usr/bin/env bash
# A PostgreSQL server for orch's MLflow tracking server, for development and tests: Debian's postgresql,
# its own data directory under a project run folder, listening on 127.0.0.1 only, password auth.
# Writes the SQLAlchemy URI to use as `orch server start --backend-store-uri` to $DIR/uri (0600: it holds the
# password) and prints that file's path; the URI itself only with its password hidden, on stderr.
#
#   cluster/dev/start-postgres.sh            # data in mlruns/run/postgres, port 5433
#   orch server start --backend-store-uri "$(cat "$(cluster/dev/start-postgres.sh)")"
#   ORCH_PG_DIR=/tmp/pg ORCH_PG_PORT=55432 cluster/dev/start-postgres.sh
#
# Idempotent: a second call with the server up only prints the path again. stop-postgres.sh stops it.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${ORCH_PG_DIR:-$REPO/mlruns/run/postgres}"
PORT="${ORCH_PG_PORT:-5433}"
DB="${ORCH_PG_DB:-orch}"
ROLE="${ORCH_PG_USER:-orch}"

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
PGBIN="$(find_bin)"
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "installing postgresql (apt-get)..." >&2
  # Another agent may hold the dpkg lock (installing Slurm): wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql >&2
  PGBIN="$(find_bin)"
fi

# initdb and postgres refuse to run as root: as root, run them as the 'postgres' system user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
chmod 700 "$DIR"
DATA="$DIR/data"
if [ ! -s "$DATA/PG_VERSION" ]; then
  # One random password for the superuser and the MLflow role; kept only in this 0700 folder.
  umask 077
  head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$DIR/password"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR/password"
  as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=scram-sha-256 --pwfile="$DIR/password" \
        --encoding=UTF8 --locale=C >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
fi
PASSWORD="$(cat "$DIR/password")"

if as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  echo "postgres already running ($DATA)" >&2
else
  # Loopback only; the unix socket lives in our own folder, not in /var/run/postgresql.
  as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories='$DIR' -c max_connections=200" \
        start >&2
fi
head -n 1 "$DATA/postmaster.pid" > "$DIR/postgres.pid"

export PGPASSWORD="$PASSWORD"
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if [ -z "$("${PSQL[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" ]; then
  "${PSQL[@]}" -c "CREATE ROLE \"$ROLE\" LOGIN PASSWORD '$PASSWORD'"
fi
if [ -z "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname='$DB'")" ]; then
  "${PSQL[@]}" -c "CREATE DATABASE \"$DB\" OWNER \"$ROLE\""
fi
URI="postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
(umask 077; echo "$URI" > "$DIR/uri")
echo "PostgreSQL for MLflow: postgresql+psycopg2://$ROLE:***@127.0.0.1:$PORT/$DB (the URI: $DIR/uri)" >&2
echo "$DIR/uri"

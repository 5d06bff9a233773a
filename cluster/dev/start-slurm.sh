#!/usr/bin/env bash
# Start a real two-node Slurm on one host (munge, MariaDB, slurmdbd, slurmctld, and one slurmd per node,
# each with its own NodeName, port, spool and log) on Debian 12, as root, without systemd. Node n2 has a
# fake GPU (Gres=gpu:fake:1, feature fakegpu, its gres file /dev/null). JobRequeue=0, as on sites where
# jobs are not requeued unless submitted --requeue. Idempotent: installs what is missing, starts what is
# not running, restarts slurmctld and the slurmds when slurm.conf changed, waits for the nodes to be idle.
# Everything it starts is recorded by pid file under $ORCH_SLURM_STATE so stop-slurm.sh stops exactly
# that. docs/slurm.md says why each setting is there.
#
#   cluster/dev/start-slurm.sh            # with accounting (sacct through slurmdbd + MariaDB)
#   ORCH_SLURM_STATE=/var/tmp/x cluster/dev/start-slurm.sh
set -euo pipefail

STATE=${ORCH_SLURM_STATE:-/var/tmp/orch-dev-slurm}
CLUSTER=${ORCH_SLURM_CLUSTER:-orchdev}
CONF_DIR=/etc/slurm
log() { echo "start-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
[ -r /etc/debian_version ] || die "written for Debian (apt); this is not Debian"

# -- install ---------------------------------------------------------------------------------------
PKGS="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "installing:$missing"
  # Package scripts try to start daemons through invoke-rc.d and fail without systemd: forbid it
  # for the duration of the install (exit 101 = "action not allowed"), then restore what was there.
  had_policy=0
  if [ -e /usr/sbin/policy-rc.d ]; then had_policy=1; cp -p /usr/sbin/policy-rc.d "$STATE.policy-rc.d.bak" 2>/dev/null || { mkdir -p "$(dirname "$STATE")"; cp -p /usr/sbin/policy-rc.d "$STATE.policy-rc.d.bak"; }; fi
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  restore_policy() { if [ $had_policy = 1 ]; then mv "$STATE.policy-rc.d.bak" /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi; }
  trap restore_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >"${TMPDIR:-/tmp}/orch-slurm-apt.log" 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null 2>&1 && \
         apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >"${TMPDIR:-/tmp}/orch-slurm-apt.log" 2>&1; } \
    || { tail -20 "${TMPDIR:-/tmp}/orch-slurm-apt.log" >&2; die "apt-get install failed"; }
  restore_policy; trap - EXIT
fi

mkdir -p "$STATE"/{ctld,d,mysql,log} /run/munge /run/slurm /run/mysqld "$CONF_DIR"
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld "$STATE/mysql"
chown slurm:slurm "$STATE/ctld" 2>/dev/null || true

alive() { [ -s "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up within ${t}s (logs: $STATE/log)"
}

# -- munge -----------------------------------------------------------------------------------------
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
if ! alive munged; then
  runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
  wait_for 10 munged munge -n
  cp /run/munge/munged.pid "$STATE/munged.pid"
fi

# -- MariaDB + slurmdbd (accounting, for sacct) ----------------------------------------------------
if ! alive mariadbd; then
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
  fi
  rm -f "$STATE/mysql/mariadbd.pid"  # a stale one would be taken for the new daemon
  nohup runuser -u mysql -- /usr/sbin/mariadbd --datadir="$STATE/mysql" --bind-address=127.0.0.1 --port=3306 \
    --socket=/run/mysqld/mysqld.sock --pid-file="$STATE/mysql/mariadbd.pid" --log-error="$STATE/mysql/mariadb.err" \
    >/dev/null 2>&1 &
  wait_for 30 MariaDB mariadb --socket=/run/mysqld/mysqld.sock -e "select 1"
  # the daemon's own pid (from its pid file), not runuser's: that is what stop-slurm.sh signals
  wait_for 10 "MariaDB pid file" test -s "$STATE/mysql/mariadbd.pid"
  cp "$STATE/mysql/mariadbd.pid" "$STATE/mariadbd.pid"
  mariadb --socket=/run/mysqld/mysqld.sock -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'orchdev';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
fi

NODE_LINE=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')
# two nodes share this host's memory: 45% each (each slurmd declares the host's cores: oversubscribed on purpose)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.45}' /proc/meminfo)
NODES="n1 n2"

cat > "$CONF_DIR/slurmdbd.conf.new" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=orchdev
StorageLoc=slurm_acct_db
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/slurmdbd.daemon.pid
CONF
cat > "$CONF_DIR/slurm.conf.new" <<CONF
# written by orch cluster/dev/start-slurm.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.%n.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
MailProg=/bin/true
ReturnToService=2
MaxArraySize=1001
JobRequeue=0
GresTypes=gpu
MinJobAge=300
KillWait=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
NodeName=n1 NodeAddr=127.0.0.1 Port=17001 $NODE_LINE RealMemory=$MEM_MB State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=17002 $NODE_LINE RealMemory=$MEM_MB Gres=gpu:fake:1 Feature=fakegpu State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=n2 MaxTime=INFINITE State=UP
CONF
# the nodes' names resolve, as a real cluster's do: a multi-task job's MASTER_ADDR is its first node's name
for node in n1 n2; do
  getent hosts "$node" >/dev/null || echo "127.0.0.1 $node" >> /etc/hosts
done
# the fake GPU: a gres file that exists (Slurm binds it and sets CUDA_VISIBLE_DEVICES), no CUDA behind it
echo "NodeName=n2 Name=gpu Type=fake File=/dev/null" > "$CONF_DIR/gres.conf.new"
CHANGED=0
for f in slurm.conf slurmdbd.conf gres.conf; do
  if ! cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f"; then mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"; CHANGED=1; else rm "$CONF_DIR/$f.new"; fi
done
mkdir -p "$STATE/d/n1" "$STATE/d/n2"
if [ $CHANGED = 1 ] && alive slurmctld; then
  log "slurm.conf changed: restarting slurmctld and the slurmds"
  "$(dirname "$0")/stop-slurm.sh" $(cd "$STATE" && ls slurmd*.pid 2>/dev/null | grep -v '\.daemon\.pid$' | sed 's/\.pid$//') slurmctld
fi
chown slurm:slurm "$CONF_DIR/slurmdbd.conf"; chmod 600 "$CONF_DIR/slurmdbd.conf"
chown -R slurm:slurm "$STATE/ctld" "$STATE/log"

if ! alive slurmdbd; then
  rm -f "$STATE/slurmdbd.daemon.pid"  # a stale one would be taken for the new daemon
  /usr/sbin/slurmdbd || die "slurmdbd did not start (see $STATE/log/slurmdbd.log)"
  wait_for 20 slurmdbd test -s "$STATE/slurmdbd.daemon.pid"
  cp "$STATE/slurmdbd.daemon.pid" "$STATE/slurmdbd.pid"
  wait_for 20 "slurmdbd (port 6819)" bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
fi

# -- slurmctld + slurmd ----------------------------------------------------------------------------
if ! alive slurmctld; then
  rm -f "$STATE/slurmctld.daemon.pid"  # a stale one would be taken for the new daemon
  /usr/sbin/slurmctld || die "slurmctld did not start (see $STATE/log/slurmctld.log)"
  wait_for 20 slurmctld test -s "$STATE/slurmctld.daemon.pid"
  cp "$STATE/slurmctld.daemon.pid" "$STATE/slurmctld.pid"
fi
if alive slurmd; then "$(dirname "$0")/stop-slurm.sh" slurmd; fi  # the one-node layout's slurmd, from before
for node in $NODES; do
  if ! alive "slurmd.$node"; then
    rm -f "$STATE/slurmd.$node.daemon.pid"  # a stale one would be taken for the new daemon
    /usr/sbin/slurmd -N "$node" || die "slurmd -N $node did not start (see $STATE/log/slurmd.$node.log)"
    wait_for 20 "slurmd $node" test -s "$STATE/slurmd.$node.daemon.pid"
    cp "$STATE/slurmd.$node.daemon.pid" "$STATE/slurmd.$node.pid"
  fi
done
wait_for 30 "slurmctld (scontrol ping)" scontrol ping
scontrol update NodeName=n1,n2 State=RESUME >/dev/null 2>&1 || true
wait_for 30 "nodes n1 and n2 idle" bash -c "[ \$(sinfo -h -N -p debug -o %T | grep -cE '^(idle|mixed|allocated)') = 2 ]"
log "Slurm is up (state $STATE, cluster $CLUSTER): $(sinfo -h -N -p debug -o '%N %T %c cpus %m MB %G' | tr '\n' ';')"

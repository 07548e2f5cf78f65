#!/usr/bin/env bash
# slurm_local.sh -- a real single-node SLURM cluster on localhost, for CI and laptops.
#
# Shipped with ebt-scaling as package data; run it with `ebt-scaling slurm-local
# start|stop|status` (or `bash harness/slurm_local.sh ...` from a checkout). .ci/run
# starts it before the test suite so the `slurm`-marked integration tests run for real.
#
# Target: Debian 12 (bookworm), run as root, no systemd/init, no cgroup
# plugins. Installs slurm-wlm + munge from Debian (22.05.8), writes
# /etc/slurm/slurm.conf for one node named `hostname -s`, starts munged,
# slurmctld and slurmd as plain daemons and waits until `sinfo` shows the node
# idle. Idempotent: a re-run with everything up only re-checks (~1 s).
#
# Usage:  bash slurm_local.sh [start|stop|status]     (default: start)
# Env:
#   SLURM_ACCOUNTING=1  (default) also install MariaDB + slurmdbd so `sacct`
#                       works. submitit polls sacct for job states; without it
#                       job.state stays UNKNOWN and job.wait()/result() hang
#                       forever on jobs that die without writing a result
#                       (scancel, kill, timeout). 0 = minimal set-up (no sacct).
#   SLURM_WAIT_S=90     how long to wait for daemons / the node to come up.
#   SLURM_SMOKE=1       run `srun hostname` once the node is idle.
#
# Stop: `bash slurm_local.sh stop` kills each daemon by the PID in its
# pid file (/run/slurm/*.pid, /run/mysqld/mysqld.pid, /run/munge/munged.pid).
set -euo pipefail

ACTION="${1:-start}"
ACCOUNTING="${SLURM_ACCOUNTING:-1}"
WAIT_S="${SLURM_WAIT_S:-90}"
SMOKE="${SLURM_SMOKE:-1}"

CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
RUN_DIR=/run/slurm
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
DB_PASS=slurmdb-local-only
H="$(hostname -s)"
T_START=$(date +%s.%N)

log() { printf '[slurm-local %6.1fs] %s\n' "$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*"; }
die() { echo "[slurm-local] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# ---- pid helpers (never kill by name) --------------------------------------
readpid() { { tr -dc '0-9' <"$1"; } 2>/dev/null || true; }
# alive_pid <pid> <comm>: a live, non-zombie process with that comm
alive_pid() {
  local pid=$1 name=$2 st
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# alive <pidfile> <comm>: the pid file names such a process
alive() { alive_pid "$(readpid "$1")" "$2"; }
stop_pidfile() {
  local f=$1 name=$2 pid i
  pid=$(readpid "$f")
  if alive_pid "$pid" "$name"; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do alive_pid "$pid" "$name" || break; sleep 0.2; done
    if alive_pid "$pid" "$name"; then log "$name did not exit, SIGKILL $pid"; kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}
# wait_for <seconds> <what> <command...>
wait_for() {
  local s=$1 what=$2; shift 2
  local end=$(( $(date +%s) + s ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${s}s waiting for $what"
    sleep 0.25
  done
}

do_stop() {
  stop_pidfile $RUN_DIR/slurmd.pid slurmd
  stop_pidfile $RUN_DIR/slurmctld.pid slurmctld
  stop_pidfile $RUN_DIR/slurmdbd.pid slurmdbd
  stop_pidfile /run/mysqld/mysqld.pid mariadbd
  stop_pidfile /run/munge/munged.pid munged
  rm -f $RUN_DIR/*.sha256
  log "stopped"
}

do_status() {
  local f n
  for f in $RUN_DIR/slurmd.pid:slurmd $RUN_DIR/slurmctld.pid:slurmctld $RUN_DIR/slurmdbd.pid:slurmdbd \
           /run/mysqld/mysqld.pid:mariadbd /run/munge/munged.pid:munged; do
    n=${f#*:}; f=${f%%:*}
    if alive "$f" "$n"; then echo "$n: running, pid $(cat "$f")"; else echo "$n: not running"; fi
  done
  sinfo 2>/dev/null || true
}

case "$ACTION" in
  stop) do_stop; exit 0 ;;
  status) do_status; exit 0 ;;
  start) ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac

# ---- 1. packages -------------------------------------------------------------
PKGS=(slurm-wlm munge)
[ "$ACCOUNTING" = 1 ] && PKGS+=(slurmdbd mariadb-server)
MISSING=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  log "apt-get install ${MISSING[*]}"
  export DEBIAN_FRONTEND=noninteractive
  APT_LOG=/tmp/ebt-scaling-slurm-apt.log
  if ! apt-get install -y --no-install-recommends "${MISSING[@]}" >"$APT_LOG" 2>&1; then
    log "install failed, running apt-get update and retrying"
    apt-get update >>"$APT_LOG" 2>&1 || true
    apt-get install -y --no-install-recommends "${MISSING[@]}" >>"$APT_LOG" 2>&1 \
      || { tail -30 "$APT_LOG" >&2; die "apt-get install failed (log: $APT_LOG)"; }
  fi
  log "packages installed"
else
  log "packages already installed"
fi

# ---- 2. host name must resolve (slurm clients look it up) ---------------------
getent hosts "$H" >/dev/null 2>&1 || { log "adding $H to /etc/hosts"; echo "127.0.0.1 $H" >>/etc/hosts; }

# ---- 3. munge ----------------------------------------------------------------
mkdir -p /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || create-munge-key -f 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0600 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  log "starting munged"
  # --force: remove a stale socket left by a killed munged
  runuser -u munge -- /usr/sbin/munged --force </dev/null >>/var/log/munge/munged.stdout 2>&1
  wait_for "$WAIT_S" munged bash -c 'munge -n | unmunge'
fi

# ---- 4. slurm.conf -----------------------------------------------------------
mkdir -p /etc/slurm $RUN_DIR $STATE_DIR/slurmctld $STATE_DIR/slurmd $LOG_DIR
# Node hardware as slurmd sees it (CPUs, sockets, cores, threads); RealMemory at
# 80% of MemTotal so that a job's --mem never exceeds what slurm thinks exists.
HW="$(slurmd -C | sed -n -e '1{s/^NodeName=[^ ]* *//;s/ *RealMemory=[0-9]*//;p;}')"
MEM_MB=$(awk '/MemTotal/{printf "%d", $2/1024*0.8}' /proc/meminfo)
if [ "$ACCOUNTING" = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi
NEW_CONF="$(cat <<EOF
# Generated by ebt-scaling's slurm_local.sh -- single node on localhost, no systemd/cgroups.
ClusterName=localcluster
SlurmctldHost=${H}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets the delay before a requeued job may start again (default 120 s, min 5)
AuthInfo=cred_expire=10
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}/slurmctld
SlurmdSpoolDir=${STATE_DIR}/slurmd
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
# no cgroups: track job processes via /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# SIGTERM -> SIGKILL grace for cancelled jobs (default 30 s; submitit ignores SIGTERM)
KillWait=5
SchedulerType=sched/backfill
# schedule pending (e.g. requeued) jobs every 1-2 s instead of 30-60 s
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
${ACCT_LINES}
JobCompType=jobcomp/none
NodeName=${H} NodeAddr=127.0.0.1 ${HW} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)"
if [ ! -f $CONF ] || [ "$(cat $CONF)" != "$NEW_CONF" ]; then
  printf '%s\n' "$NEW_CONF" >$CONF
  chmod 0644 $CONF
  log "wrote $CONF"
fi
# The running daemons' config is recorded in a stamp written after they start;
# a mismatch (file changed, or an earlier run died half-way) forces a restart.
conf_sum() { sha256sum "$1" | cut -d' ' -f1; }

# ---- 5. accounting: MariaDB + slurmdbd (optional) -----------------------------
if [ "$ACCOUNTING" = 1 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || { log "initialising MariaDB data dir"; mariadb-install-db --user=mysql >/dev/null; }
  if mariadb-admin ping >/dev/null 2>&1; then
    log "mariadbd already running"
  else
    log "starting mariadbd"
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      </dev/null >>/var/log/mariadbd.log 2>&1 &
    wait_for "$WAIT_S" mariadbd mariadb-admin ping
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  NEW_DBD="$(cat <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=${LOG_DIR}/slurmdbd.log
PidFile=${RUN_DIR}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF
)"
  [ -f $DBD_CONF ] && [ "$(cat $DBD_CONF)" = "$NEW_DBD" ] || printf '%s\n' "$NEW_DBD" >$DBD_CONF
  chown root:root $DBD_CONF; chmod 0600 $DBD_CONF   # slurmdbd refuses a readable file
  if [ "$(cat $RUN_DIR/slurmdbd.conf.sha256 2>/dev/null)" != "$(conf_sum $DBD_CONF)" ]; then
    stop_pidfile $RUN_DIR/slurmdbd.pid slurmdbd
  fi
  if alive $RUN_DIR/slurmdbd.pid slurmdbd; then
    log "slurmdbd already running"
  else
    log "starting slurmdbd"
    slurmdbd </dev/null >>$LOG_DIR/slurmdbd.stdout 2>&1
    conf_sum $DBD_CONF >$RUN_DIR/slurmdbd.conf.sha256
  fi
  wait_for "$WAIT_S" "slurmdbd on port 6819 (see $LOG_DIR/slurmdbd.log)" bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
fi

# ---- 6. slurmctld + slurmd ---------------------------------------------------
if [ "$(cat $RUN_DIR/slurm.conf.sha256 2>/dev/null)" != "$(conf_sum $CONF)" ]; then
  stop_pidfile $RUN_DIR/slurmd.pid slurmd
  stop_pidfile $RUN_DIR/slurmctld.pid slurmctld
fi
if alive $RUN_DIR/slurmctld.pid slurmctld; then
  log "slurmctld already running"
else
  log "starting slurmctld"
  slurmctld </dev/null >>$LOG_DIR/slurmctld.stdout 2>&1
fi
wait_for "$WAIT_S" "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
if alive $RUN_DIR/slurmd.pid slurmd; then
  log "slurmd already running"
else
  log "starting slurmd"
  slurmd </dev/null >>$LOG_DIR/slurmd.stdout 2>&1
fi
conf_sum $CONF >$RUN_DIR/slurm.conf.sha256

# ---- 7. wait for the node ----------------------------------------------------
END=$(( $(date +%s) + WAIT_S ))
while :; do
  ST="$(sinfo -h -n "$H" -o %T 2>/dev/null | head -1 || true)"
  case "$ST" in
    idle|mixed|allocated|completing) break ;;
    down|down\*|drain*|drained*|fail*) scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  [ "$(date +%s)" -lt "$END" ] || { tail -20 $LOG_DIR/slurmctld.log $LOG_DIR/slurmd.log >&2; die "node $H is '$ST' after ${WAIT_S}s"; }
  sleep 0.25
done
log "node $H is $ST"

if [ "$SMOKE" = 1 ] && [ "$ST" = idle ]; then
  OUT="$(timeout 60 srun -N1 -n1 -t 1 hostname)" || die "smoke test 'srun hostname' failed"
  log "srun hostname -> $OUT"
fi
if [ "$ACCOUNTING" = 1 ]; then
  # slurmctld registers the cluster in slurmdbd by itself; make sure sacct answers
  wait_for "$WAIT_S" "sacct" sacct -n -X -o JobID
fi

sinfo
log "ready. pids: munged=$(cat /run/munge/munged.pid) slurmctld=$(cat $RUN_DIR/slurmctld.pid) slurmd=$(cat $RUN_DIR/slurmd.pid)$( [ "$ACCOUNTING" = 1 ] && echo " slurmdbd=$(cat $RUN_DIR/slurmdbd.pid) mariadbd=$(cat /run/mysqld/mysqld.pid)")"
log "stop with: bash $0 stop"

#!/usr/bin/env bash
# Bring up / tear down a real one-node SLURM cluster (with accounting) on this machine.
#
#   tests/slurm/cluster.sh start    # install Debian packages if needed, configure, start, wait idle
#   tests/slurm/cluster.sh status   # exit 0 when every daemon runs and the node is usable
#   tests/slurm/cluster.sh stop     # cancel jobs, stop daemons in reverse order (no-op when down)
#
# Needs root and Debian/Ubuntu packages (munge, slurm 22.05+, slurmdbd, mariadb). No systemd:
# every daemon is started here, detached, with stdin/stdout/stderr redirected and inherited file
# descriptors closed, so none of them holds a CI runner's pipe open.
# Facts behind the choices: /work/shared/notes/slurm-on-one-machine.md (as measured on CI).
#
# Environment knobs: ATSS_SLURM_PARTITION (debug), ATSS_SLURM_CLUSTER (atss),
# ATSS_SLURM_TIMEOUT seconds per wait (90), ATSS_SLURM_LOG_DIR (/var/log/slurm-atss).
set -euo pipefail

PARTITION=${ATSS_SLURM_PARTITION:-debug}
CLUSTER=${ATSS_SLURM_CLUSTER:-atss}
TIMEOUT=${ATSS_SLURM_TIMEOUT:-90}
LOG_DIR=${ATSS_SLURM_LOG_DIR:-/var/log/slurm-atss}
RUN_DIR=/run/slurm-atss
STATE_DIR=/var/lib/slurm-atss
CONF_DIR=/etc/slurm
DB_SOCKET=/run/mysqld/mysqld.sock
DB_PID=/run/mysqld/mysqld.pid
MUNGE_PID=/run/munge/munged.pid
HOST=$(hostname -s)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
BINARIES=(munged mungekey slurmctld slurmd slurmdbd sinfo sacctmgr scontrol mariadbd mariadb)
# name:pidfile, in start order; stop walks it backwards.
DAEMONS=(
  "munged:$MUNGE_PID"
  "mariadbd:$DB_PID"
  "slurmdbd:$RUN_DIR/slurmdbd.pid"
  "slurmctld:$RUN_DIR/slurmctld.pid"
  "slurmd:$RUN_DIR/slurmd.pid"
)
T0=$SECONDS

say() { printf 'cluster.sh: %s\n' "$*"; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

# die with the tail of the given log files (a daemon did not come up).
die_with_logs() {
  local reason=$1 f
  shift
  for f in "$@"; do
    [ -s "$f" ] && { printf -- '--- tail %s\n' "$f" >&2; tail -n 15 "$f" >&2; }
  done
  die "$reason (logs in $LOG_DIR)"
}

# pid of a running daemon from its pid file ("" if not running); checks the process name so a
# stale pid file whose pid was reused is never trusted.
daemon_pid() {
  local name=$1 pidfile=$2 pid
  [ -r "$pidfile" ] || return 0
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
  return 0
}

# Run a command detached: own session, std streams to /dev/null and the log, no other fds.
spawn() {
  local log=$1
  shift
  (
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec setsid -f "$@" </dev/null >>"$log" 2>&1
  )
}

# wait_for <command...>: poll every 0.5 s until the command succeeds; fails after TIMEOUT s.
wait_for() {
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

node_state() { timeout 10 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1; }
node_usable() { case "$(node_state)" in idle | mixed | allocated | completing) return 0 ;; esac; return 1; }
accounting_up() { timeout 10 sacctmgr -n list cluster >/dev/null 2>&1; }

all_running() {
  local entry
  for entry in "${DAEMONS[@]}"; do
    [ -n "$(daemon_pid "${entry%%:*}" "${entry#*:}")" ] || return 1
  done
}

# ---------------------------------------------------------------- install
install_packages() {
  local missing=() b
  for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is not available"
  say "installing ${PACKAGES[*]} (missing: ${missing[*]}; log $LOG_DIR/apt.log)"
  local policy=/usr/sbin/policy-rc.d backup=""
  if [ -e $policy ]; then backup=$policy.atss-bak; mv $policy "$backup"; fi
  printf '#!/bin/sh\nexit 101\n' >$policy
  chmod 755 $policy
  # shellcheck disable=SC2064
  trap "rm -f $policy; [ -n '$backup' ] && mv '$backup' $policy; true" EXIT
  local ok=0
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}" >>"$LOG_DIR/apt.log" 2>&1; then
    apt-get update >>"$LOG_DIR/apt.log" 2>&1 &&
      apt-get install -y --no-install-recommends "${PACKAGES[@]}" >>"$LOG_DIR/apt.log" 2>&1 || ok=1
  fi
  rm -f $policy
  [ -n "$backup" ] && mv "$backup" $policy
  trap - EXIT
  [ $ok -eq 0 ] || die_with_logs "apt-get install ${PACKAGES[*]} failed" "$LOG_DIR/apt.log"
}

# ---------------------------------------------------------------- configuration
write_configs() {
  mkdir -p "$CONF_DIR"
  cat >"$CONF_DIR/cgroup.conf" <<EOF
# written by atss-bench tests/slurm/cluster.sh
# slurmd 22.05 always loads a cgroup plugin; v1 starts without a usable cgroup tree.
CgroupPlugin=cgroup/v1
EOF
  # Hardware line as slurmd sees it, so the node is never drained for a config mismatch.
  local node_line
  node_line=$(slurmd -C 2>/dev/null || true)
  node_line=$(grep -m1 '^NodeName=' <<<"$node_line") || die "slurmd -C printed no NodeName line"
  cat >"$CONF_DIR/slurm.conf" <<EOF
# written by atss-bench tests/slurm/cluster.sh: a one-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
# cores are the only consumable: memory requests are checked against RealMemory, not reserved
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
KillWait=5
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  local pass=""
  [ -r "$CONF_DIR/slurmdbd.conf" ] && pass=$(sed -n 's/^StoragePass=//p' "$CONF_DIR/slurmdbd.conf")
  [ -n "$pass" ] || pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  (
    umask 077
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# written by atss-bench tests/slurm/cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
  )
  chown slurm:slurm "$CONF_DIR/slurmdbd.conf"
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  DB_PASS=$pass
}

prepare_dirs() {
  mkdir -p "$RUN_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" /run/munge /run/mysqld
  chown slurm:slurm "$RUN_DIR" "$STATE_DIR/slurmctld"
  chown munge:munge /run/munge
  chown mysql:mysql /run/mysqld
  local f
  for f in slurmctld slurmdbd slurmd munged mariadb; do touch "$LOG_DIR/$f.log"; done
  chown slurm:slurm "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmdbd.log"
  chown munge:munge "$LOG_DIR/munged.log"
  chown mysql:mysql "$LOG_DIR/mariadb.log"
  chmod 640 "$LOG_DIR/munged.log"
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -k /etc/munge/munge.key >>"$LOG_DIR/munged.log" 2>&1 || die "mungekey -c failed"
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 600 /etc/munge/munge.key
}

# ---------------------------------------------------------------- daemons
start_munged() {
  [ -n "$(daemon_pid munged $MUNGE_PID)" ] && return 0
  spawn "$LOG_DIR/munged.log" runuser -u munge -- munged --pid-file=$MUNGE_PID \
    --log-file="$LOG_DIR/munged.log"
  wait_for munge -n ||
    die_with_logs "munged did not answer within ${TIMEOUT}s" "$LOG_DIR/munged.log"
}

start_mariadb() {
  if [ -z "$(daemon_pid mariadbd $DB_PID)" ]; then
    if [ ! -d /var/lib/mysql/mysql ]; then
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
        >>"$LOG_DIR/mariadb.log" 2>&1 ||
        die_with_logs "mariadb-install-db failed" "$LOG_DIR/mariadb.log"
    fi
    spawn "$LOG_DIR/mariadb.log" mariadbd --user=mysql --skip-networking --datadir=/var/lib/mysql \
      --socket=$DB_SOCKET --pid-file=$DB_PID --log-error="$LOG_DIR/mariadb.log"
    wait_for mariadb-admin --socket=$DB_SOCKET ping ||
      die_with_logs "mariadbd did not answer within ${TIMEOUT}s" "$LOG_DIR/mariadb.log"
  fi
  mariadb --socket=$DB_SOCKET -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" ||
    die "could not create the database user slurm"
}

start_slurmdbd() {
  if [ -z "$(daemon_pid slurmdbd "$RUN_DIR/slurmdbd.pid")" ]; then
    spawn "$LOG_DIR/slurmdbd.log" slurmdbd
  fi
  wait_for accounting_up ||
    die_with_logs "slurmdbd did not answer sacctmgr within ${TIMEOUT}s" "$LOG_DIR/slurmdbd.log"
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not register cluster $CLUSTER"
  fi
}

start_slurmctld() {
  [ -n "$(daemon_pid slurmctld "$RUN_DIR/slurmctld.pid")" ] && return 0
  spawn "$LOG_DIR/slurmctld.log" slurmctld -i
  wait_for timeout 10 scontrol ping ||
    die_with_logs "slurmctld did not answer within ${TIMEOUT}s" "$LOG_DIR/slurmctld.log"
}

start_slurmd() {
  [ -n "$(daemon_pid slurmd "$RUN_DIR/slurmd.pid")" ] && return 0
  spawn "$LOG_DIR/slurmd.log" slurmd
}

wait_node_ready() {
  local deadline=$((SECONDS + TIMEOUT)) state resumed=0
  while :; do
    state=$(node_state)
    case "$state" in
      idle | mixed | allocated | completing) return 0 ;;
      *down* | *drain* | *fail*)
        if [ $resumed -eq 0 ] && [ -n "$(daemon_pid slurmd "$RUN_DIR/slurmd.pid")" ]; then
          scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
          resumed=1
        fi
        ;;
    esac
    [ $SECONDS -lt $deadline ] ||
      die_with_logs "node $HOST not idle after ${TIMEOUT}s (state: '${state:-none}')" \
        "$LOG_DIR/slurmd.log" "$LOG_DIR/slurmctld.log"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- commands
cmd_start() {
  export PATH=$PATH:/usr/sbin:/sbin
  if all_running && node_usable && accounting_up; then
    say "already running (partition $PARTITION, node $HOST, logs in $LOG_DIR)"
    return 0
  fi
  mkdir -p "$LOG_DIR"
  install_packages
  write_configs
  prepare_dirs
  start_munged
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  wait_node_ready
  say "up in $((SECONDS - T0))s: cluster $CLUSTER, partition $PARTITION, node $HOST" \
    "($(sinfo -h -n "$HOST" -o '%c CPUs, %m MB')); logs in $LOG_DIR"
}

# stop_daemons name:pidfile...: SIGTERM each, in the order given, then wait for all to exit.
stop_daemons() {
  local entry pid pids=() names=() i j
  for entry in "$@"; do
    pid=$(daemon_pid "${entry%%:*}" "${entry#*:}")
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    names+=("${entry%%:*}")
  done
  for ((j = 0; j < ${#pids[@]}; j++)); do
    for ((i = 0; i < 300; i++)); do
      [ -d "/proc/${pids[$j]}" ] || break
      sleep 0.1
    done
    if [ -d "/proc/${pids[$j]}" ]; then
      say "${names[$j]} (${pids[$j]}) ignored SIGTERM for 30s: SIGKILL"
      kill -KILL "${pids[$j]}" 2>/dev/null || true
    fi
  done
  for entry in "$@"; do rm -f "${entry#*:}"; done
}

cmd_stop() {
  export PATH=$PATH:/usr/sbin:/sbin
  local entry i any=0
  for entry in "${DAEMONS[@]}"; do
    [ -n "$(daemon_pid "${entry%%:*}" "${entry#*:}")" ] && any=1
  done
  if [ $any -eq 0 ]; then
    say "not running"
    return 0
  fi
  if [ -n "$(daemon_pid slurmctld "$RUN_DIR/slurmctld.pid")" ]; then
    timeout 10 scancel --partition="$PARTITION" >/dev/null 2>&1 || true
    for ((i = 0; i < 40; i++)); do
      [ -z "$(timeout 10 squeue -h -p "$PARTITION" -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  # Reverse start order; daemons with nothing left depending on them stop together.
  stop_daemons "${DAEMONS[4]}" "${DAEMONS[3]}" # slurmd, slurmctld
  stop_daemons "${DAEMONS[2]}"                 # slurmdbd (flushes accounting to mariadb)
  stop_daemons "${DAEMONS[1]}" "${DAEMONS[0]}" # mariadbd, munged
  say "stopped in $((SECONDS - T0))s"
}

cmd_status() {
  export PATH=$PATH:/usr/sbin:/sbin
  local entry pid ok=0
  for entry in "${DAEMONS[@]}"; do
    pid=$(daemon_pid "${entry%%:*}" "${entry#*:}")
    printf '%-10s %s\n' "${entry%%:*}" "$([ -n "$pid" ] && echo "running (pid $pid)" || echo stopped)"
    [ -n "$pid" ] || ok=1
  done
  if [ $ok -eq 0 ]; then
    printf '%-10s %s\n' node "$HOST: $(node_state || true)"
    node_usable && accounting_up || ok=1
  fi
  printf '%-10s %s\n' logs "$LOG_DIR"
  return $ok
}

main() {
  case "${1:-}" in
    start | stop | status) ;;
    *) die "usage: $0 start|stop|status" ;;
  esac
  [ "$(id -u)" -eq 0 ] || die "must run as root (starts system daemons)"
  "cmd_$1"
}

main "$@"

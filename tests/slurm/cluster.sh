#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the tests marked `slurm` (tests/test_slurm.py).
#
#   bash tests/slurm/cluster.sh up      install what is missing, configure, start the daemons, wait until
#                                       the node is idle and accounting answers (idempotent: running
#                                       daemons are left alone)
#   bash tests/slurm/cluster.sh status  daemon states and sinfo; exit status 0 only if the cluster is usable
#   bash tests/slurm/cluster.sh down    stop the daemons this script started
#
# Run as root (CI does). It needs no systemd: each daemon is started directly.
#
# Why slurmdbd and MariaDB, not just slurmctld and slurmd: submitit reads job states with `sacct`, and
# sacct only answers when accounting goes to slurmdbd (which stores it in MariaDB). Without it every job
# submitit watches stays UNKNOWN and `job.results()` never sees it finish.
#
# Where things are (all written by this script):
#   /etc/slurm/slurm.conf, /etc/slurm/slurmdbd.conf (mode 600, owned by slurm: holds the DB password)
#   /var/spool/slurm/ctld (slurmctld state), /var/spool/slurm/d (slurmd spool)
#   /var/log/slurm/*.log (daemon logs), /run/slurm/*.pid, /run/slurm/started/* (what `down` stops)
#   /etc/munge/munge.key (created if absent), MariaDB database slurm_acct_db with user slurm@localhost
#
# Choices for a 2-core test machine without cgroups: proctrack/linuxproc and task/none (no cgroup
# plugins), jobacct_gather/linux with OverMemoryKill (memory limits enforced by polling, not by the
# kernel), JobRequeue=1 and AuthInfo=cred_expire=10 (a requeued job may start again after 10 s instead
# of the default 120 s), scheduling passes every 2-5 s (a pending job starts within seconds of being
# eligible), MinJobAge=30 (finished jobs leave slurmctld quickly; sacct keeps them).
set -euo pipefail

CLUSTER=${SLURM_TEST_CLUSTER:-harness}
PARTITION=debug
ETC=/etc/slurm
SPOOL=/var/spool/slurm
LOGS=/var/log/slurm
RUN=/run/slurm
STARTED=$RUN/started
DB=slurm_acct_db
WAIT_S=60

export SLURM_CONF=$ETC/slurm.conf

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
running() { pgrep -x "$1" >/dev/null 2>&1; }

install_missing() {
    local missing=()
    command -v sbatch >/dev/null || missing+=(slurm-wlm)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_if_changed() { # write_if_changed PATH MODE OWNER < content; prints "changed" if it wrote
    local path=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
    else
        install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$path"
        rm -f "$tmp"
        echo changed
    fi
}

start_munge() {
    install -d -m 700 -o munge -g munge /etc/munge /var/lib/munge /var/log/munge
    install -d -m 755 -o munge -g munge /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    if running munged; then return 0; fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    echo /run/munge/munged.pid >"$STARTED/munged"
}

start_mariadb() {
    if ! running mariadbd; then
        log "starting mariadb"
        install -d -m 755 -o mysql -g mysql /run/mysqld
        # mariadbd does not daemonize itself: setsid detaches it from this script's session
        setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
            >>"$LOGS/mariadb.log" 2>&1 </dev/null &
        echo /run/mysqld/mysqld.pid >"$STARTED/mariadbd"
    fi
    local i
    for ((i = 0; i < 30; i++)); do
        mariadb -u root -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
    mariadb -u root -e 'SELECT 1' >/dev/null || die "mariadb does not answer (see $LOGS/mariadb.log)"
}

db_password() { # the one in slurmdbd.conf if there is one, so a second `up` keeps it
    local pass=""
    [[ -f $ETC/slurmdbd.conf ]] && pass=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
    [[ -n $pass ]] || pass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    echo "$pass"
}

setup_database() {
    local pass=$1
    mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON $DB.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
}

write_configs() {
    local host=$1 pass=$2 cpus mem_mb margin_mb changed=""
    cpus=$(nproc)
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    margin_mb=$((mem_mb / 20 > 1024 ? mem_mb / 20 : 1024)) # for the OS and the daemons
    install -d -m 755 $ETC $LOGS
    install -d -m 755 -o slurm -g slurm $SPOOL $SPOOL/ctld $LOGS "$RUN"
    install -d -m 755 $SPOOL/d
    install -d -m 700 "$STARTED"
    [[ -z $(write_if_changed $ETC/slurmdbd.conf 600 slurm:slurm <<EOF
# Written by tests/slurm/cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB
StorageUser=slurm
StoragePass=$pass
EOF
    ) ]] || changed+=" dbd"
    [[ -z $(write_if_changed $ETC/slurm.conf 644 root:root <<EOF
# Written by tests/slurm/cluster.sh: a single-node test cluster (see the comment at the top of that script)
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=30
JobRequeue=1
KillWait=10
SlurmdTimeout=60
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((mem_mb - margin_mb)) State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    ) ]] || changed+=" conf"
    echo "$changed"
}

start_slurmdbd() {
    if ! running slurmdbd; then
        log "starting slurmdbd"
        /usr/sbin/slurmdbd
        echo "$RUN/slurmdbd.pid" >"$STARTED/slurmdbd"
    fi
    local i
    for ((i = 0; i < 30; i++)); do
        sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "slurmdbd does not answer (see $LOGS/slurmdbd.log)"
}

register_cluster() {
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in accounting"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurm() {
    local changed=$1
    if running slurmctld; then
        if [[ $changed == *conf* ]]; then
            log "slurm.conf changed: scontrol reconfigure"
            scontrol reconfigure
        fi
    else
        log "starting slurmctld"
        /usr/sbin/slurmctld
        echo "$RUN/slurmctld.pid" >"$STARTED/slurmctld"
    fi
    local i
    for ((i = 0; i < 30; i++)); do
        scontrol ping 2>/dev/null | grep -q 'is UP' && break
        sleep 1
    done
    if ! running slurmd; then
        log "starting slurmd"
        /usr/sbin/slurmd
        echo "$RUN/slurmd.pid" >"$STARTED/slurmd"
    fi
}

wait_ready() {
    local host=$1 deadline=$((SECONDS + WAIT_S)) state
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1 || true)
        if [[ $state == idle* || $state == mix* || $state == alloc* ]] && sacct -n -X -S now >/dev/null 2>&1
        then
            return 0
        fi
        # a node left down or drained by an earlier run (ReturnToService=2 covers only unexpected reboots)
        if [[ $state == down* || $state == drain* ]]; then
            scontrol update nodename="$host" state=resume 2>/dev/null || true
        fi
        sleep 1
    done
    sinfo -N -l >&2 || true
    die "the node is not idle after ${WAIT_S}s (state '${state:-?}'; see $LOGS/)"
}

cmd_up() {
    [[ $(id -u) == 0 ]] || die "run as root"
    local start=$SECONDS host pass changed
    host=$(hostname -s)
    install_missing
    install -d -m 755 $LOGS
    install -d -m 755 "$RUN"
    install -d -m 700 "$STARTED"
    start_munge
    start_mariadb
    pass=$(db_password)
    setup_database "$pass"
    changed=$(write_configs "$host" "$pass")
    if [[ $changed == *dbd* ]] && running slurmdbd; then
        log "slurmdbd.conf changed: restarting slurmdbd"
        stop slurmdbd "$RUN/slurmdbd.pid"
    fi
    start_slurmdbd
    register_cluster
    start_slurm "$changed"
    wait_ready "$host"
    echo "cluster '$CLUSTER' up on $host ($(nproc) CPUs) in $((SECONDS - start)) s"
    sinfo
}

cmd_status() {
    local name ok=0 host
    host=$(hostname -s)
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if running "$name"; then
            printf '%-10s running (pid %s)\n' "$name" "$(pgrep -x "$name" | tr '\n' ' ' | sed 's/ $//')"
        else
            printf '%-10s stopped\n' "$name"
            ok=1
        fi
    done
    if command -v sinfo >/dev/null && [[ -f $SLURM_CONF ]]; then
        sinfo 2>&1 || ok=1
        local state
        state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1 || true)
        [[ $state == idle* || $state == mix* || $state == alloc* ]] || ok=1
    else
        echo "slurm is not installed or not configured"
        ok=1
    fi
    return $ok
}

stop() { # stop NAME PIDFILE: signal the pid in PIDFILE, wait up to 20 s
    local name=$1 pidfile=$2 pid i
    running "$name" || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ -n $pid ]] || pid=$(pgrep -x -o "$name" || true)
    [[ -n $pid ]] || return 0
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        running "$name" || return 0
        sleep 0.2
    done
    log "$name still running after 20 s"
}

cmd_down() {
    [[ $(id -u) == 0 ]] || die "run as root"
    local name
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        [[ -e $STARTED/$name ]] || continue
        stop "$name" "$(cat "$STARTED/$name")"
        rm -f "$STARTED/$name"
    done
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# A real Slurm cluster on this machine, for the tests marked `slurm` (tests/test_slurm.py and
# tests/test_slurm_multinode.py).
#
#   bash tests/slurm/cluster.sh up      install what is missing, configure, start the daemons, wait until
#                                       the node is idle and accounting answers (idempotent: running
#                                       daemons are left alone): one node, named as this host, in the
#                                       default partition `debug`
#   bash tests/slurm/cluster.sh up2     the same, plus two nodes node1 and node2 in the partition `multi`
#                                       (for multi-node jobs; `debug` is unchanged), each a slurmd in its own
#                                       network, mount and hostname namespaces (idempotent too; `up` removes
#                                       them again)
#   bash tests/slurm/cluster.sh status  daemon states and sinfo; exit status 0 only if the cluster is usable
#   bash tests/slurm/cluster.sh down    stop the daemons this script started, remove the namespaces
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
#
# The two extra nodes of `up2`. Debian's slurmd is built without --enable-multiple-slurmd: `slurmd -N NAME`
# names the node, but every slurmd on a host shares SlurmdPidFile (a second slurmd kills the process named
# in it at start), SlurmdSpoolDir and port 6818 on all addresses. So each extra slurmd runs in its own
# namespaces, as on a machine of its own: a network namespace slurm-nodeN whose veth is a port of the
# bridge slurmbr0 (this host is 10.200.0.254 on it, nodeN is 10.200.0.N), a private mount namespace in
# which /run/slurm, the spool directory and /etc/hosts are its own (under /run/slurm-nodes/nodeN), and a
# hostname namespace in which its hostname is nodeN. The filesystem is otherwise shared (the munge socket,
# the code, the tests' run folders). In there, this host's name resolves to its bridge address, so that
# srun reaches slurmctld and sacct reaches slurmdbd (AccountingStorageHost is this host's name then, not
# localhost), and nodeN resolves to its own address, so that torch's rendezvous and gloo, which bind the
# address of the hostname, are reachable from the other node. Each node has 1 CPU and half the memory the
# `debug` node has: both share this machine's CPUs and memory with it.
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
MULTI_PARTITION=multi
MULTI_NODES=(node1 node2)
BRIDGE=slurmbr0
SUBNET=10.200.0
NODES_RUN=/run/slurm-nodes # nodeN's /run/slurm, spool directory and /etc/hosts

export SLURM_CONF=$ETC/slurm.conf

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
running() { pgrep -x "$1" >/dev/null 2>&1; }
# the pid of the live slurmd named in a pid file: there may be several slurmds (`up2`), so not by name
slurmd_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null || true)
    if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == slurmd ]]; then echo "$pid"; fi
}

install_missing() { # install_missing MULTI(0|1)
    local missing=()
    (($1)) && ! command -v ip >/dev/null && missing+=(iproute2) # the namespaces of `up2`
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

write_configs() { # write_configs HOST PASSWORD MULTI(0|1): prints what changed (dbd, conf, nodes)
    local host=$1 pass=$2 multi=$3 cpus mem_mb margin_mb changed="" what="a single-node test cluster"
    local dbd_host=localhost extra="" nodes_before="" node i
    cpus=$(nproc)
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    margin_mb=$((mem_mb / 20 > 1024 ? mem_mb / 20 : 1024)) # for the OS and the daemons
    if ((multi)); then
        what="one node, and two in namespaces for multi-node jobs"
        dbd_host=$host # localhost would be the node's own in its namespace
        for i in "${!MULTI_NODES[@]}"; do
            node=${MULTI_NODES[i]}
            extra+="NodeName=$node NodeHostname=$node NodeAddr=$SUBNET.$((i + 1)) CPUs=1"
            extra+=" RealMemory=$(((mem_mb - margin_mb) / 2)) State=UNKNOWN"$'\n'
        done
        extra+="PartitionName=$MULTI_PARTITION Nodes=$(IFS=,; echo "${MULTI_NODES[*]}") MaxTime=INFINITE"
        extra+=" State=UP OverSubscribe=NO"$'\n'
    fi
    [[ -f $ETC/slurm.conf ]] && nodes_before=$(grep '^NodeName=' $ETC/slurm.conf || true)
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
    [[ -z $({
        cat <<EOF
# Written by tests/slurm/cluster.sh: $what (see the comment at the top of that script)
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
AccountingStorageHost=$dbd_host
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
        printf '%s' "$extra"
    } | write_if_changed $ETC/slurm.conf 644 root:root) ]] || changed+=" conf"
    # nodes added or removed: slurmctld and the slurmds must restart (`scontrol reconfigure` does not do it)
    [[ $(grep '^NodeName=' $ETC/slurm.conf) == "$nodes_before" ]] || changed+=" nodes"
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
    if running slurmctld && [[ $changed == *nodes* ]]; then
        log "nodes added or removed: restarting slurmctld and slurmd (running jobs are kept)"
        stop slurmctld "$RUN/slurmctld.pid"
        stop slurmd "$RUN/slurmd.pid"
    fi
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
    if [[ -z $(slurmd_pid "$RUN/slurmd.pid") ]]; then
        log "starting slurmd"
        /usr/sbin/slurmd
        echo "$RUN/slurmd.pid" >"$STARTED/slurmd"
    fi
}

netns_of() { echo "slurm-$1"; }

setup_network() { # the bridge, and each extra node's network namespace with its veth on the bridge
    local i node ns veth
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge ||
        die "cannot create the bridge $BRIDGE (root in a container without CAP_NET_ADMIN?)"
    ip addr replace "$SUBNET.254/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in "${!MULTI_NODES[@]}"; do
        node=${MULTI_NODES[i]}
        ns=$(netns_of "$node")
        veth=v$node
        if ! ip -n "$ns" link show lo >/dev/null 2>&1; then # absent, or a name left from before a reboot
            ip netns del "$ns" 2>/dev/null || true
            ip link del "$veth" 2>/dev/null || true # its peer was in a namespace that is gone
            ip netns add "$ns" || die "cannot create the network namespace $ns"
        fi
        ip link show "$veth" >/dev/null 2>&1 || ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr replace "$SUBNET.$((i + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
    touch "$STARTED/network"
}

remove_network() {
    local node
    [[ -e $STARTED/network ]] || return 0
    for node in "${MULTI_NODES[@]}"; do
        ip link del "v$node" 2>/dev/null || true
        ip netns del "$(netns_of "$node")" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$STARTED/network"
}

start_nodes() { # a slurmd per extra node, in its namespaces (see the top of this script)
    local host=$1 node dir i hosts
    hosts="127.0.0.1 localhost"$'\n'"$SUBNET.254 $host"$'\n'
    for i in "${!MULTI_NODES[@]}"; do hosts+="$SUBNET.$((i + 1)) ${MULTI_NODES[i]}"$'\n'; done
    for node in "${MULTI_NODES[@]}"; do
        dir=$NODES_RUN/$node
        install -d -m 755 -o slurm -g slurm "$dir" "$dir/run"
        install -d -m 755 "$dir/spool"
        printf '%s' "$hosts" | write_if_changed "$dir/hosts" 644 root:root >/dev/null
        ip netns exec "$(netns_of "$node")" timeout 5 bash -c "</dev/tcp/$SUBNET.254/6817" 2>/dev/null ||
            die "slurmctld ($SUBNET.254:6817) cannot be reached from the namespace of $node"
        [[ -z $(slurmd_pid "$dir/run/slurmd.pid") ]] || continue
        log "starting slurmd $node in the namespaces $(netns_of "$node")"
        # slurmd daemonizes: it stays in the namespaces it starts in. Not `ip netns exec`: it mounts a /sys
        # without /sys/fs/cgroup, and slurmd does not start without its cgroup plugin.
        nsenter --net="/run/netns/$(netns_of "$node")" unshare --mount --propagation private --uts bash -c '
            hostname "$1"
            mount --bind "$2/run" /run/slurm
            mount --bind "$2/spool" "$3"
            mount --bind "$2/hosts" /etc/hosts
            exec /usr/sbin/slurmd -N "$1" -L "$4"' _ "$node" "$dir" "$SPOOL/d" "$LOGS/slurmd-$node.log"
        echo "$dir/run/slurmd.pid" >"$STARTED/slurmd-$node"
    done
}

stop_nodes() {
    local node
    for node in "${MULTI_NODES[@]}"; do
        [[ -e $STARTED/slurmd-$node ]] || continue
        stop slurmd "$(cat "$STARTED/slurmd-$node")"
        rm -f "$STARTED/slurmd-$node"
    done
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

cmd_up() { # cmd_up MULTI(0|1)
    [[ $(id -u) == 0 ]] || die "run as root"
    local multi=$1 start=$SECONDS host pass changed node
    host=$(hostname -s)
    install_missing "$multi"
    install -d -m 755 $LOGS
    install -d -m 755 "$RUN"
    install -d -m 700 "$STARTED"
    if ((multi)); then setup_network; fi # first: where namespaces cannot be made, nothing else has changed
    start_munge
    start_mariadb
    pass=$(db_password)
    setup_database "$pass"
    changed=$(write_configs "$host" "$pass" "$multi")
    if [[ $changed == *dbd* ]] && running slurmdbd; then
        log "slurmdbd.conf changed: restarting slurmdbd"
        stop slurmdbd "$RUN/slurmdbd.pid"
    fi
    start_slurmdbd
    register_cluster
    if [[ $changed == *nodes* ]]; then stop_nodes; fi # they restart with slurmctld
    start_slurm "$changed"
    if ((multi)); then
        start_nodes "$host"
    else
        stop_nodes
        remove_network
    fi
    wait_ready "$host"
    if ((multi)); then
        for node in "${MULTI_NODES[@]}"; do wait_ready "$node"; done
        echo "cluster '$CLUSTER' up on $host ($(nproc) CPUs), with ${MULTI_NODES[*]} in partition" \
            "$MULTI_PARTITION, in $((SECONDS - start)) s"
    else
        echo "cluster '$CLUSTER' up on $host ($(nproc) CPUs) in $((SECONDS - start)) s"
    fi
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
        local state node nodes=("$host")
        grep -q "^PartitionName=$MULTI_PARTITION " "$SLURM_CONF" && nodes+=("${MULTI_NODES[@]}")
        for node in "${nodes[@]}"; do
            state=$(sinfo -h -n "$node" -o %t 2>/dev/null | head -n 1 || true)
            [[ $state == idle* || $state == mix* || $state == alloc* ]] || ok=1
        done
    else
        echo "slurm is not installed or not configured"
        ok=1
    fi
    return $ok
}

stop() { # stop NAME PIDFILE: signal the pid in PIDFILE (without one, the oldest NAME but for slurmd, of
    # which there may be several), wait up to 20 s for it to end
    local name=$1 pidfile=$2 pid i
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [[ -n $pid || $name == slurmd ]] || pid=$(pgrep -x -o "$name" || true)
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.2
    done
    log "$name still running after 20 s"
}

cmd_down() {
    [[ $(id -u) == 0 ]] || die "run as root"
    local name
    stop_nodes
    remove_network
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        [[ -e $STARTED/$name ]] || continue
        stop "$name" "$(cat "$STARTED/$name")"
        rm -f "$STARTED/$name"
    done
}

case ${1:-} in
up) cmd_up 0 ;;
up2) cmd_up 1 ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|up2|down|status" >&2
    exit 2
    ;;
esac

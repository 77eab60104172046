#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests (and for trying `snakemake --profile slurm`
# by hand): munged, MariaDB, slurmdbd, slurmctld and slurmd on this machine, one partition,
# one account, and fake GPUs (a generic resource backed by character devices).
#
#   tools/slurm/cluster.sh start    start what is not running yet, wait until the node is idle
#   tools/slurm/cluster.sh status   what runs; exit 0 when the cluster takes jobs
#   tools/slurm/cluster.sh stop     cancel its jobs, stop every daemon it started (by PID)
#   tools/slurm/cluster.sh env      the export line that points SLURM's commands at it
#
# Installs nothing: run tools/system-deps.sh first (root, Debian: slurmctld slurmd
# slurm-client slurmdbd munge mariadb-server). Needs root, not systemd. Configuration, data,
# logs and pidfiles live in one state folder, $CILAUDIO_SLURM_DIR (default
# /tmp/cilaudio-slurm); the config files are rendered from the *.in templates beside this
# script. SLURM's commands find the cluster through SLURM_CONF=$CILAUDIO_SLURM_DIR/etc/slurm.conf
# (`eval "$(tools/slurm/cluster.sh env)"`); when /etc/slurm/slurm.conf does not exist, start
# also links it there, and stop removes that link. start and stop are idempotent; stop only
# stops daemons whose pidfile is in the state folder (a munged that already ran is left alone).
#
# Settings (environment): CILAUDIO_SLURM_DIR, CILAUDIO_SLURM_PARTITION (gpu),
# CILAUDIO_SLURM_ACCOUNT (cilaudio), CILAUDIO_SLURM_PORT (6817; slurmd uses +1, slurmdbd +2),
# CILAUDIO_SLURM_DB_PORT (MariaDB, 3307), CILAUDIO_SLURM_GPUS (fake GPUs on the node, 2: as
# many as its 2 cores can keep busy, so GPU jobs do not all queue behind one another),
# CILAUDIO_SLURM_TIMEOUT (seconds to wait for each daemon, 60).
set -Eeuo pipefail
trap 'echo "cluster: error: \"$BASH_COMMAND\" failed (line $LINENO of $0)" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${CILAUDIO_SLURM_DIR:-/tmp/cilaudio-slurm}
CLUSTER=cilaudio
PARTITION=${CILAUDIO_SLURM_PARTITION:-gpu}
ACCOUNT=${CILAUDIO_SLURM_ACCOUNT:-cilaudio}
CTLD_PORT=${CILAUDIO_SLURM_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
DB_PORT=${CILAUDIO_SLURM_DB_PORT:-3307}
DB_NAME=slurm_acct_db
DB_USER=slurm
TIMEOUT=${CILAUDIO_SLURM_TIMEOUT:-60}
GPUS=${CILAUDIO_SLURM_GPUS:-2}
NODE=$(hostname -s)
ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
DB_SOCKET=$RUN/mysqld.sock
SYSTEM_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$ETC/slurm.conf

say() { echo "cluster: $*"; }
die() { echo "cluster: error: $*" >&2; exit 1; }

# --- processes by pidfile ------------------------------------------------------------------

# pid_of NAME: the PID in $RUN/NAME.pid when that process is alive and is NAME, else nothing.
pid_of() {
    local file=$RUN/$1.pid pid comm
    [ -s "$file" ] || return 0
    pid=$(tr -dc '0-9' <"$file")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    # /proc/PID/comm is cut at 15 characters
    [ "$comm" = "${1:0:15}" ] && echo "$pid"
    return 0
}

running() { [ -n "$(pid_of "$1")" ]; }

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_until() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster: error: $what did not come up within ${limit}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

stop_daemon() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if [ -z "$pid" ]; then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while [ -d "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if [ -d "/proc/$pid" ]; then
        say "$name ($pid) still runs after 30 s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    say "stopped $name ($pid)"
    rm -f "$RUN/$name.pid"
}

# --- configuration ---------------------------------------------------------------------

render() {  # render TEMPLATE OUTPUT MODE
    local tmp
    tmp=$(mktemp "$2.XXXXXX")
    sed -e "s|@STATE@|$STATE|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODE@|$NODE|g" \
        -e "s|@PARTITION@|$PARTITION|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_NAME@|$DB_NAME|g" -e "s|@DB_USER@|$DB_USER|g" \
        -e "s|@DB_PASS@|$DB_PASS|g" -e "s|@GPU_DEVICE@|$GPU_DEVICE|g" \
        -e "s|@GPUS@|$GPUS|g" -e "s|@NODE_LINE@|$NODE_LINE|g" "$1" >"$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

fake_gpu() {
    # One character device per fake GPU for gres.conf's File= (a regular file gives jobs no
    # CUDA_VISIBLE_DEVICES; a missing one kills slurmd): /dev/fakegpu<i>, copies of
    # /dev/null's device (1,3). Where mknod is not allowed: one GPU on /dev/null itself.
    local i ok=1
    for ((i = 0; i < GPUS; i++)); do
        [ -c "/dev/fakegpu$i" ] || mknod -m 666 "/dev/fakegpu$i" c 1 3 2>/dev/null || ok=0
    done
    if [ "$ok" -eq 1 ] && [ "$GPUS" -gt 1 ]; then
        GPU_DEVICE="/dev/fakegpu[0-$((GPUS - 1))]"
    elif [ "$ok" -eq 1 ]; then
        GPU_DEVICE=/dev/fakegpu0
    else
        GPUS=1
        GPU_DEVICE=/dev/null
    fi
}

write_config() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
    chmod 700 "$ETC"
    if [ ! -s "$ETC/db.pass" ]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$ETC/db.pass")
    fi
    DB_PASS=$(cat "$ETC/db.pass")
    # the node as slurmd sees it (a RealMemory above the real one drains the node)
    NODE_LINE=$(slurmd -C | grep '^NodeName=' | head -n 1)
    [ -n "$NODE_LINE" ] || die "slurmd -C printed no NodeName line"
    NODE_LINE=$(echo "$NODE_LINE" | sed "s/^NodeName=[^ ]*/NodeName=$NODE/")
    fake_gpu
    local before
    before=$({ cat "$ETC/slurm.conf" "$ETC/gres.conf" 2>/dev/null || true; } | md5sum)
    render "$HERE/slurm.conf.in" "$ETC/slurm.conf" 644
    render "$HERE/gres.conf.in" "$ETC/gres.conf" 644
    render "$HERE/cgroup.conf.in" "$ETC/cgroup.conf" 644
    render "$HERE/slurmdbd.conf.in" "$ETC/slurmdbd.conf" 600
    : >"$ETC/plugstack.conf"  # no SPANK plugins (the system's plugstack.conf.d is not read)
    if running slurmctld && [ "$before" != "$(cat "$ETC/slurm.conf" "$ETC/gres.conf" | md5sum)" ]; then
        say "warning: the configuration changed while the cluster runs; apply it with stop, then start"
    fi
}

# --- daemons -------------------------------------------------------------------------------

munge_works() { munge -n </dev/null | unmunge >/dev/null; }

start_munge() {
    if munge_works 2>/dev/null; then
        running munged && say "munged runs ($(pid_of munged))" || say "munged runs (not ours)"
        return 0
    fi
    [ -s /etc/munge/munge.key ] || die "no /etc/munge/munge.key (reinstall munge)"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid \
        --log-file=/var/log/munge/munged.log 9>&-
    wait_until "$TIMEOUT" munged munge_works
    tr -dc '0-9' </run/munge/munged.pid >"$RUN/munged.pid"
    say "started munged ($(pid_of munged))"
}

db() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    if running mariadbd; then
        say "mariadbd runs ($(pid_of mariadbd))"
    else
        if [ ! -d "$STATE/mysql/mysql" ]; then
            mkdir -p "$STATE/mysql"
            mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOG/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed, see $LOG/mariadb-install.log"
        fi
        rm -f "$DB_SOCKET"
        # mariadbd does not daemonise itself
        setsid nohup /usr/sbin/mariadbd --no-defaults --user=root --datadir="$STATE/mysql" \
            --socket="$DB_SOCKET" --pid-file="$RUN/mariadbd.pid" --port="$DB_PORT" \
            --bind-address=127.0.0.1 --skip-name-resolve --log-error="$LOG/mariadb.log" \
            --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
            --innodb-log-file-size=64M </dev/null >>"$LOG/mariadb.out" 2>&1 9>&- &
        local pid=$!
        wait_until "$TIMEOUT" "mariadbd (log: $LOG/mariadb.log)" \
            mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping
        [ -s "$RUN/mariadbd.pid" ] || echo "$pid" >"$RUN/mariadbd.pid"
        say "started mariadbd ($(pid_of mariadbd)) on 127.0.0.1:$DB_PORT"
    fi
    db <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

dbd_answers() { sacctmgr -n -P list cluster format=cluster; }

start_slurmdbd() {
    if running slurmdbd; then
        say "slurmdbd runs ($(pid_of slurmdbd))"
    else
        # slurmdbd reads slurmdbd.conf beside $SLURM_CONF and puts itself in the background
        slurmdbd 9>&- || die "slurmdbd did not start, see $LOG/slurmdbd.log"
        wait_until "$TIMEOUT" "slurmdbd (log: $LOG/slurmdbd.log)" dbd_answers
        say "started slurmdbd ($(pid_of slurmdbd))"
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurmctld() {
    if running slurmctld; then
        say "slurmctld runs ($(pid_of slurmctld))"
        return 0
    fi
    slurmctld -f "$SLURM_CONF" 9>&- || die "slurmctld did not start, see $LOG/slurmctld.log"
    wait_until "$TIMEOUT" "slurmctld (log: $LOG/slurmctld.log)" scontrol ping
    wait_until "$TIMEOUT" "slurmctld (log: $LOG/slurmctld.log)" running slurmctld
    say "started slurmctld ($(pid_of slurmctld))"
}

start_slurmd() {
    if running slurmd; then
        say "slurmd runs ($(pid_of slurmd))"
        return 0
    fi
    slurmd -f "$SLURM_CONF" 9>&- || die "slurmd did not start, see $LOG/slurmd.log"
    wait_until "$TIMEOUT" "slurmd (log: $LOG/slurmd.log)" running slurmd
    say "started slurmd ($(pid_of slurmd))"
}

add_account() {
    if [ -z "$(sacctmgr -n -P list assoc where cluster="$CLUSTER" account="$ACCOUNT" user=root format=user)" ]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
            description="cilaudio tests" organization=cilaudio >/dev/null 2>&1 || true
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
        say "added account $ACCOUNT with user root"
    fi
}

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }

node_usable() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

wait_node() {
    local deadline=$((SECONDS + TIMEOUT)) state resumed=0
    while true; do
        state=$(node_state)
        case "$state" in
            idle | mixed | allocated | completing) return 0 ;;
            *drain* | down* | fail* | inval*)
                # an earlier run may have left the node drained or down
                if [ "$resumed" -eq 0 ]; then
                    say "node $NODE is $state: resuming it"
                    scontrol update nodename="$NODE" state=resume || true
                    resumed=1
                fi
                ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster: error: node $NODE is '${state:-unknown}', not idle, after ${TIMEOUT}s" >&2
            sinfo -R >&2 || true
            return 1
        fi
        sleep 0.3
    done
}

link_system_conf() {
    # Let SLURM commands run without SLURM_CONF (by hand, in jobs) when no SLURM is configured.
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then
        return 0
    fi
    if [ ! -e "$SYSTEM_CONF" ] && [ ! -L "$SYSTEM_CONF" ]; then
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -s "$SLURM_CONF" "$SYSTEM_CONF"
        echo "$SYSTEM_CONF" >"$RUN/system-conf-link"
        say "linked $SYSTEM_CONF -> $SLURM_CONF"
    fi
}

unlink_system_conf() {
    if [ -f "$RUN/system-conf-link" ] && [ -L "$SYSTEM_CONF" ] &&
        [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then
        rm -f "$SYSTEM_CONF"
        say "removed the link $SYSTEM_CONF"
    fi
    rm -f "$RUN/system-conf-link"
}

check_host() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root here)"
    local missing=()
    for b in slurmctld slurmd slurmdbd sacctmgr sinfo sbatch sacct munged munge \
        mariadbd mariadb mariadb-install-db mariadb-admin; do
        command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || missing+=("$b")
    done
    [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run tools/system-deps.sh first"
}

# --- commands --------------------------------------------------------------------------

cmd_start() {
    local started
    started=$(date +%s.%N)
    check_host
    mkdir -p "$STATE"
    # one start or stop at a time; the daemons must not inherit this lock (9>&- below)
    exec 9>"$STATE/lock"
    flock 9
    write_config
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    add_account
    wait_node
    link_system_conf
    say "node $NODE is $(node_state); partition $PARTITION, account $ACCOUNT, gres gpu:$GPUS ($GPU_DEVICE)"
    say "up in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s; state and logs in $STATE"
    say "use it with: export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
    mkdir -p "$RUN"
    exec 9>"$STATE/lock"
    flock 9
    if running slurmctld; then
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            local deadline=$((SECONDS + 15))
            while [ -n "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] &&
                [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
        fi
    fi
    local name
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        stop_daemon "$name"
    done
    unlink_system_conf
    say "stopped (state kept in $STATE; delete it for a fresh cluster)"
}

cmd_status() {
    local name rc=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if running "$name"; then
            echo "$name: running ($(pid_of "$name"))"
        elif [ "$name" = munged ] && munge_works 2>/dev/null; then
            echo "munged: running (not started by cluster.sh)"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    if [ $rc -eq 0 ]; then
        echo "node $NODE: $(node_state)"
        sinfo 2>/dev/null || true
        node_usable || rc=1
    fi
    echo "SLURM_CONF=$SLURM_CONF"
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status || exit 1 ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac

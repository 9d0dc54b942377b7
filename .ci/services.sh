# Real PostgreSQL and single-node Slurm servers for the service tests, from Debian's packages.
# Sourced by .ci/run: `start_services <scratch folder>` installs what is missing, starts the
# servers, exports MINISCOPE_TEST_POSTGRES (a libpq URL of the server) and SLURM_CONF, and
# records every daemon's PID in <scratch>/pids; `stop_services` stops them by those PIDs.

_as() {  # run "$2" as user $1 (directly when we are not root)
    if [ "$(id -u)" = 0 ]; then su -s /bin/sh "$1" -c "$2"; else sh -c "$2"; fi
}

_wait_for() {  # _wait_for <seconds> <what> <command...>
    local seconds=$1 what=$2; shift 2
    for _ in $(seq "$((seconds * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    echo "services: $what did not come up in ${seconds}s" >&2; return 1
}

start_services() {
    SERVICES_DIR=$1
    mkdir -p "$SERVICES_DIR"; chmod 755 "$SERVICES_DIR"; : > "$SERVICES_DIR/pids"  # the postgres user reads it
    local missing=()
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    _start_postgres && _start_slurm
}

_start_postgres() {
    local bin pg=$SERVICES_DIR/postgres port=55432
    bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)")
    mkdir -p "$pg"; [ "$(id -u)" = 0 ] && chown postgres "$pg"
    _as postgres "$bin/initdb -D $pg/data -A trust -U postgres >$pg/initdb.log 2>&1" \
        || { echo "services: initdb failed:" >&2; cat "$pg/initdb.log" >&2; return 1; }
    _as postgres "$bin/postgres -D $pg/data -k $pg -p $port -c listen_addresses=127.0.0.1 -c max_connections=200 >$pg/server.log 2>&1 &"
    _wait_for 30 PostgreSQL "$bin/pg_isready" -h 127.0.0.1 -p "$port" || { tail -20 "$pg/server.log" >&2; return 1; }
    echo "postgres $(head -1 "$pg/data/postmaster.pid")" >> "$SERVICES_DIR/pids"
    export MINISCOPE_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port"
}

_start_slurm() {
    local slurm=$SERVICES_DIR/slurm host cpus memory
    host=$(hostname -s); cpus=$(nproc)
    getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts  # slurmctld resolves its host
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$slurm/state" "$slurm/spool"
    cat > "$slurm/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$slurm/state
SlurmdSpoolDir=$slurm/spool
SlurmctldPidFile=$slurm/slurmctld.pid
SlurmdPidFile=$slurm/slurmd.pid
SlurmctldLogFile=$slurm/slurmctld.log
SlurmdLogFile=$slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$slurm/jobcomp.txt
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! pgrep -x munged >/dev/null; then
        _as munge "munged --force" && _wait_for 10 munged test -s /run/munge/munged.pid || return 1
        echo "munged $(cat /run/munge/munged.pid)" >> "$SERVICES_DIR/pids"
    fi
    export SLURM_CONF=$slurm/slurm.conf
    slurmctld -f "$SLURM_CONF" && slurmd -f "$SLURM_CONF"
    _wait_for 10 slurmctld test -s "$slurm/slurmctld.pid" && _wait_for 10 slurmd test -s "$slurm/slurmd.pid" || return 1
    echo "slurmctld $(cat "$slurm/slurmctld.pid")" >> "$SERVICES_DIR/pids"
    echo "slurmd $(cat "$slurm/slurmd.pid")" >> "$SERVICES_DIR/pids"
    _wait_for 60 "the Slurm node" sh -c "sinfo -h -o %t | grep -qx idle" || { tail -20 "$slurm"/*.log >&2; return 1; }
}

stop_services() {
    [ -n "${SERVICES_DIR:-}" ] && [ -f "$SERVICES_DIR/pids" ] || return 0
    local name pid
    while read -r name pid; do
        kill -TERM "$pid" 2>/dev/null && echo "services: stopped $name (PID $pid)" >&2
    done < "$SERVICES_DIR/pids"
    while read -r name pid; do
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    done < "$SERVICES_DIR/pids"
}

#!/usr/bin/env bash
# A 3-node cluster on loopback: 3 cluster managers, 3 brokers and a consumer manager,
# each its own pubsubd process in the background, data and logs under
# ${DATA:-./cluster-data} (git-ignored). Ports do not clash with `pubsubd standalone`
# (127.0.0.1:9392).
#
#   deploy/local-cluster.sh up       # builds release binaries, starts, waits until all listen
#   deploy/local-cluster.sh status   # which processes run, and the cluster as the managers see it
#   deploy/local-cluster.sh roll     # rolling restart of the brokers, one at a time
#   deploy/local-cluster.sh add-broker   # starts broker 4 (then 5, ...); replicas move to it
#   deploy/local-cluster.sh down     # stops them all (SIGTERM: brokers hand their leaderships over)
#
#   export PUBSUB_SERVER=127.0.0.1:9511,127.0.0.1:9512,127.0.0.1:9513   # any live one will do
#   pubsub create orders --partitions 6 --replication-factor 3
#   pubsub cluster status --cluster-manager 127.0.0.1:9501
#   pubsub --consumer-manager 127.0.0.1:9521 subscribe orders --subscription audit
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-./cluster-data}
LEASE=${LEASE:-3s}
BIN=${BIN:-target/release/pubsubd}
CLI=${CLI:-target/release/pubsub}
PEERS="1=127.0.0.1:9501,2=127.0.0.1:9502,3=127.0.0.1:9503"
MANAGERS="127.0.0.1:9501,127.0.0.1:9502,127.0.0.1:9503"
BROKERS="127.0.0.1:9511,127.0.0.1:9512,127.0.0.1:9513"
NAMES=(cm1 cm2 cm3 broker1 broker2 broker3 consumers)
# Brokers added with add-broker (4 to 9) are managed as the first three are.
for extra in "$DATA"/broker[4-9].pid; do
    [ -e "$extra" ] && NAMES+=("$(basename "$extra" .pid)")
done

# The command line of process $1.
args_of() {
    case $1 in
        cm?) local id=${1#cm}
            echo cluster-manager --id "$id" --listen "127.0.0.1:950$id" --data-dir "$DATA/$1" \
                --peers "$PEERS" --lease "$LEASE" --metrics-listen "127.0.0.1:947$id" ;;
        broker?) local id=${1#broker}
            echo broker --id "$id" --listen "127.0.0.1:951$id" --data-dir "$DATA/$1" \
                --cluster-managers "$MANAGERS" --metrics-listen "127.0.0.1:946$id" ;;
        consumers)
            echo consumer-manager --listen 127.0.0.1:9521 --data-dir "$DATA/$1" \
                --brokers "$BROKERS" --cluster-managers "$MANAGERS" --metrics-listen 127.0.0.1:9480 ;;
    esac
}

running() { [ -f "$DATA/$1.pid" ] && kill -0 "$(cat "$DATA/$1.pid")" 2>/dev/null; }

down() {
    for name in "${NAMES[@]}"; do
        running "$name" && kill -TERM "$(cat "$DATA/$name.pid")" 2>/dev/null || true
    done
    for _ in $(seq 100); do
        local left=0
        for name in "${NAMES[@]}"; do running "$name" && left=1; done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    for name in "${NAMES[@]}"; do
        running "$name" && kill -KILL "$(cat "$DATA/$name.pid")" 2>/dev/null || true
        rm -f "$DATA/$name.pid"
    done
    echo "stopped"
}

# Starts process $1 and waits until it listens; on failure shows its log and stops all.
start() {
    local name=$1
    if running "$name"; then echo "$name already runs"; return; fi
    # shellcheck disable=SC2046
    "$BIN" $(args_of "$name") >"$DATA/$name.out" 2>"$DATA/$name.log" &
    echo $! >"$DATA/$name.pid"
}

wait_listening() {
    local name=$1
    for _ in $(seq 200); do
        grep -q "^listening on" "$DATA/$name.out" 2>/dev/null && return 0
        if ! running "$name"; then break; fi
        sleep 0.1
    done
    echo "error: $name did not start; the end of $DATA/$name.log:" >&2
    tail -n 20 "$DATA/$name.log" >&2
    down >/dev/null
    exit 1
}

up() {
    [ -n "${SKIP_BUILD:-}" ] || cargo build --release --bins -q
    mkdir -p "$DATA"
    for name in "${NAMES[@]}"; do start "$name"; done
    for name in "${NAMES[@]}"; do wait_listening "$name"; done
    echo "cluster managers: $MANAGERS (pubsub cluster status --cluster-manager 127.0.0.1:9501)"
    echo "brokers: $BROKERS (a bootstrap list for --server or PUBSUB_SERVER)"
    echo "consumer manager: 127.0.0.1:9521 (pubsub --consumer-manager 127.0.0.1:9521 ...)"
    echo "metrics: brokers 127.0.0.1:9461-9463, cluster managers 127.0.0.1:9471-9473, consumer manager 127.0.0.1:9480 (/metrics)"
    echo "logs in $DATA/*.log; stop with: deploy/local-cluster.sh down"
}

# Restarts the brokers one at a time, as an upgrade would: SIGTERM (the broker hands
# its leaderships to in-sync followers first), start again, and wait until every
# partition is fully replicated before the next, so no partition loses two replicas.
roll() {
    for name in "${NAMES[@]}"; do
        [[ $name == broker* ]] || continue
        running "$name" || { echo "error: $name is not running" >&2; exit 1; }
        local pid
        pid=$(cat "$DATA/$name.pid")
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        start "$name"
        wait_listening "$name"
        for _ in $(seq 600); do
            "$CLI" cluster status --cluster-manager 127.0.0.1:9501 2>/dev/null |
                grep -q "^no under-replicated partitions" && break
            sleep 0.1
        done
        echo "$name restarted; every partition in sync"
    done
}

# Starts the next broker (4, then 5, ... up to 9). The cluster-manager leader moves
# replicas to it, a few partitions at a time, until every broker holds an even share.
add_broker() {
    local id=4
    while [ -e "$DATA/broker$id.pid" ]; do id=$((id + 1)); done
    [ "$id" -le 9 ] || { echo "error: brokers 4 to 9 exist already" >&2; exit 1; }
    start "broker$id"
    wait_listening "broker$id"
    echo "broker $id listens on 127.0.0.1:951$id; replicas move to it now:"
    echo "  $CLI cluster status --cluster-manager 127.0.0.1:9501   # moves under way, replicas per broker"
}

status() {
    for name in "${NAMES[@]}"; do
        if running "$name"; then
            echo "$name: running (pid $(cat "$DATA/$name.pid"))"
        else
            echo "$name: stopped"
        fi
    done
    if [ -x "$CLI" ]; then
        "$CLI" cluster status --cluster-manager 127.0.0.1:9501 || true
    fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    roll) roll ;;
    add-broker) add_broker ;;
    *) echo "usage: deploy/local-cluster.sh up|down|status|roll|add-broker" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The container image as a cluster: 3 cluster managers, 3 brokers and 3 consumer
# managers (sharing the subscriptions), each a container of ${TAG:-pubsub:dev} on a
# private Docker network, reached by name as on Kubernetes. Writes records with
# acks=all, kills one broker and one consumer manager (SIGKILL), writes more, then
# reads everything back through a broker and through a subscription (served by
# whichever consumer manager owns it now): every acknowledged record must be there
# exactly once. Exits non-zero otherwise.
#
#   deploy/image.sh base && deploy/image.sh build && deploy/container-test.sh
#
# The containers run as the image's user with a read-only root filesystem (the data
# volume is writable), as the Kubernetes manifests run them. Everything it starts is
# removed at the end, pass or fail; on failure the containers' logs are printed first.
set -euo pipefail
TAG=${TAG:-pubsub:dev}
RECORDS=${RECORDS:-2000}
RUN=pubsub-ct-$$
NET=$RUN
MANAGERS=cm1:9393,cm2:9393,cm3:9393
BROKERS=broker1:9392,broker2:9392,broker3:9392
CONSUMERS=consumers1:9402,consumers2:9402,consumers3:9402
STARTED=()

log() { echo "container-test: $*"; }

cleanup() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        for name in "${STARTED[@]}"; do
            echo "---- logs of $name (last 30 lines)"
            docker logs --tail 30 "$RUN-$name" 2>&1 || true
        done
    fi
    for name in "${STARTED[@]}"; do docker rm -f -v "$RUN-$name" >/dev/null 2>&1 || true; done
    docker network rm "$NET" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT

# Starts container $1 (also its name on the network) running `pubsubd ${@:2}`.
start() {
    local name=$1
    shift
    docker run -d --name "$RUN-$name" --network "$NET" --network-alias "$name" \
        --read-only --cap-drop ALL --security-opt no-new-privileges \
        -e PUBSUB_ALLOW_UNAUTHENTICATED=true -e PUBSUB_DATA_DIR=/data \
        -e PUBSUB_METRICS_LISTEN=0.0.0.0:9464 \
        "$TAG" "$@" >/dev/null
    STARTED+=("$name")
}

# Runs the pubsub CLI in a throwaway container on the network.
cli() {
    docker run --rm -i --network "$NET" --read-only --entrypoint pubsub "$TAG" \
        --server "$BROKERS" --consumer-manager "$CONSUMERS" "$@"
}

# Waits (up to 60 s) until the cluster managers see $1 live brokers.
wait_brokers() {
    for _ in $(seq 60); do
        local alive
        alive=$(cli cluster status --cluster-manager cm1:9393 2>/dev/null | grep -c ' alive ' || true)
        [ "$alive" -ge "$1" ] && return 0
        sleep 1
    done
    log "fewer than $1 brokers became alive"
    return 1
}

# Writes records $1..$2 with acks=all; each must be acknowledged.
write_range() {
    seq "$1" "$2" | cli write orders --acks all
}

# Checks that $1 lines of JSON records hold each value 1..$2 exactly once.
check_values() {
    python3 -c '
import json, sys
want = int(sys.argv[1])
values = [int(json.loads(line)["value"]) for line in sys.stdin if line.strip()]
missing = set(range(1, want + 1)) - set(values)
dups = len(values) - len(set(values))
print(f"read {len(values)}, lost {len(missing)}, duplicated {dups}")
sys.exit(1 if missing or dups else 0)
' "$1"
}

docker network create "$NET" >/dev/null
peers=1=cm1:9393,2=cm2:9393,3=cm3:9393
for id in 1 2 3; do
    start "cm$id" cluster-manager --id "$id" --listen 0.0.0.0:9393 --peers "$peers" --lease 3s
done
for id in 1 2 3; do
    start "broker$id" broker --id "$id" --listen 0.0.0.0:9392 \
        --advertised-address "broker$id:9392" --cluster-managers "$MANAGERS"
done
for id in 1 2 3; do
    start "consumers$id" consumer-manager --listen 0.0.0.0:9402 \
        --advertised-address "consumers$id:9402" --brokers "$BROKERS" --cluster-managers "$MANAGERS"
done
wait_brokers 3
log "3 cluster managers, 3 brokers and 3 consumer managers run as containers of $TAG"

cli create orders --partitions 3 --replication-factor 3 >/dev/null
write_range 1 "$RECORDS"
log "wrote $RECORDS records with acks=all; killing broker1 and consumers1"
docker kill --signal KILL "$RUN-broker1" "$RUN-consumers1" >/dev/null
write_range $((RECORDS + 1)) $((2 * RECORDS))
total=$((2 * RECORDS))
log "wrote $RECORDS more with broker1 dead"

log "read back through the brokers:"
cli read orders --format json | check_values "$total"
log "read back through a subscription of the consumer manager:"
cli subscribe orders --subscription audit --from-beginning --count "$total" --format json |
    check_values "$total"
log "passed"

#!/usr/bin/env bash
# Starts a 3-node cluster on loopback: 3 cluster managers, 3 brokers and a consumer
# manager, each its own pubsubd process, data under ${DATA:-./cluster-data}. Ctrl-C stops them all.
#
#   deploy/local-cluster.sh            # builds release binaries first
#   export PUBSUB_SERVER=127.0.0.1:9392,127.0.0.1:9412,127.0.0.1:9422   # any live one will do
#   pubsub create orders --partitions 6 --replication-factor 3
#   pubsub cluster status --cluster-manager 127.0.0.1:9501
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-./cluster-data}
LEASE=${LEASE:-3s}
cargo build --release --bins -q
BIN=target/release/pubsubd
mkdir -p "$DATA"

PEERS="1=127.0.0.1:9501,2=127.0.0.1:9502,3=127.0.0.1:9503"
MANAGERS="127.0.0.1:9501,127.0.0.1:9502,127.0.0.1:9503"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM

for id in 1 2 3; do
    "$BIN" cluster-manager --id "$id" --listen "127.0.0.1:950$id" --data-dir "$DATA/cm$id" \
        --peers "$PEERS" --lease "$LEASE" --metrics-listen "127.0.0.1:947$id" >"$DATA/cm$id.out" 2>"$DATA/cm$id.log" &
    pids+=($!)
done
ports=(9392 9412 9422)
for id in 1 2 3; do
    port=${ports[$((id - 1))]}
    "$BIN" broker --id "$id" --listen "127.0.0.1:$port" --data-dir "$DATA/broker$id" \
        --cluster-managers "$MANAGERS" --metrics-listen "127.0.0.1:946$id" >"$DATA/broker$id.out" 2>"$DATA/broker$id.log" &
    pids+=($!)
done
"$BIN" consumer-manager --listen 127.0.0.1:9402 --data-dir "$DATA/consumers" \
    --brokers 127.0.0.1:9392,127.0.0.1:9412,127.0.0.1:9422 --metrics-listen 127.0.0.1:9480 >"$DATA/consumers.out" 2>"$DATA/consumers.log" &
pids+=($!)
echo "cluster managers: $MANAGERS"
echo "consumer manager: 127.0.0.1:9402 (pubsub --consumer-manager 127.0.0.1:9402 subscribe ...)"
echo "brokers: 127.0.0.1:9392,127.0.0.1:9412,127.0.0.1:9422 (a bootstrap list for --server or PUBSUB_SERVER; logs in $DATA/*.log)"
echo "metrics: brokers 127.0.0.1:9461-9463, cluster managers 127.0.0.1:9471-9473, consumer manager 127.0.0.1:9480 (/metrics)"
echo "Ctrl-C stops everything."
wait

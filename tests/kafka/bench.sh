#!/usr/bin/env bash
# Produce and consume rates through the Kafka listener with librdkafka (kcat), next to
# `pubsub bench` through gRPC, on one running server. Prints one line per figure.
#
#   tests/kafka/bench.sh [KAFKA_ADDR] [GRPC_ADDR] [RECORDS] [RECORD_SIZE]
#   defaults: 127.0.0.1:9092 127.0.0.1:9392 1000000 100
#
# Needs kcat and a release `pubsub` (target/release/pubsub, or PUBSUB=path). With
# SERVER_PID set to the server's pid, also prints the server's CPU seconds per step.
set -euo pipefail
KAFKA=${1:-127.0.0.1:9092}
GRPC=${2:-127.0.0.1:9392}
RECORDS=${3:-1000000}
SIZE=${4:-100}
PUBSUB=${PUBSUB:-target/release/pubsub}
run=$$
input=$(mktemp)
trap 'rm -f "$input"' EXIT
# RECORDS lines of SIZE-1 bytes each (kcat sends each line, without its newline).
python3 -c "import sys; line=b'x'*($SIZE-1)+b'\n'; sys.stdout.buffer.write(line*$RECORDS)" >"$input"

rate() { python3 -c "print(f'{$1/$2:,.0f} records/s')"; }
# The server's user+system CPU seconds so far (0 without SERVER_PID).
cpu() {
    if [ -n "${SERVER_PID:-}" ]; then
        python3 -c "import os; f=open('/proc/$SERVER_PID/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"
    else
        echo 0
    fi
}
server_cpu() { python3 -c "print(f'server CPU {$2-$1:.2f} s')"; }
seconds() { python3 -c "import time; print(time.time())"; }

"$PUBSUB" --server "$GRPC" create "kbench-$run" --partitions 1 >/dev/null
c0=$(cpu); start=$(seconds)
kcat -b "$KAFKA" -P -t "kbench-$run" -p 0 -l -X linger.ms=5 -X batch.size=1000000 \
    -X queue.buffering.max.messages=1000000 -X acks=all "$input"
end=$(seconds); c1=$(cpu)
echo "kafka produce (kcat, acks=all, fsync always): $(rate "$RECORDS" "$(python3 -c "print($end-$start)")"), $(server_cpu "$c0" "$c1")"
# Counted by kcat itself (-c exits after that many): a pipe to wc would be the limit.
c0=$(cpu); start=$(seconds)
kcat -b "$KAFKA" -C -t "kbench-$run" -p 0 -o beginning -c "$RECORDS" -e -q >/dev/null
end=$(seconds); c1=$(cpu)
echo "kafka consume (kcat): $(rate "$RECORDS" "$(python3 -c "print($end-$start)")"), $(server_cpu "$c0" "$c1")"
c0=$(cpu)
"$PUBSUB" --server "$GRPC" bench produce --topic "gbench-$run" --create --partitions 1 \
    --records "$RECORDS" --record-size "$SIZE" --acks all 2>&1 | grep -E "^produce"
c1=$(cpu); echo "  grpc produce $(server_cpu "$c0" "$c1")"
c0=$(cpu)
"$PUBSUB" --server "$GRPC" bench consume --topic "gbench-$run" --records "$RECORDS" 2>&1 | grep -E "^consume"
c1=$(cpu); echo "  grpc consume $(server_cpu "$c0" "$c1")"
"$PUBSUB" --server "$GRPC" delete "kbench-$run" >/dev/null
"$PUBSUB" --server "$GRPC" delete "gbench-$run" >/dev/null

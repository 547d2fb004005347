#!/usr/bin/env bash
# Generates the Python gRPC stubs of the pubsub protos into examples/python/gen, with
# grpcio-tools (which carries its own protoc): pip install grpcio grpcio-tools
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
protos="$here/../../proto/proto"
mkdir -p "$here/gen"
python3 -m grpc_tools.protoc -I "$protos" --python_out="$here/gen" --grpc_python_out="$here/gen" \
    "$protos"/pubsub/v1/*.proto

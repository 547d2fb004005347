"""Publish three records and read them back with pubsub's record-level gRPC calls."""
import os, sys
import grpc
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from pubsub.v1 import pubsub_pb2 as pb, pubsub_pb2_grpc as rpc

server = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PUBSUB_SERVER", "127.0.0.1:9392")
channel = grpc.insecure_channel(server.split(",")[0])
admin, broker = rpc.AdminStub(channel), rpc.BrokerStub(channel)
try:
    try:
        admin.CreateTopic(pb.CreateTopicRequest(name="greetings", partitions=1))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    records = [pb.PublishRecord(key=b"py", value=f"hello {i}".encode()) for i in range(3)]
    sent = broker.Publish(pb.PublishRequest(topic="greetings", records=records, acks=pb.ACKS_ALL))
    first = sent.positions[0]
    read = broker.ReadRecords(pb.ReadRecordsRequest(
        topic="greetings", partition=first.partition, offset=first.offset, max_records=3))
    for record in read.records:
        print(record.partition, record.offset, record.key.decode(), record.value.decode())
except grpc.RpcError as e:
    sys.exit(f"error: {e.code().name}: {e.details()}")

"""Real Kafka clients against pubsub's Kafka listener, driven by tests/tests/e2e/kafka.rs.

Each subcommand prints one JSON object on its last line of output, which the Rust test
checks; a client error ends it with a non-zero status.

  clients.py kafka-python BOOTSTRAP TOPIC N      admin create + produce + consume
  clients.py confluent BOOTSTRAP TOPIC N         idempotent produce + consume
  clients.py sasl BOOTSTRAP TOPIC TOKEN          SASL/PLAIN with a token as password
  clients.py idempotent-stream BOOTSTRAP TOPIC N  N values over seconds, idempotent
  clients.py group BOOTSTRAP TOPIC N             3-member group; one leaves midway
"""

import json
import sys


def kafka_python(bootstrap, topic, count):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1,
                  topic_configs={"retention.ms": "3600000"})])
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    sent = [producer.send(topic, key=f"key-{i}".encode(), value=f"kp-{i}".encode(),
                          headers=[("origin", b"kafka-python")]) for i in range(count)]
    producer.flush()
    placed = {}
    for i, future in enumerate(sent):
        meta = future.get(timeout=30)
        placed[f"key-{i}"] = meta.partition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in range(3)])
    consumer.seek_to_beginning()
    read = [{"partition": m.partition, "offset": m.offset, "key": m.key.decode(),
             "value": m.value.decode(), "headers": {k: v.decode() for k, v in m.headers}}
            for m in consumer]
    from kafka.admin import NewPartitions
    admin.create_topics([NewTopic(topic + ".grown", num_partitions=1, replication_factor=1)])
    admin.create_partitions({topic + ".grown": NewPartitions(total_count=5)})
    grown = admin.describe_topics([topic + ".grown"])[0]
    return {"acked": len(placed), "placed": placed, "read": read,
            "retention_ms": str(described), "partitions_after": len(grown["partitions"])}


def confluent(bootstrap, topic, count):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until answered
    for future in admin.create_topics(
            [NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        future.result()
    acked, failed = [], []

    def delivered(error, message):
        (failed if error else acked).append(error or message.offset())

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=f"key-{i}", value=f"ck-{i}",
                         headers={"origin": "confluent"}, on_delivery=delivered)
    unflushed = producer.flush(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
    values = []
    while True:
        message = consumer.poll(3)
        if message is None:
            break
        if message.error():
            raise RuntimeError(str(message.error()))
        values.append(message.value().decode())
    consumer.close()
    return {"acked": len(acked), "failed": [str(f) for f in failed], "unflushed": unflushed,
            "values": values}


def sasl(bootstrap, topic, token):
    from confluent_kafka import KafkaException, Producer

    def produce(password):
        producer = Producer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                             "sasl.mechanism": "PLAIN", "sasl.username": "any",
                             "sasl.password": password, "message.timeout.ms": 5000})
        outcome = []
        producer.produce(topic, value=b"secret",
                         on_delivery=lambda e, m: outcome.append(str(e) if e else "ok"))
        producer.flush(10)
        return outcome[0] if outcome else "no answer"

    def group_read(password):
        from confluent_kafka import Consumer
        consumer = Consumer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                             "sasl.mechanism": "PLAIN", "sasl.username": "any",
                             "sasl.password": password, "group.id": "secure-group",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        message = consumer.poll(20)
        consumer.close()
        if message is None:
            return "nothing read"
        return str(message.error()) if message.error() else message.value().decode()

    return {"with_token": produce(token), "with_wrong_token": produce("pst_0000000000000000_x"),
            "group_read": group_read(token)}


def idempotent_stream(bootstrap, topic, count):
    """Produces values 0..count over several seconds with an idempotent producer (the
    test kills a leader meanwhile); returns the values acknowledged and the errors."""
    import time

    from confluent_kafka import Producer

    acked, failed = [], []

    def delivered(error, message):
        if error:
            failed.append(str(error))
        else:
            acked.append(int(message.value()))

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 2, "message.timeout.ms": 60000})
    for i in range(count):
        producer.produce(topic, key=str(i % 64), value=str(i), on_delivery=delivered)
        if i % 200 == 199:
            producer.poll(0)
            time.sleep(0.02)
    unflushed = producer.flush(90)
    return {"acked": acked, "failed": failed[:10], "failures": len(failed),
            "unflushed": unflushed}


def produce_keyed(bootstrap, topic, count):
    """Produces values 0..count with keys spread over the partitions; returns acks."""
    from confluent_kafka import Producer

    acked = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=f"key-{i}", value=str(i),
                         on_delivery=lambda e, m: e or acked.append(int(m.value())))
    producer.flush(30)
    return len(acked)


def group(bootstrap, topic, count):
    """Three confluent-kafka consumers in group `kgroup` share the topic's partitions,
    committing after each batch; once all three hold partitions and the third has read
    some records, it leaves, and the other two must read everything that is left."""
    import threading
    import time

    from confluent_kafka import Consumer, KafkaException

    acked = produce_keyed(bootstrap, topic, count)
    lock = threading.Lock()
    seen, errors, assignments = [], [], {}
    left, stop = threading.Event(), threading.Event()

    def member(index):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kgroup",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "session.timeout.ms": 10000, "heartbeat.interval.ms": 300})
        consumer.subscribe([topic])
        try:
            while not stop.is_set() and not (index == 2 and left.is_set()):
                messages = consumer.consume(num_messages=10, timeout=0.2)
                with lock:
                    assignments[index] = sorted(p.partition for p in consumer.assignment())
                    for m in messages:
                        if m.error():
                            errors.append(str(m.error()))
                        else:
                            seen.append((index, left.is_set(), m.partition(), m.offset()))
                if messages:
                    try:
                        consumer.commit(asynchronous=False)
                    except KafkaException as e:  # a rebalance: read again, not lost
                        with lock:
                            errors.append(str(e))
                time.sleep(0.1)
        finally:
            consumer.close()

    def wait_for(condition, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with lock:
                if condition():
                    return True
            time.sleep(0.05)
        return False

    threads = [threading.Thread(target=member, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    stable = wait_for(lambda: all(len(assignments.get(i, [])) == 2 for i in range(3))
                      and any(s[0] == 2 for s in seen), 60)
    with lock:
        before = dict(assignments)
    left.set()
    threads[2].join(30)
    distinct = lambda: {(p, o) for _, _, p, o in seen}
    complete = wait_for(lambda: len(distinct()) >= acked, 90)
    with lock:
        after = {i: assignments.get(i, []) for i in range(2)}
    stop.set()
    for thread in threads:
        thread.join(30)
    leaver = set(before.get(2, []))
    taken_over = sum(1 for i, late, p, _ in seen if late and i != 2 and p in leaver)
    return {"acked": acked, "stable": stable, "complete": complete,
            "distinct": len(distinct()), "read": len(seen), "before": before,
            "after": after, "taken_over": taken_over, "errors": errors[:5]}


def main():
    command, bootstrap, topic, arg = sys.argv[1:5]
    if command == "kafka-python":
        result = kafka_python(bootstrap, topic, int(arg))
    elif command == "confluent":
        result = confluent(bootstrap, topic, int(arg))
    elif command == "idempotent-stream":
        result = idempotent_stream(bootstrap, topic, int(arg))
    elif command == "group":
        result = group(bootstrap, topic, int(arg))
    elif command == "sasl":
        result = sasl(bootstrap, topic, arg)
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

//! Every documented error case, checked by gRPC code and message.

use bytes::Bytes;
use pubsub_client::{
    Admin, Client, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord, TopicConfig,
};
use pubsub_proto::v1;
use pubsub_storage::{BatchBuilder, Compression, ProducerStamp};
use pubsub_tests::Server;
use tonic::Code;

fn check(result: Result<impl std::fmt::Debug, pubsub_client::Error>, code: Code, needle: &str) {
    let err = result.expect_err("the call must fail");
    assert_eq!(err.code(), Some(code), "{err}");
    assert!(
        err.to_string().contains(needle),
        "{needle:?} not in {err:?}"
    );
}

fn topic(name: &str, partitions: u32) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        ..NewTopic::default()
    }
}

pub(crate) fn one_batch(value_len: usize) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(1, None, Some(&vec![7u8; value_len]), &[]);
    Bytes::from(
        builder
            .build(Compression::None, ProducerStamp::NONE)
            .unwrap()
            .unwrap(),
    )
}

fn produce(topic: &str, partition: u32, batch: Bytes) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        partition,
        acks: v1::Acks::Leader as i32,
        batches: vec![batch],
        correlation_id: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_have_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    let admin = Admin::new(client.clone());
    admin.create_topic(topic("t", 2)).await.unwrap();

    check(
        admin.create_topic(topic("t", 2)).await,
        Code::AlreadyExists,
        "already exists",
    );
    check(
        admin.describe_topic("nope").await,
        Code::NotFound,
        "\"nope\" does not exist",
    );
    check(
        admin.delete_topic("nope").await,
        Code::NotFound,
        "does not exist",
    );
    check(
        admin.create_topic(topic("bad/name", 1)).await,
        Code::InvalidArgument,
        "'/'",
    );
    check(
        admin.create_topic(topic("..", 1)).await,
        Code::InvalidArgument,
        "..",
    );
    check(
        admin.create_topic(topic(&"x".repeat(250), 1)).await,
        Code::InvalidArgument,
        "249",
    );
    let zero = v1::CreateTopicRequest {
        name: "z".into(),
        partitions: 0,
        replication_factor: 0,
        config: None,
    };
    let err = client.admin_stub().create_topic(zero).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("between 1 and 10000"),
        "{}",
        err.message()
    );
    check(
        admin.create_topic(topic("many", 10_001)).await,
        Code::InvalidArgument,
        "10000",
    );
    let replicated = NewTopic {
        replication_factor: 3,
        ..topic("r", 1)
    };
    check(
        admin.create_topic(replicated).await,
        Code::InvalidArgument,
        "replication factor 3 exceeds the 1 live broker",
    );
    let bad_config = NewTopic {
        config: TopicConfig {
            fsync: Some("sometimes".into()),
            ..TopicConfig::default()
        },
        ..topic("c", 1)
    };
    check(
        admin.create_topic(bad_config).await,
        Code::InvalidArgument,
        "fsync",
    );
    // Nothing was half-created by the failures.
    let names: Vec<String> = crate::topic_names(&admin).await;
    assert_eq!(names, ["t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_errors_have_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    let small = NewTopic {
        config: TopicConfig {
            max_message_bytes: Some(1000),
            ..TopicConfig::default()
        },
        ..topic("t", 2)
    };
    Admin::new(client.clone())
        .create_topic(small)
        .await
        .unwrap();
    let mut stub = client.broker_stub();

    let err = stub
        .produce(produce("nope", 0, one_batch(10)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = stub
        .produce(produce("t", 5, one_batch(10)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("partition 5 does not exist"),
        "{}",
        err.message()
    );

    let err = stub
        .produce(produce("t", 0, one_batch(5000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("exceeds the limit of 1000 bytes"),
        "{}",
        err.message()
    );

    let mut corrupt = one_batch(10).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let err = stub
        .produce(produce("t", 0, Bytes::from(corrupt)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("crc mismatch"), "{}", err.message());

    let err = stub
        .produce(produce("t", 0, Bytes::from_static(b"garbage")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The rejected batches left nothing behind; a good one lands at offset 0.
    let ok = stub
        .produce(produce("t", 0, one_batch(10)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.base_offsets, [0]);

    let fetch = v1::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 5,
        max_bytes: 0,
        max_wait_ms: 0,
        ..v1::FetchRequest::default()
    };
    let err = stub.fetch(fetch).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("valid offsets are 0..=1"),
        "{}",
        err.message()
    );
    assert_eq!(err.metadata().get("pubsub-log-end-offset").unwrap(), "1");

    // The producer reports an oversize record as a failed delivery, not a hang.
    let producer = Producer::new(client.clone(), "t", ProducerConfig::default())
        .await
        .unwrap();
    let delivery = producer
        .send(ProducerRecord::value(vec![1u8; 4000]))
        .await
        .unwrap();
    check(
        delivery.wait().await,
        Code::ResourceExhausted,
        "exceeds the limit",
    );
    // ...and keeps working for the next one.
    let record = ProducerRecord {
        partition: Some(PartitionId(1)),
        ..ProducerRecord::value("fine")
    };
    let stored = producer.send(record).await.unwrap().wait().await.unwrap();
    assert_eq!((stored.partition, stored.offset), (PartitionId(1), Some(0)));
    let bad_partition = ProducerRecord {
        partition: Some(PartitionId(9)),
        ..ProducerRecord::value("x")
    };
    assert!(matches!(
        producer.send(bad_partition).await,
        Err(pubsub_client::Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_transport_error() {
    let err = Client::connect("127.0.0.1:1").await.unwrap_err();
    assert!(
        matches!(err, pubsub_client::Error::Transport { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

/// Byte positions in a RecordBatch v2 header (storage/FORMAT.md, section 1).
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;

/// An uncompressed batch of `values`.
fn batch_of(values: &[&str]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(1, None, Some(value.as_bytes()), &[]);
    }
    builder
        .build(Compression::None, ProducerStamp::NONE)
        .unwrap()
        .unwrap()
}

/// A batch of `values` with `lie` applied to its bytes and the CRC sealed again, so
/// only a walk over the records can tell something is wrong.
fn resealed(values: &[&str], lie: impl FnOnce(&mut [u8])) -> Bytes {
    let mut bytes = batch_of(values);
    lie(&mut bytes);
    pubsub_storage::batch::restamp_producer(&mut bytes, -1, -1, -1);
    Bytes::from(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_under_a_valid_crc_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(topic("t", 1))
        .await
        .unwrap();
    let mut stub = client.broker_stub();

    // Claims gzip, but the records are stored as they are.
    let not_gzip = resealed(&["one", "two"], |b| b[ATTRIBUTES_AT + 1] = 1);
    // Says two records (last offset delta 1, consistent) but holds three.
    let miscounted = resealed(&["one", "two", "three"], |b| {
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&1i32.to_be_bytes());
    });
    let cases = [
        (not_gzip, "cannot decompress batch"),
        (
            miscounted,
            "record count 2 in the header but the records section holds 3 records",
        ),
    ];
    for (batch, needle) in cases {
        let err = stub.produce(produce("t", 0, batch)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(needle),
            "{needle:?} not in {}",
            err.message()
        );
        let end = stub
            .list_offsets(v1::ListOffsetsRequest {
                topic: "t".into(),
                partition: 0,
                spec: Some(v1::list_offsets_request::Spec::Latest(true)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(end.offset, 0, "a refused batch moved the log end");
    }

    // A good batch after them lands at offset 0 and reads back.
    let ok = stub
        .produce(produce("t", 0, Bytes::from(batch_of(&["good"]))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.base_offsets, [0]);
    let records = crate::read_everything(&client, "t", 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 0);
    assert_eq!(records[0].value.as_deref(), Some(&b"good"[..]));
}

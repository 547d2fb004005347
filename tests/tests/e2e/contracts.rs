//! RPC contracts a client written from the protos alone relies on (issue 12): a
//! ProduceStream never ends OK with requests unanswered, size limits answer
//! RESOURCE_EXHAUSTED naming the limit, and a status never overflows HTTP/2 headers
//! however long the name it echoes.

use bytes::Bytes;
use pubsub_client::{Admin, Client, NewTopic};
use pubsub_proto::v1;
use pubsub_proto::v1::broker_client::BrokerClient;
use pubsub_tests::Server;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::errors::one_batch as batch;

fn request(topic: &str, correlation_id: u64, batches: Vec<Bytes>) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: v1::Acks::Leader as i32,
        batches,
        correlation_id,
    }
}

async fn started() -> (tempfile::TempDir, Server, Client) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "t".into(),
            partitions: 1,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    (dir, server, client)
}

async fn log_end(client: &Client) -> u64 {
    let latest = v1::ListOffsetsRequest {
        topic: "t".into(),
        partition: 0,
        spec: Some(v1::list_offsets_request::Spec::Latest(true)),
    };
    client
        .broker_stub()
        .list_offsets(latest)
        .await
        .unwrap()
        .into_inner()
        .offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_stream_never_ends_ok_with_requests_unanswered() {
    let (_dir, _server, client) = started().await;
    let requests = vec![
        request("t", 1, vec![batch(10)]),
        request("t", 2, Vec::new()),
        request("t", 3, vec![batch(10)]),
    ];
    let mut answers = client
        .broker_stub()
        .produce_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let first = answers.next().await.unwrap().unwrap();
    assert_eq!((first.correlation_id, first.base_offsets), (1, vec![0]));
    let second = answers.next().await.unwrap().unwrap();
    assert_eq!(second.correlation_id, 2);
    let error = second
        .error
        .expect("the bad request is answered with its error");
    assert_eq!(
        error.code,
        Code::InvalidArgument as i32,
        "{}",
        error.message
    );
    // Request 3 is not answered, so the call must end with a status, not OK.
    let end = answers.next().await.expect("the call ends with a status");
    let status = end.expect_err("never OK with request 3 unanswered");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("not answered"), "{status:?}");
    assert_eq!(log_end(&client).await, 1, "request 3 was not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_answer_resource_exhausted_naming_the_limit() {
    let (_dir, server, client) = started().await;
    // A batch over the topic's max_message_bytes (1 MiB by default).
    let err = client
        .broker_stub()
        .produce(request("t", 0, vec![batch(2 << 20)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("exceeds the limit"), "{err:?}");

    // A request over the gRPC message limit, from a client that does not stop it.
    let mut raw = BrokerClient::connect(format!("http://{}", server.address()))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let huge: Vec<Bytes> = (0..70).map(|_| batch(1 << 20)).collect();
    let err = raw
        .produce(request("t", 0, huge.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("limit of 64 MiB"), "{err:?}");
    // The same on a stream.
    let mut answers = raw
        .produce_stream(tokio_stream::iter(vec![request("t", 9, huge)]))
        .await
        .unwrap()
        .into_inner();
    let end = answers.next().await.expect("an answer or a status");
    let code = match end {
        Ok(answer) => answer.error.map(|e| e.code).unwrap_or_default(),
        Err(status) => status.code() as i32,
    };
    assert_eq!(code, Code::ResourceExhausted as i32);
    assert_eq!(log_end(&client).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_character_name_gets_an_answer_not_a_transport_error() {
    let (_dir, _server, client) = started().await;
    let long = "n".repeat(10_000);
    let err = client
        .broker_stub()
        .produce(request(&long, 0, vec![batch(10)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::NotFound),
        "{err:?}"
    );
    assert!(err.message().len() <= pubsub_proto::STATUS_MESSAGE_BYTES_MAX);
    let err = Admin::new(client.clone())
        .create_topic(NewTopic {
            name: long.clone(),
            partitions: 1,
            ..NewTopic::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err:?}");
    let subscriptions = pubsub_client::Subscriptions::new(client.clone());
    let err = subscriptions
        .subscribe("t", &long, v1::SubscriptionOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_answers_the_first_record_not_its_batch() {
    let (_dir, _server, client) = started().await;
    let mut builder = pubsub_storage::BatchBuilder::new();
    for i in 0..10 {
        builder.push(1_000 + i * 10, None, Some(b"v"), &[]);
    }
    let stamp = pubsub_storage::ProducerStamp::NONE;
    let one = builder.build(pubsub_storage::Compression::Zstd, stamp);
    let mut stub = client.broker_stub();
    stub.produce(request("t", 0, vec![Bytes::from(one.unwrap().unwrap())]))
        .await
        .unwrap();
    for (time, expected) in [(1_000, 0), (1_041, 5), (1_090, 9)] {
        let by_time = v1::ListOffsetsRequest {
            topic: "t".into(),
            partition: 0,
            spec: Some(v1::list_offsets_request::Spec::TimestampMs(time)),
        };
        let offset = stub
            .list_offsets(by_time)
            .await
            .unwrap()
            .into_inner()
            .offset;
        assert_eq!(offset, expected, "first record at or after {time}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_standalone_that_wrote_a_dead_letter() {
    let (_dir, mut server, client) = started().await;
    client
        .broker_stub()
        .produce(request("t", 0, vec![batch(10)]))
        .await
        .unwrap();
    let subs = pubsub_client::Subscriptions::new(client.clone());
    let options = v1::SubscriptionOptions {
        max_deliveries: 1,
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..v1::SubscriptionOptions::default()
    };
    subs.subscribe("t", "s", options).await.unwrap();
    let read = subs
        .read("s", "", 0, 10, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let ids: Vec<(u32, u64)> = read
        .records
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(ids, [(0, 0)]);
    subs.nack("s", "", 0, &ids).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while subs.list("", "s").await.unwrap()[0].dead_lettered == 0 {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        // Past max_deliveries, the next read sends the record to the dead-letter topic.
        let wait = std::time::Duration::from_millis(200);
        subs.read("s", "", 0, 10, wait).await.unwrap();
    }
    // Panics if the process is still there 10 s after SIGTERM.
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enums_and_booleans_mean_what_they_say() {
    let (_dir, _server, client) = started().await;
    let mut stub = client.broker_stub();
    let mut unknown = request("t", 0, vec![batch(10)]);
    unknown.acks = 7;
    let err = stub.produce(unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut unset = request("t", 0, vec![batch(10)]);
    unset.acks = v1::Acks::Unspecified as i32;
    let stored = stub.produce(unset).await.unwrap().into_inner();
    assert_eq!(stored.base_offsets, [0], "unset acks means leader");

    use v1::list_offsets_request::Spec;
    let list = |spec| v1::ListOffsetsRequest {
        topic: "t".into(),
        partition: 0,
        spec: Some(spec),
    };
    for spec in [
        Spec::Earliest(false),
        Spec::Latest(false),
        Spec::TimestampMs(-5),
    ] {
        let err = stub.list_offsets(list(spec)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{spec:?}: {err:?}");
    }
    let offset = |answer: tonic::Response<v1::ListOffsetsResponse>| answer.into_inner().offset;
    let latest = stub.list_offsets(list(Spec::TimestampMs(-1))).await;
    assert_eq!(offset(latest.unwrap()), 1, "-1 is latest");
    let earliest = stub.list_offsets(list(Spec::TimestampMs(-2))).await;
    assert_eq!(offset(earliest.unwrap()), 0, "-2 is earliest");

    let subs = pubsub_client::Subscriptions::new(client.clone());
    let options = v1::SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(false)),
        ..v1::SubscriptionOptions::default()
    };
    let err = subs.subscribe("t", "s", options).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_of_a_record_the_caller_does_not_hold_says_so() {
    let (_dir, _server, client) = started().await;
    let mut stub = client.broker_stub();
    stub.produce(request("t", 0, vec![batch(10), batch(10)]))
        .await
        .unwrap();
    let subs = pubsub_client::Subscriptions::new(client.clone());
    let options = v1::SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..v1::SubscriptionOptions::default()
    };
    subs.subscribe("t", "s", options).await.unwrap();
    let wait = std::time::Duration::from_secs(5);
    let read = subs.read("s", "", 0, 1, wait).await.unwrap();
    assert_eq!(read.records.len(), 1);
    // Offset 1 was never delivered, so this caller holds no lease on it.
    let err = subs.nack("s", "", 0, &[(0, 0), (0, 1)]).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err:?}");
    assert!(err.to_string().contains("0@1"), "{err}");
    // All or nothing: offset 0 was not given back, so it is not delivered again now.
    let again = subs
        .read("s", "", 0, 10, std::time::Duration::from_millis(300))
        .await
        .unwrap();
    let offsets: Vec<u64> = again.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [1]);
    // The holder's nack works, and the ack of a held record too.
    subs.nack("s", "", 0, &[(0, 1)]).await.unwrap();
    subs.ack("s", "", 0, &[(0, 0)]).await.unwrap();
}

//! Data integrity at the consumer end, over real `pubsubd standalone` processes: a
//! batch nobody can decode never stalls a reader silently, and deleting a topic ends
//! its subscriptions instead of leaving them pointed at a new topic of the same name.
//!
//! Undecodable bytes are planted on disk, not produced: the broker checks only the
//! header and CRC on produce today, and is about to refuse such batches, so a test that
//! produced them would stop testing anything. The broker is stopped, a batch with a
//! valid header, the next base offset and a correct CRC (but a body that is not the
//! gzip it claims) is written right after the last valid batch of the partition's
//! active segment (the file is preallocated with zeros past that point), and the
//! broker is started again: its recovery scan checks framing, offsets and CRC, and
//! keeps the batch, as it would keep one written by an older or buggy version.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pubsub_client::{
    Admin, Client, DeliveredRecord, NewTopic, PartitionId, Producer, ProducerConfig,
    ProducerRecord, SubscriptionOptions, Subscriptions, TopicConfig,
};
use pubsub_proto::v1;
use pubsub_storage::batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use pubsub_tests::{Server, pubsub};

/// Offsets the planted batch claims to hold.
const PLANTED_RECORDS: u32 = 3;

fn earliest() -> SubscriptionOptions {
    SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ..SubscriptionOptions::default()
    }
}

async fn create(client: &Client, name: &str, partitions: u32) {
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: name.into(),
            partitions,
            config: TopicConfig::default(),
            ..NewTopic::default()
        })
        .await
        .unwrap();
}

/// Produces `values` to one partition, each its own batch, and waits for each.
async fn produce(client: &Client, topic: &str, partition: u32, values: &[String]) {
    let producer = Producer::new(client.clone(), topic, ProducerConfig::default())
        .await
        .unwrap();
    for value in values {
        let record = ProducerRecord {
            partition: Some(PartitionId(partition)),
            ..ProducerRecord::value(value.clone())
        };
        producer.send(record).await.unwrap().wait().await.unwrap();
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn value(record: &DeliveredRecord) -> String {
    String::from_utf8(record.value.clone().unwrap_or_default().to_vec()).unwrap()
}

/// A batch of `records` offsets at `base_offset` whose header and CRC are valid but
/// whose body is not the gzip stream the attributes claim.
fn undecodable_batch(base_offset: u64, records: u32) -> Vec<u8> {
    let body = b"these bytes are not a gzip stream";
    let mut batch = vec![0u8; HEADER_BYTES + body.len()];
    let now = pubsub_client::now_ms();
    batch[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[16] = 2; // magic
    batch[21..23].copy_from_slice(&1i16.to_be_bytes()); // gzip
    batch[23..27].copy_from_slice(&(records as i32 - 1).to_be_bytes());
    batch[27..35].copy_from_slice(&now.to_be_bytes());
    batch[35..43].copy_from_slice(&now.to_be_bytes());
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // no producer id
    batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    batch[57..61].copy_from_slice(&(records as i32).to_be_bytes());
    batch[HEADER_BYTES..].copy_from_slice(body);
    // The CRC covers everything from the attributes on.
    let crc = crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// CRC-32C (Castagnoli), bit by bit: a few hundred bytes need no table.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The `.log` file of a partition's active segment (the one with the highest base).
fn active_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a partition has an active segment")
}

/// Stops `server`, writes an undecodable batch after the last valid batch of the
/// partition's active segment, starts it again; returns the batch and its bytes.
fn plant_undecodable_batch(server: &mut Server, topic: &str, partition: u32) -> (u64, Vec<u8>) {
    server.kill9();
    let dir = server
        .data_dir()
        .join("broker")
        .join(format!("{topic}-{partition}"));
    let path = active_segment(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let base: u64 = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap();
    // Walk the valid batches; the preallocated tail is zeros.
    let (mut position, mut next_offset) = (0usize, base);
    while position + LOG_OVERHEAD <= bytes.len()
        && bytes[position..position + LOG_OVERHEAD]
            .iter()
            .any(|&b| b != 0)
    {
        let header = BatchHeader::parse(&bytes[position..]).unwrap();
        next_offset = header.next_offset();
        position += header.total_bytes();
    }
    let batch = undecodable_batch(next_offset, PLANTED_RECORDS);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&batch, position as u64).unwrap();
    file.sync_all().unwrap();
    server.restart();
    (next_offset, batch)
}

/// Pull reads of `name` until `expected` records came (acknowledging each).
async fn read_values(subs: &Subscriptions, name: &str, expected: usize) -> Vec<DeliveredRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < expected {
        assert!(
            Instant::now() < deadline,
            "{name}: read {} of {expected} records: {:?}",
            records.len(),
            records.iter().map(value).collect::<Vec<_>>()
        );
        let response = match subs
            .read(name, "", 0, 100, Duration::from_millis(500))
            .await
        {
            Ok(response) => response,
            Err(e) if e.is_retriable() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("read {name}: {e}"),
        };
        let ids: Vec<(u32, u64)> = response
            .records
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        if !ids.is_empty() {
            subs.ack(name, "", 0, &ids).await.unwrap();
        }
        records.extend(response.records);
    }
    records
}

/// Runs `pubsub` and returns its JSON output.
fn pubsub_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    let output = pubsub(server.address(), &full, b"");
    assert!(
        output.status.success(),
        "pubsub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A topic of two partitions: partition 0 holds `a-0..a-2`, an undecodable batch
/// (offsets 3 to 5), then `b-0, b-1`; partition 1 holds `c-0..c-2`.
async fn topic_with_an_undecodable_batch(server: &mut Server) -> (Client, Vec<u8>) {
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "t", 2).await;
    produce(&client, "t", 0, &values("a", 3)).await;
    produce(&client, "t", 1, &values("c", 3)).await;
    let (base, batch) = plant_undecodable_batch(server, "t", 0);
    assert_eq!(base, 3);
    let client = Client::connect(server.address()).await.unwrap();
    produce(&client, "t", 0, &values("b", 2)).await;
    (client, batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_prints_what_precedes_an_undecodable_batch_then_names_its_topic_partition_and_offset()
{
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    topic_with_an_undecodable_batch(&mut server).await;

    let output = pubsub(server.address(), &["read", "t", "-p", "0"], b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "stdout: {stdout}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["a-0", "a-1", "a-2"],
        "{stderr}"
    );
    for needle in ["\"t\"", "partition 0", "offset 3"] {
        assert!(stderr.contains(needle), "{needle} missing from: {stderr}");
    }
    // The error says where to resume past the batch.
    assert!(stderr.contains("--offset 6"), "{stderr}");
    let past = pubsub(
        server.address(),
        &["read", "t", "-p", "0", "--offset", "6"],
        b"",
    );
    assert!(past.status.success());
    assert_eq!(String::from_utf8_lossy(&past.stdout), "b-0\nb-1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_batch_stops_its_partition_visibly_while_the_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (client, _) = topic_with_an_undecodable_batch(&mut server).await;
    let subs = Subscriptions::new(client.clone());
    subs.subscribe("t", "s", earliest()).await.unwrap();

    let mut got: Vec<String> = read_values(&subs, "s", 6).await.iter().map(value).collect();
    got.sort();
    assert_eq!(got, ["a-0", "a-1", "a-2", "c-0", "c-1", "c-2"]);
    // Partition 1 is still served.
    produce(&client, "t", 1, &["c-3".to_string()]).await;
    let more = read_values(&subs, "s", 1).await;
    assert_eq!(value(&more[0]), "c-3");

    // The stop shows in `groups describe` and `subscriptions`, as text and JSON, once
    // a read has met the batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let described = loop {
        let described = pubsub_json(&server, &["groups", "describe", "s"]);
        if !described["partitions"][0]["stopped"].is_null() {
            break described;
        }
        assert!(Instant::now() < deadline, "never stopped: {described}");
        let read = subs.read("s", "", 0, 100, Duration::from_millis(200)).await;
        assert!(read.unwrap().records.is_empty());
    };
    let stopped = &described["partitions"][0]["stopped"];
    assert_eq!(stopped["offset"], 3, "{described}");
    assert!(
        stopped["reason"].as_str().unwrap().contains("gzip"),
        "{described}"
    );
    assert!(described["partitions"][1]["stopped"].is_null());
    let listed = pubsub_json(&server, &["subscriptions"]);
    assert_eq!(listed[0]["partitions"][0]["stopped"]["offset"], 3);
    let text = pubsub(server.address(), &["groups", "describe", "s"], b"");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("partition 0 stopped at offset 3"), "{text}");

    // A reader of the stopped partition alone gets an error, not empty answers.
    subs.subscribe(
        "t",
        "only",
        SubscriptionOptions {
            group: true,
            ..earliest()
        },
    )
    .await
    .unwrap();
    let first = subs.join("only", "").await.unwrap();
    let second = subs.join("only", "").await.unwrap();
    let first = subs.join("only", &first.member_id).await.unwrap();
    let (stuck, generation) = [&first, &second]
        .into_iter()
        .find(|m| m.partitions == [0])
        .map(|m| (m.member_id.clone(), m.generation))
        .expect("one member owns partition 0");
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        assert!(
            Instant::now() < deadline,
            "partition 0 never reported stopped"
        );
        match subs
            .read("only", &stuck, generation, 100, Duration::from_millis(500))
            .await
        {
            Ok(response) => {
                let ids: Vec<_> = response
                    .records
                    .iter()
                    .map(|r| (r.partition, r.offset))
                    .collect();
                subs.ack("only", &stuck, generation, &ids).await.unwrap();
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        error.code(),
        Some(tonic::Code::FailedPrecondition),
        "{error}"
    );
    for needle in ["\"t\"", "partition 0", "offset 3"] {
        assert!(error.to_string().contains(needle), "{needle}: {error}");
    }

    // Seeking past the batch resumes the partition.
    subs.seek("s", Some(0), v1::seek_request::Target::Offset(6))
        .await
        .unwrap();
    let mut resumed: Vec<String> = read_values(&subs, "s", 2).await.iter().map(value).collect();
    resumed.sort();
    assert_eq!(resumed, ["b-0", "b-1"]);
    let described = pubsub_json(&server, &["groups", "describe", "s"]);
    assert!(
        described["partitions"][0]["stopped"].is_null(),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_batch_goes_whole_to_the_dead_letter_topic_and_delivery_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (client, batch) = topic_with_an_undecodable_batch(&mut server).await;
    let subs = Subscriptions::new(client.clone());
    let options = SubscriptionOptions {
        max_deliveries: 5,
        ..earliest()
    };
    subs.subscribe("t", "d", options).await.unwrap();

    let mut got: Vec<String> = read_values(&subs, "d", 8).await.iter().map(value).collect();
    got.sort();
    assert_eq!(
        got,
        ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0", "c-1", "c-2"]
    );
    let info = &subs.list("", "d").await.unwrap()[0];
    assert_eq!(info.dead_lettered, 1);
    assert_eq!(info.partitions[0].committed_offset, 8);

    // The dead letter is the raw batch, with where it came from.
    let history = subs
        .history(v1::HistoryRequest {
            topic: "t.d.dlq".into(),
            range: Some(v1::history_request::Range::SinceOffset(0)),
            ..Default::default()
        })
        .await
        .unwrap();
    let letters: Vec<_> = history.iter().flat_map(|p| &p.records).collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value.as_deref(), Some(&batch[..]));
    let header = |key: &str| {
        letters[0]
            .headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert_eq!(header("pubsub-dlq-topic").as_deref(), Some("t"));
    assert_eq!(header("pubsub-dlq-partition").as_deref(), Some("0"));
    assert_eq!(header("pubsub-dlq-offset").as_deref(), Some("3"));
    assert!(header("pubsub-dlq-reason").is_some());
    // A raw batch is not a record: replay leaves it where it is.
    assert_eq!(subs.replay_dead_letters("d", 0).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_ends_its_subscriptions_and_their_streams_with_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "t", 1).await;
    produce(&client, "t", 0, &values("old", 5)).await;
    let subs = Subscriptions::new(client.clone());
    subs.subscribe("t", "s", earliest()).await.unwrap();
    let group = SubscriptionOptions {
        group: true,
        ..earliest()
    };
    subs.subscribe("t", "g", group.clone()).await.unwrap();
    assert_eq!(read_values(&subs, "s", 5).await.len(), 5);
    let mut stream = subs.stream("s", "", 10).await.unwrap();
    let admin = Admin::new(client.clone());

    // A topic deleted for good: its subscription goes once the topic stays missing.
    create(&client, "u", 1).await;
    subs.subscribe("u", "su", earliest()).await.unwrap();
    let mut gone_stream = subs.stream("su", "", 10).await.unwrap();
    admin.delete_topic("u").await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(30), gone_stream.next_record())
        .await
        .expect("the stream ends once its topic is deleted")
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound), "{error}");
    assert!(error.to_string().contains("\"u\" was deleted"), "{error}");

    admin.delete_topic("t").await.unwrap();
    create(&client, "t", 1).await;
    produce(&client, "t", 0, &values("new", 3)).await;

    // The old subscription never delivers the new topic's records.
    let error = match tokio::time::timeout(Duration::from_secs(30), stream.next_record())
        .await
        .expect("the stream ends once its topic is deleted")
    {
        Ok(Some(record)) => panic!("old subscription delivered {}", value(&record)),
        Ok(None) => panic!("stream ended without an error"),
        Err(e) => e,
    };
    assert_eq!(error.code(), Some(tonic::Code::NotFound), "{error}");
    let read = subs
        .read("s", "", 0, 10, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(read.code(), Some(tonic::Code::NotFound), "{read}");
    // Both subscriptions (the group too) went with the topic.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = pubsub_json(&server, &["subscriptions"]);
        if listed == serde_json::json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The name is free again, and a new subscription reads the new topic from its start.
    subs.subscribe("t", "s", earliest()).await.unwrap();
    let got: Vec<String> = read_values(&subs, "s", 3).await.iter().map(value).collect();
    assert_eq!(got, values("new", 3));
    subs.subscribe("t", "g", group).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_above_the_partition_end_is_reset_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "t", 1).await;
    produce(&client, "t", 0, &values("lost", 5)).await;
    let subs = Subscriptions::new(client.clone());
    subs.subscribe("t", "s", earliest()).await.unwrap();
    assert_eq!(read_values(&subs, "s", 5).await.len(), 5);

    // The broker loses the partition's data (a replaced disk): the same topic now
    // ends below the subscription's committed offset.
    server.kill9();
    std::fs::remove_dir_all(server.data_dir().join("broker").join("t-0")).unwrap();
    server.restart();
    let client = Client::connect(server.address()).await.unwrap();
    produce(&client, "t", 0, &values("after", 2)).await;

    let subs = Subscriptions::new(client);
    let got: Vec<String> = read_values(&subs, "s", 2).await.iter().map(value).collect();
    assert_eq!(got, values("after", 2));
    let info = &subs.list("", "s").await.unwrap()[0];
    assert_eq!(info.partitions[0].committed_offset, 2);
    assert_eq!(info.partitions[0].lag, Some(0));
}

//! More of the consumer manager over real `pubsubd` processes: retention per
//! subscriber, keep-until-consumed deletion, presence, dead letters, group
//! generations, `subscribe --count` (and the records a leaving subscriber leaves
//! leased), the `consumer-manager` role in a cluster, seek, and a following
//! subscriber across a server restart.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pubsub_client::{
    Admin, Client, Consumer, ConsumerConfig, NewTopic, PartitionId, ProducerConfig, ProducerRecord,
    StartPosition, SubscriptionOptions, Subscriptions, TopicConfig,
};
use pubsub_proto::v1;
use pubsub_tests::{Server, binary, pubsub};

use crate::consumer::{collect_lines, create, earliest, ids, keyed, produce, read_n, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_retention_skips_old_records_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "aged", 1, TopicConfig::default()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut records: Vec<ProducerRecord> = (0..50)
        .map(|i| ProducerRecord {
            timestamp: Some(now - 2 * 3600 * 1000),
            ..ProducerRecord::value(format!("old-{i}"))
        })
        .collect();
    records.extend((0..50).map(|i| ProducerRecord::value(format!("new-{i}"))));
    produce(&client, "aged", ProducerConfig::default(), records).await;
    let subs = Subscriptions::new(client.clone());
    let options = SubscriptionOptions {
        retention_ms: 3600 * 1000,
        ..earliest()
    };
    subs.subscribe("aged", "recent", options).await.unwrap();
    let response = subs
        .read("recent", "", 0, 1000, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(response.skipped.len(), 1, "{:?}", response.skipped);
    let skip = &response.skipped[0];
    assert_eq!((skip.from_offset, skip.to_offset), (0, 50));
    assert_eq!(skip.reason, "subscription retention");
    let values: Vec<String> = response.records.iter().map(value).collect();
    assert_eq!(
        values,
        (0..50).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    subs.ack("recent", "", 0, &ids(&response.records))
        .await
        .unwrap();
    let info = subs.list("", "recent").await.unwrap();
    assert_eq!(info[0].partitions[0].committed_offset, 100);
    assert_eq!(info[0].partitions[0].lag, Some(0));
}

async fn log_start(client: &Client, topic: &str) -> u64 {
    Consumer::new(client.clone(), topic, ConsumerConfig::default())
        .offset_of(PartitionId(0), StartPosition::Earliest)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_until_consumed_deletes_only_what_every_subscription_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--cleanup-interval", "200ms"]);
    let client = Client::connect(server.address()).await.unwrap();
    let config = TopicConfig {
        segment_bytes: Some(4096),
        max_message_bytes: Some(4096),
        retain_until_consumed: Some(true),
        ..TopicConfig::default()
    };
    create(&client, "kept", 1, config).await;
    let subs = Subscriptions::new(client.clone());
    subs.subscribe("kept", "fast", earliest()).await.unwrap();
    subs.subscribe("kept", "slow", earliest()).await.unwrap();
    let producer_config = ProducerConfig {
        batch_bytes: 1024,
        ..ProducerConfig::default()
    };
    let records = (0..400)
        .map(|i| ProducerRecord::value(format!("{i:0>100}")))
        .collect();
    produce(&client, "kept", producer_config, records).await;

    let fast = read_n(&subs, "fast", 400).await;
    subs.ack("fast", "", 0, &ids(&fast)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        log_start(&client, "kept").await,
        0,
        "slow has consumed nothing yet"
    );

    let slow = read_n(&subs, "slow", 400).await;
    let mut sorted = ids(&slow);
    sorted.sort();
    subs.ack("slow", "", 0, &sorted[..200]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let start = loop {
        let start = log_start(&client, "kept").await;
        if start > 0 {
            break start;
        }
        assert!(
            Instant::now() < deadline,
            "consumed segments were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        start <= 200,
        "deleted past what slow consumed: log start {start}"
    );

    // History names the removed range instead of hiding it.
    let history = subs
        .history(v1::HistoryRequest {
            topic: "kept".into(),
            partition: None,
            range: Some(v1::history_request::Range::SinceOffset(0)),
            max_records: 0,
        })
        .await
        .unwrap();
    assert_eq!(history[0].requested_from, 0);
    assert_eq!(history[0].log_start_offset, start);
    assert_eq!(history[0].records.first().map(|r| r.offset), Some(start));
    assert_eq!(history[0].records.len() as u64, 400 - start);

    subs.ack("slow", "", 0, &sorted[200..]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_start(&client, "kept").await <= 200 {
        assert!(
            Instant::now() < deadline,
            "fully consumed segments were kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shows_a_reader_and_drops_it_after_the_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "watched", 2, TopicConfig::default()).await;
    let subs = Subscriptions::new(client.clone());
    let options = SubscriptionOptions {
        session_timeout_ms: 1_000,
        ..earliest()
    };
    subs.subscribe("watched", "viewer", options).await.unwrap();
    subs.read("viewer", "reader-1", 0, 10, Duration::ZERO)
        .await
        .unwrap();
    let members = subs.presence("watched", "").await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].member_id, "reader-1");
    assert_eq!(members[0].mode, "pull");
    assert!(members[0].client_address.starts_with("127.0.0.1:"));

    let output = pubsub(server.address(), &["presence", "watched"], b"");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("reader-1"),
        "{text}"
    );

    let silent = Instant::now();
    while !subs.presence("watched", "").await.unwrap().is_empty() {
        assert!(
            silent.elapsed() < Duration::from_secs(3),
            "a silent reader stayed present past its 1 s session timeout + 2 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_counts_survive_a_restart_and_dead_letters_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "work", 1, TopicConfig::default()).await;
    produce(
        &client,
        "work",
        ProducerConfig::default(),
        vec![ProducerRecord::value("poison")],
    )
    .await;
    let subs = Subscriptions::new(client.clone());
    let options = SubscriptionOptions {
        max_deliveries: 2,
        ..earliest()
    };
    subs.subscribe("work", "handler", options).await.unwrap();
    let first = read_n(&subs, "handler", 1).await;
    assert_eq!(first[0].delivery_attempt, 1);

    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    let subs = Subscriptions::new(client.clone());
    let second = read_n(&subs, "handler", 1).await;
    assert_eq!(second[0].delivery_attempt, 2, "the count survived kill -9");
    subs.nack("handler", "", 0, &ids(&second)).await.unwrap();
    let third = subs
        .read("handler", "", 0, 10, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(
        third.records.is_empty(),
        "past max_deliveries it is not delivered"
    );
    let info = subs.list("", "handler").await.unwrap();
    assert_eq!(info[0].dead_lettered, 1);
    assert_eq!(
        info[0].partitions[0].committed_offset, 1,
        "dead-lettered counts as acked"
    );
    let dead = subs
        .history(v1::HistoryRequest {
            topic: "work.handler.dlq".into(),
            partition: None,
            range: Some(v1::history_request::Range::SinceOffset(0)),
            max_records: 0,
        })
        .await
        .unwrap();
    assert_eq!(dead[0].records.len(), 1);
    assert_eq!(value(&dead[0].records[0]), "poison");

    let output = pubsub(
        server.address(),
        &["dlq", "replay", "--subscription", "handler"],
        b"",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 1"));
    let back = read_n(&subs, "handler", 1).await;
    assert_eq!(value(&back[0]), "poison");
    assert_eq!((back[0].offset, back[0].delivery_attempt), (1, 1));
    // Replayed once only.
    let output = pubsub(
        server.address(),
        &["dlq", "replay", "--subscription", "handler"],
        b"",
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_generation_is_refused_and_owners_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "tasks", 4, TopicConfig::default()).await;
    let subs = Subscriptions::new(client.clone());
    let options = SubscriptionOptions {
        group: true,
        ..earliest()
    };
    subs.subscribe("tasks", "crew", options).await.unwrap();
    let one = subs.join("crew", "one").await.unwrap();
    assert_eq!(one.partitions, vec![0, 1, 2, 3]);
    let two = subs.join("crew", "two").await.unwrap();
    assert!(two.generation > one.generation);

    let stale = subs
        .read("crew", "one", one.generation, 10, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(
        stale.code(),
        Some(tonic::Code::FailedPrecondition),
        "{stale}"
    );
    assert!(stale.to_string().contains("stale"), "{stale}");
    let stale_ack = subs
        .ack("crew", "one", one.generation, &[(0, 0)])
        .await
        .unwrap_err();
    assert_eq!(stale_ack.code(), Some(tonic::Code::FailedPrecondition));

    let one = subs.join("crew", "one").await.unwrap();
    assert_eq!(one.generation, two.generation);
    let mut owned: Vec<u32> = one
        .partitions
        .iter()
        .chain(&two.partitions)
        .copied()
        .collect();
    owned.sort();
    assert_eq!(
        owned,
        vec![0, 1, 2, 3],
        "each partition has exactly one owner"
    );

    let not_joined = subs
        .read("crew", "stranger", two.generation, 10, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(not_joined.code(), Some(tonic::Code::FailedPrecondition));
}

#[test]
fn subscribe_count_prints_acks_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let created = pubsub(
        server.address(),
        &["create", "lines", "--partitions", "2"],
        b"",
    );
    assert!(created.status.success());
    let wrote = pubsub(server.address(), &["write", "lines"], b"a\nb\nc\n");
    assert!(wrote.status.success());
    let args = [
        "subscribe",
        "lines",
        "-s",
        "cli",
        "--from-beginning",
        "--count",
        "3",
    ];
    let output = pubsub(server.address(), &args, b"");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["a", "b", "c"]);
    // All three were acknowledged: the subscription has no lag.
    let listed = pubsub(
        server.address(),
        &["subscriptions", "lines", "-o", "json"],
        b"",
    );
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json[0]["lag"], 0, "{json}");
    let history = pubsub(server.address(), &["history", "lines", "--last", "5"], b"");
    assert_eq!(String::from_utf8_lossy(&history.stdout).lines().count(), 3);
    let missing = pubsub(
        server.address(),
        &["unsubscribe", "lines", "-s", "nope"],
        b"",
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

/// A subscriber with `--count 5` acks its last records and leaves: what the credits
/// those acks freed leased meanwhile never reached it, so it is given back at once and
/// the subscription's next subscriber gets it, in order, as first deliveries.
#[test]
fn records_leased_for_a_subscriber_that_left_come_next_as_first_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let run = |args: &[&str], stdin: &[u8]| {
        let output = pubsub(server.address(), args, stdin);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    run(&["create", "m", "--partitions", "1"], b"");
    let lines: String = (1..=200).map(|i| format!("{i}\n")).collect();
    run(&["write", "m"], lines.as_bytes());
    let subscriptions = ["s1", "s2", "s3", "s4", "s5", "s6"];
    for s in subscriptions {
        let args = [
            "subscribe",
            "m",
            "-s",
            s,
            "--from-beginning",
            "--count",
            "5",
        ];
        run(&args, b"");
    }
    for s in subscriptions {
        let args = [
            "subscribe",
            "m",
            "-s",
            s,
            "--count",
            "10",
            "--format",
            "json",
        ];
        let output = run(&args, b"");
        let got: Vec<(u64, u64)> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).unwrap();
                let field = |name: &str| json[name].as_u64().unwrap_or_else(|| panic!("{json}"));
                (field("offset"), field("delivery_attempt"))
            })
            .collect();
        let expected: Vec<(u64, u64)> = (5..15).map(|offset| (offset, 1)).collect();
        assert_eq!(
            got, expected,
            "subscription {s}: (offset, delivery_attempt)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_manager_role_follows_partition_leaders_in_a_cluster() {
    let mut cluster = pubsub_tests::Cluster::start("2s");
    crate::cluster::wait_for_brokers(&cluster).await;
    let consumers = crate::consumer_failover::consumer_manager(&cluster, "consumer-manager");
    // Its own server lists, by reflection, exactly what it serves.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", consumers.address()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let services = crate::grpc::reflected_services(channel).await;
    assert!(
        services.contains(&"pubsub.v1.ConsumerManager".to_string()),
        "{services:?}"
    );
    assert!(
        !services.contains(&"pubsub.v1.Broker".to_string()),
        "{services:?}"
    );
    let bootstrap = cluster.brokers[0].address().to_string();
    let client = Client::connect(&bootstrap).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "orders".into(),
            partitions: 3,
            replication_factor: 3,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    let lines = |from: u32, to: u32| -> Vec<u8> {
        (from..to)
            .map(|i| format!("order-{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let subscribe = |count: &str| {
        let args = [
            "--consumer-manager",
            consumers.address(),
            "subscribe",
            "orders",
            "-s",
            "shipping",
            "--from-beginning",
            "--count",
            count,
        ];
        let output = pubsub(&bootstrap, &args, b"");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut values: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        values.sort();
        values
    };
    assert!(
        pubsub(&bootstrap, &["write", "orders"], &lines(0, 300))
            .status
            .success()
    );
    let mut expected: Vec<String> = (0..300).map(|i| format!("order-{i}")).collect();
    expected.sort();
    assert_eq!(subscribe("300"), expected);

    // The broker the consumer manager bootstraps from dies (it leads partitions too):
    // the subscription goes on through another broker and the new leaders.
    cluster.brokers[0].kill9();
    let bootstrap = cluster.brokers[1].address().to_string();
    assert!(
        pubsub(&bootstrap, &["write", "orders"], &lines(300, 600))
            .status
            .success()
    );
    let mut expected: Vec<String> = (300..600).map(|i| format!("order-{i}")).collect();
    expected.sort();
    assert_eq!(
        subscribe("300"),
        expected,
        "exactly the new records, none again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_moves_a_subscription_back_forward_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "replay", 1, TopicConfig::default()).await;
    let records = (0..5)
        .map(|i| ProducerRecord::value(format!("r-{i}")))
        .collect();
    produce(&client, "replay", ProducerConfig::default(), records).await;
    let subs = Subscriptions::new(client.clone());
    subs.subscribe("replay", "again", earliest()).await.unwrap();
    let first = read_n(&subs, "again", 5).await;
    subs.ack("again", "", 0, &ids(&first)).await.unwrap();

    use v1::seek_request::Target;
    subs.seek("again", None, Target::Earliest(true))
        .await
        .unwrap();
    let replayed = read_n(&subs, "again", 5).await;
    let offsets: Vec<u64> = replayed.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        vec![0, 1, 2, 3, 4],
        "everything again after seeking to the start"
    );

    let moved = subs
        .seek("again", Some(0), Target::Offset(3))
        .await
        .unwrap();
    assert_eq!(moved[0].committed_offset, 3);
    let tail = read_n(&subs, "again", 2).await;
    assert_eq!(
        tail.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![3, 4]
    );

    let beyond = subs
        .seek("again", Some(0), Target::Offset(99))
        .await
        .unwrap_err();
    assert_eq!(
        beyond.code(),
        Some(tonic::Code::InvalidArgument),
        "{beyond}"
    );
    assert!(beyond.to_string().contains("0 to 5"), "{beyond}");

    let future = i64::MAX / 2;
    subs.seek("again", None, Target::TimestampMs(future))
        .await
        .unwrap();
    let none = subs
        .read("again", "", 0, 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        none.records.is_empty(),
        "a seek past the newest record reads nothing old"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_subscriber_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = Client::connect(server.address()).await.unwrap();
    create(&client, "feed", 2, TopicConfig::default()).await;
    let subs = Subscriptions::new(client.clone());
    subs.subscribe("feed", "reader", earliest()).await.unwrap();
    let mut child = Command::new(binary("pubsub"))
        .args([
            "--server",
            server.address(),
            "subscribe",
            "feed",
            "-s",
            "reader",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let lines = collect_lines(&mut child, |line| line);
    let wait_for = |count: usize| {
        let lines = lines.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let seen: HashSet<String> = lines.lock().unwrap().iter().cloned().collect();
                if seen.len() >= count {
                    return seen;
                }
                assert!(
                    Instant::now() < deadline,
                    "subscriber printed {} of {count}",
                    seen.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    produce(
        &client,
        "feed",
        ProducerConfig::default(),
        keyed(0..10, "before"),
    )
    .await;
    wait_for(10).await;

    server.restart_after_kill9();
    let client = Client::connect(server.address()).await.unwrap();
    produce(
        &client,
        "feed",
        ProducerConfig::default(),
        keyed(10..20, "after"),
    )
    .await;
    let seen = wait_for(20).await;
    let expected: HashSet<String> = (0..10)
        .map(|i| format!("before-{i}"))
        .chain((10..20).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(seen, expected);
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(said.contains("reconnecting"), "{said}");
    assert!(
        !said.contains("producer"),
        "a subscriber is not a producer: {said}"
    );
}

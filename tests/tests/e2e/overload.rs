//! Overload: far more producers than one broker can serve, each sending as fast as it
//! can. The server's memory must stay bounded (HTTP/2 flow control holds each
//! connection to its window: nothing queues without limit), acknowledgements slow down
//! instead of failing, and the server keeps serving afterwards. Figures are printed;
//! only the memory bound and the outcomes are asserted.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pubsub_tests::{Server, binary, pubsub};

/// Bench processes, each with `PRODUCERS` producers on connections of their own.
const PROCESSES: usize = 2;
const PRODUCERS: &str = "32";
/// Far above the about 1 MiB of window per producing connection plus the server's own
/// footprint; a server that queued requests without limit would pass it.
const HEAP_LIMIT_BYTES: u64 = 1 << 30;

/// The process's anonymous resident memory (its heap), from /proc.
fn heap_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts one `pubsub bench produce` process against `server` for `duration`, at the
/// lowest CPU priority, so that the tests running beside this one keep their share.
fn start_bench(server: &Server, duration: &str) -> std::process::Child {
    Command::new("nice")
        .args(["-n", "19"])
        .arg(binary("pubsub"))
        .args(["--server", server.address(), "--output", "json", "bench"])
        .args(["produce", "--topic", "overload", "--producers", PRODUCERS])
        .args(["--record-size", "1024", "--max-in-flight", "8"])
        .args(["--duration", duration])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn many_producers_get_slow_acks_and_the_server_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let created = pubsub(
        server.address(),
        &["create", "overload", "--partitions", "4"],
        b"",
    );
    assert!(created.status.success());
    let pid = server.pid().unwrap();
    let reniced = Command::new("renice")
        .args(["-n", "19", "-p", &pid.to_string()])
        .output()
        .unwrap();
    assert!(reniced.status.success());
    let idle = heap_bytes(pid).unwrap();

    let benches: Vec<_> = (0..PROCESSES).map(|_| start_bench(&server, "8s")).collect();
    let start = Instant::now();
    let mut peak = idle;
    while start.elapsed() < Duration::from_secs(9) {
        peak = peak.max(heap_bytes(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    let outputs: Vec<Output> = benches
        .into_iter()
        .map(|b| b.wait_with_output().unwrap())
        .collect();
    let mut records = 0;
    for output in &outputs {
        assert!(
            output.status.success(),
            "every send is acknowledged, however slowly: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        records += report["records"].as_u64().unwrap();
        println!(
            "{PRODUCERS} producers: {} records, p99 {} ms, max {} ms",
            report["records"], report["latency"]["p99_ms"], report["latency"]["max_ms"]
        );
    }
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "{} producers, {records} records acknowledged; server heap {:.0} MiB idle, {:.0} MiB at peak",
        PROCESSES * 32,
        mib(idle),
        mib(peak)
    );
    assert!(records > 0);
    assert!(
        peak < HEAP_LIMIT_BYTES,
        "server heap reached {:.0} MiB",
        mib(peak)
    );
    // Still serving.
    let after = pubsub(
        server.address(),
        &["write", "overload", "--partition", "0"],
        b"after the storm\n",
    );
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// Push subscribers that never read: each grants far more credits than the backlog
/// holds, opens its stream and reads nothing. What the server holds for them must
/// stay bounded by its delivery step, its outbound queue and HTTP/2 flow control, not
/// grow with the backlog; other subscribers are still served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_hold_bounded_server_memory() {
    const STREAMS: usize = 8;
    const BACKLOG_RECORDS: &str = "100000";
    /// The backlog is 100 MB; holding it for every stream would take 800 MB.
    const GROWTH_LIMIT_BYTES: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let pid = server.pid().unwrap();
    let args = ["bench", "produce", "--topic", "backlog", "--create"];
    let more = ["--partitions", "4", "--record-size", "1024"];
    let filled = pubsub(
        server.address(),
        &[&args[..], &more[..], &["--records", BACKLOG_RECORDS]].concat(),
        b"",
    );
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stderr)
    );
    let client = pubsub_client::Client::connect(server.address())
        .await
        .unwrap();
    let subs = pubsub_client::Subscriptions::new(client);
    let earliest = || pubsub_proto::v1::SubscriptionOptions {
        start: Some(pubsub_proto::v1::subscription_options::Start::Earliest(
            true,
        )),
        ..Default::default()
    };
    for n in 0..=STREAMS {
        subs.subscribe("backlog", &format!("s{n}"), earliest())
            .await
            .unwrap();
    }
    let before = heap_bytes(pid).unwrap();
    // Each on a connection of its own, as separate subscriber processes would be: an
    // unread stream holds its connection's HTTP/2 window, which calls sharing that
    // connection would wait behind.
    let mut streams = Vec::new();
    for n in 0..STREAMS {
        let own = pubsub_client::Client::connect(server.address())
            .await
            .unwrap();
        let own = pubsub_client::Subscriptions::new(own);
        let name = format!("s{n}");
        streams.push(own.stream(&name, "", 1_000_000).await.unwrap());
    }
    let mut peak = before;
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(6) {
        peak = peak.max(heap_bytes(pid).unwrap_or(0));
        // Another subscriber, reading and acking, is served all along.
        let read = subs
            .read(
                &format!("s{STREAMS}"),
                "",
                0,
                200,
                Duration::from_millis(200),
            )
            .await
            .unwrap();
        let ids: Vec<(u32, u64)> = read
            .records
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        served += ids.len();
        subs.ack(&format!("s{STREAMS}"), "", 0, &ids).await.unwrap();
    }
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "{STREAMS} push streams of 1,000,000 credits never read over a 100 MB backlog: \
         server heap {:.0} MiB before, {:.0} MiB at peak; another subscriber read {served} \
         records meanwhile",
        mib(before),
        mib(peak)
    );
    assert!(served > 0, "the reading subscriber was starved");
    assert!(
        peak.saturating_sub(before) < GROWTH_LIMIT_BYTES,
        "server heap grew {:.0} MiB for subscribers that read nothing",
        mib(peak - before)
    );
    drop(streams);
    let after = pubsub(
        server.address(),
        &["write", "backlog", "--partition", "0"],
        b"after\n",
    );
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// A listener at its connection cap answers the next client RESOURCE_EXHAUSTED with
/// the cap in the message (not a hang or a reset), and admits again once a
/// connection closes. The standalone server's own parts hold some of the places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_connection_cap_is_told_so_and_admitted_once_a_place_frees() {
    const CAP: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let cap = CAP.to_string();
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &["--max-connections", &cap]);
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() <= CAP,
            "{} clients connected past a cap of {CAP}",
            held.len()
        );
        let client = match pubsub_client::Client::connect(server.address()).await {
            Ok(client) => client,
            Err(e) => break e,
        };
        match pubsub_client::Admin::new(client.clone())
            .list_topics()
            .await
        {
            Ok(_) => held.push(client),
            Err(e) => break e,
        }
    };
    println!(
        "cap {CAP}: {} clients held, the next refused: {refused}",
        held.len()
    );
    assert_eq!(
        refused.code(),
        Some(tonic::Code::ResourceExhausted),
        "{refused}"
    );
    assert!(refused.to_string().contains("at most 16"), "{refused}");
    assert!(!held.is_empty(), "no client got in");

    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = async {
            let client = pubsub_client::Client::connect(server.address()).await?;
            pubsub_client::Admin::new(client).list_topics().await
        };
        match attempt.await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no place came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Kafka listener keeps the same cap; a Kafka client gets no gRPC answer, so a
/// connection over it is closed at once (the client reconnects with its backoff),
/// and those within it stay open.
#[test]
fn the_kafka_listener_closes_a_connection_over_the_cap() {
    use std::io::Read;
    const CAP: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let cap = CAP.to_string();
    let (_server, kafka) = crate::kafka::start(dir.path(), &["--max-connections", &cap]);
    let open = |timeout: Duration| {
        let mut stream = std::net::TcpStream::connect(&kafka).unwrap();
        stream.set_read_timeout(Some(timeout)).unwrap();
        // 0 bytes read: closed by the server; a timeout: held open.
        let closed = matches!(stream.read(&mut [0u8; 1]), Ok(0));
        (stream, closed)
    };
    let held: Vec<_> = (0..CAP).map(|_| open(Duration::from_millis(300))).collect();
    assert!(
        held.iter().all(|(_, closed)| !closed),
        "a connection within the cap was closed"
    );
    let (_, closed) = open(Duration::from_secs(5));
    assert!(closed, "a connection over the cap of {CAP} was kept");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open(Duration::from_millis(300)).1 {
        assert!(
            Instant::now() < deadline,
            "no place came back after the others closed"
        );
    }
}

//! The Prometheus endpoint end to end: a standalone server scraped while records are
//! produced, fetched and consumed through a subscription; the series move.

use std::collections::HashMap;
use std::io::{Read, Write};

use pubsub_tests::{Server, free_port, pubsub};

/// One scrape of `/metrics`, as series (name with labels) to value.
fn scrape(address: &str) -> HashMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

fn value(series: &HashMap<String, f64>, name: &str) -> f64 {
    *series.get(name).unwrap_or_else(|| {
        panic!(
            "no series {name} in {:?}",
            series.keys().collect::<Vec<_>>()
        )
    })
}

fn ok(server: &Server, args: &[&str], stdin: &[u8]) {
    let out = pubsub(server.address(), args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A standalone server with its metrics on a free port, and that address.
fn start_scraped(dir: &std::path::Path) -> (Server, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let env = vec![("PUBSUB_METRICS_LISTEN".into(), metrics.clone())];
    (
        Server::start_with_env(dir, "127.0.0.1:0", &[], env),
        metrics,
    )
}

#[test]
fn metrics_move_with_produce_fetch_and_a_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_scraped(dir.path());
    ok(&server, &["create", "m"], b"");
    let lines: String = (0..100).map(|i| format!("v{i}\n")).collect();
    ok(&server, &["write", "m"], lines.as_bytes());
    let before = scrape(&metrics);
    ok(&server, &["write", "m"], lines.as_bytes());
    ok(&server, &["read", "m"], b"");
    let read = scrape(&metrics);
    ok(
        &server,
        &[
            "subscribe",
            "m",
            "--subscription",
            "s",
            "--from-beginning",
            "--count",
            "5",
        ],
        b"",
    );
    // The gauges are set every few seconds.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let after = scrape(&metrics);

    let produced = r#"pubsub_produced_records_total{topic="m"}"#;
    assert_eq!(value(&before, produced), 100.0);
    assert_eq!(value(&after, produced), 200.0);
    assert!(value(&after, r#"pubsub_produced_bytes_total{topic="m"}"#) > 0.0);
    assert!(value(&after, r#"pubsub_fetched_records_total{topic="m"}"#) >= 200.0);
    assert!(
        value(
            &after,
            r#"pubsub_request_duration_seconds_count{rpc="produce"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &after,
            r#"pubsub_request_duration_seconds_count{rpc="fetch"}"#
        ) >= 1.0
    );
    // The standalone consumer manager reads the broker's log in process: its reads
    // are counted as fetched records, and no Fetch call is made for them.
    let fetch_calls = r#"pubsub_request_duration_seconds_count{rpc="fetch"}"#;
    assert_eq!(value(&after, fetch_calls), value(&read, fetch_calls));
    let fetched = r#"pubsub_fetched_records_total{topic="m"}"#;
    assert!(value(&after, fetched) >= value(&read, fetched) + 5.0);
    assert!(value(&after, "pubsub_fsync_duration_seconds_count") >= 2.0);
    assert!(value(&after, r#"pubsub_log_size_bytes{topic="m",partition="0"}"#) > 0.0);
    assert_eq!(
        value(&after, r#"pubsub_log_segments{topic="m",partition="0"}"#),
        1.0
    );
    assert_eq!(
        value(&after, "pubsub_broker_under_replicated_partitions"),
        0.0
    );
    assert!(value(&after, "pubsub_raft_term") >= 1.0);
    assert_eq!(value(&after, "pubsub_raft_is_leader"), 1.0);
    assert!(
        value(&after, "pubsub_raft_commit_index") >= value(&before, "pubsub_raft_commit_index")
    );
    assert_eq!(value(&after, r#"pubsub_brokers{state="alive"}"#), 1.0);
    assert_eq!(value(&after, r#"pubsub_brokers{state="fenced"}"#), 0.0);
    assert_eq!(value(&after, "pubsub_partitions_offline"), 0.0);
    assert_eq!(value(&after, "pubsub_partitions_under_replicated"), 0.0);
    assert!(
        value(
            &after,
            r#"pubsub_subscription_delivered_records_total{subscription="s"}"#
        ) >= 5.0
    );
    assert!(
        value(
            &after,
            r#"pubsub_subscription_acked_records_total{subscription="s"}"#
        ) >= 5.0
    );
    let lag = value(
        &after,
        r#"pubsub_subscription_lag_records{subscription="s",topic="m"}"#,
    );
    assert!((190.0..=195.0).contains(&lag), "lag {lag}");
    // The subscriber acked 5 and left. Records it was sent while closing (and threw
    // away) are released when it leaves and wait as redeliveries: at most its 5 credits.
    let unacked = value(
        &after,
        r#"pubsub_subscription_unacked_records{subscription="s",topic="m"}"#,
    );
    assert!(
        (0.0..=5.0).contains(&unacked),
        "at most the credits stay leased: {unacked}"
    );
}

/// Every metric the Grafana dashboard in `deploy/grafana` queries exists in a scrape
/// of a server that served a produce, a fetch and a subscription.
#[test]
fn the_dashboard_queries_only_series_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = start_scraped(dir.path());
    ok(&server, &["create", "d"], b"");
    ok(&server, &["write", "d", "one", "two"], b"");
    ok(
        &server,
        &[
            "subscribe",
            "d",
            "--subscription",
            "s",
            "--from-beginning",
            "--count",
            "1",
        ],
        b"",
    );
    std::thread::sleep(std::time::Duration::from_secs(6));
    let scraped = scrape(&metrics);
    let dashboard = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/pubsub.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("pubsub_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            !scraped
                .keys()
                .any(|series| series == *name || series.starts_with(&format!("{name}{{")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series no scrape has: {missing:?}"
    );
}

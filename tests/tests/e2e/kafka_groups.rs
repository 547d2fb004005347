//! Kafka consumer groups, served by the consumer manager: a confluent-kafka group of
//! three members shares six partitions, one leaves midway and the other two take its
//! partitions over with nothing lost; the group's committed offsets are the
//! subscription's, as `pubsub groups describe` shows, and a `pubsub subscribe
//! --group` of the same name carries on from them.

use std::collections::HashSet;

use pubsub_tests::pubsub;
use serde_json::Value;

use crate::kafka::{clients_present, json_lines, ok, python, start};

/// The partitions of each member in a summary's assignment map.
fn owned(assignments: &Value) -> Vec<Vec<u64>> {
    assignments
        .as_object()
        .unwrap()
        .values()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect()
        })
        .collect()
}

fn covers_all_six(members: &[Vec<u64>]) -> bool {
    let all: HashSet<u64> = members.iter().flatten().copied().collect();
    let count: usize = members.iter().map(Vec::len).sum();
    all.len() == 6 && count == 6
}

#[test]
fn a_confluent_group_shares_partitions_and_survives_a_member_leaving() {
    let dir = tempfile::tempdir().unwrap();
    if !clients_present("kafka_group") {
        return;
    }
    let (server, kafka) = start(dir.path(), &[]);
    let grpc = server.address();
    ok(
        pubsub(grpc, &["create", "shared", "--partitions", "6"], b""),
        "create",
    );
    let summary = python("group", &kafka, "shared", "3000");
    println!("kafka group: {summary}");
    assert_eq!(summary["acked"], 3000, "{summary}");
    assert_eq!(
        summary["stable"], true,
        "three members each held two partitions: {summary}"
    );
    let before = owned(&summary["before"]);
    assert_eq!(before.len(), 3, "{summary}");
    assert!(covers_all_six(&before), "{summary}");
    let after = owned(&summary["after"]);
    assert_eq!(after.len(), 2, "{summary}");
    assert!(
        covers_all_six(&after),
        "the two left own every partition: {summary}"
    );
    assert!(
        summary["taken_over"].as_u64().unwrap() > 0,
        "the leaver's partitions were read on by the others: {summary}"
    );
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["distinct"], 3000, "no record lost: {summary}");

    // The group is the consumer manager's subscription: its commits are there.
    let described = ok(
        pubsub(
            grpc,
            &["--output", "json", "groups", "describe", "kgroup"],
            b"",
        ),
        "groups describe",
    );
    let described: Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["topic"], "shared");
    assert_eq!(described["group"], true);
    assert_eq!(described["lag"], 0, "every record committed: {described}");

    // A `pubsub subscribe --group` of the same name goes on from the Kafka commits.
    ok(
        pubsub(grpc, &["write", "shared"], b"late-1\nlate-2\nlate-3\n"),
        "write",
    );
    let read = json_lines(&ok(
        pubsub(
            grpc,
            &[
                "subscribe",
                "shared",
                "--subscription",
                "kgroup",
                "--group",
                "--count",
                "3",
                "--format",
                "json",
            ],
            b"",
        ),
        "subscribe --group",
    ));
    let values: HashSet<&str> = read.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, HashSet::from(["late-1", "late-2", "late-3"]));
}

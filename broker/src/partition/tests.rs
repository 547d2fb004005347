//! Unit tests of the partition replica: high watermark, roles and commit waits.
use std::time::Duration;

use super::*;
use pubsub_storage::{BatchBuilder, Compression, FsyncPolicy, LogConfig, ProducerStamp};

fn partition(dir: &std::path::Path) -> Partition {
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let disk = Arc::new(DiskSpace::new(dir.to_path_buf(), 0));
    Partition::new(Log::open(dir, config).unwrap(), "t", 0, 1, disk)
}

fn batch(records: u32) -> Bytes {
    let mut builder = BatchBuilder::new();
    for _ in 0..records {
        builder.push(0, None, Some(b"v"), &[]);
    }
    Bytes::from(
        builder
            .build(Compression::None, ProducerStamp::NONE)
            .unwrap()
            .unwrap(),
    )
}

fn leader_of(isr: &[u32]) -> Role {
    Role {
        leader: Some(1),
        leader_epoch: 1,
        replicas: vec![1, 2, 3],
        in_sync_replicas: isr.to_vec(),
        leader_address: None,
        adding: Vec::new(),
    }
}

#[tokio::test]
async fn the_high_watermark_is_the_smallest_in_sync_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let partition = partition(dir.path());
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    partition.append(vec![batch(10)]).await.unwrap();
    assert_eq!(
        partition.high_watermark(),
        0,
        "no follower has the records yet"
    );
    partition.record_follower(2, 10);
    assert_eq!(
        partition.high_watermark(),
        0,
        "follower 3 is in sync and has nothing"
    );
    partition.record_follower(3, 4);
    assert_eq!(partition.high_watermark(), 4);
    partition.set_role(leader_of(&[1, 2])).unwrap();
    partition.record_follower(2, 10);
    assert_eq!(partition.high_watermark(), 10, "3 left the ISR");
    partition.record_follower(2, 7);
    assert_eq!(
        partition.high_watermark(),
        10,
        "the high watermark never goes back"
    );
}

#[tokio::test]
async fn a_replica_a_move_adds_is_tracked_without_a_new_term_and_one_removed_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let partition = partition(dir.path());
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    partition.append(vec![batch(10)]).await.unwrap();
    partition.record_follower(2, 10);
    partition
        .set_role(Role {
            replicas: vec![4, 2, 3, 1],
            adding: vec![4],
            ..leader_of(&[1, 2, 3])
        })
        .unwrap();
    partition.record_follower(4, 10);
    let followers = partition.followers();
    assert_eq!(
        followers[&4].log_end_offset, 10,
        "the new replica's progress counts"
    );
    assert_eq!(followers[&2].log_end_offset, 10, "the others keep theirs");
    partition
        .set_role(Role {
            replicas: vec![1, 2, 4],
            ..leader_of(&[1, 2, 4])
        })
        .unwrap();
    assert!(
        !partition.followers().contains_key(&3),
        "3 left the replicas"
    );
}

#[tokio::test]
async fn a_follower_takes_the_leaders_high_watermark_capped_by_its_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let partition = partition(dir.path());
    partition
        .set_role(Role {
            leader: Some(2),
            leader_epoch: 1,
            replicas: vec![1, 2],
            in_sync_replicas: vec![1, 2],
            leader_address: Some("b2:9392".into()),
            adding: Vec::new(),
        })
        .unwrap();
    partition.follow_high_watermark(50);
    assert_eq!(partition.high_watermark(), 0, "nothing replicated yet");
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

fn lease() -> Arc<Lease> {
    Arc::new(Lease::held_for(Duration::from_secs(3600)))
}

/// Spawns a producer's wait for `pending`.
fn wait(
    partition: &Arc<Partition>,
    pending: Pending,
    lease: &Arc<Lease>,
) -> tokio::task::JoinHandle<Result<bool>> {
    let partition = partition.clone();
    let lease = lease.clone();
    tokio::spawn(async move { partition.await_commit(pending, far(), &lease).await })
}

#[tokio::test]
async fn a_deposed_leader_answers_its_waiting_producers_at_once_naming_the_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Arc::new(partition(dir.path()));
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    let pending = partition.append(vec![batch(10)]).await.unwrap().pending;
    let lease = lease();
    let waiters: Vec<_> = (0..3).map(|_| wait(&partition, pending, &lease)).collect();
    tokio::task::yield_now().await;
    partition
        .set_role(Role {
            leader: Some(2),
            leader_epoch: 2,
            leader_address: Some("b2:9392".into()),
            ..leader_of(&[2, 3])
        })
        .unwrap();
    for waiter in waiters {
        let answer = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("answered at once, not at the deadline")
            .unwrap();
        let Err(Error::NotLeader {
            leader,
            leader_address,
            ..
        }) = answer
        else {
            panic!("expected NOT_LEADER, got {answer:?}");
        };
        assert_eq!(leader, Some(2));
        assert_eq!(leader_address.as_deref(), Some("b2:9392"));
    }
    // A producer arriving after the change is refused at once too.
    assert!(matches!(
        partition.await_commit(pending, far(), &lease).await,
        Err(Error::NotLeader { .. })
    ));
}

#[tokio::test]
async fn a_waiting_producer_is_answered_when_the_high_watermark_reaches_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Arc::new(partition(dir.path()));
    partition.set_role(leader_of(&[1, 2])).unwrap();
    let pending = partition.append(vec![batch(10)]).await.unwrap().pending;
    let lease = lease();
    let soon = tokio::time::Instant::now() + Duration::from_millis(50);
    assert!(
        !partition.await_commit(pending, soon, &lease).await.unwrap(),
        "times out while the follower lags"
    );
    let waiter = wait(&partition, pending, &lease);
    tokio::task::yield_now().await;
    // An ISR change keeps the term: the waiter goes on waiting.
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    partition.set_role(leader_of(&[1, 2])).unwrap();
    partition.record_follower(2, 10);
    assert!(waiter.await.unwrap().unwrap());
}

/// The partition-heal loss: the old leader's waiting request must never be answered
/// success from a high watermark it learned as a follower, over offsets it truncated
/// and that now hold the new leader's records.
#[tokio::test]
async fn a_write_truncated_after_a_term_change_fails_even_when_the_high_watermark_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Arc::new(partition(dir.path()));
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    partition.append(vec![batch(5)]).await.unwrap();
    partition.record_follower(2, 5);
    partition.record_follower(3, 5);
    assert_eq!(partition.high_watermark(), 5);
    let pending = partition.append(vec![batch(5)]).await.unwrap().pending;
    assert_eq!(pending.end_offset, 10);
    let lease = lease();
    let waiter = wait(&partition, pending, &lease);
    // Replaced while cut off: follows broker 2, truncates its own suffix, then takes
    // other records and the new leader's high watermark past offset 10.
    partition
        .set_role(Role {
            leader: Some(2),
            leader_epoch: 2,
            ..leader_of(&[2, 3])
        })
        .unwrap();
    partition.truncate(5, false).await.unwrap();
    let mut builder = BatchBuilder::new();
    for _ in 0..8 {
        builder.push(0, None, Some(b"other"), &[]);
    }
    let mut other = builder
        .build(Compression::None, ProducerStamp::NONE)
        .unwrap()
        .unwrap();
    pubsub_storage::batch::stamp(&mut other, 5, 2);
    partition
        .append_replicated(Bytes::from(other))
        .await
        .unwrap();
    partition.follow_high_watermark(13);
    assert_eq!(partition.high_watermark(), 13);
    let answer = waiter.await.unwrap();
    assert!(
        matches!(answer, Err(Error::NotLeader { .. })),
        "expected NOT_LEADER, got {answer:?}"
    );
}

/// Leading again in a newer epoch does not revive a wait from the older one: the
/// records may have been truncated in between.
#[tokio::test]
async fn a_write_from_an_older_epoch_fails_when_the_replica_leads_again() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Arc::new(partition(dir.path()));
    partition.set_role(leader_of(&[1, 2])).unwrap();
    let pending = partition.append(vec![batch(3)]).await.unwrap().pending;
    let lease = lease();
    let waiter = wait(&partition, pending, &lease);
    tokio::task::yield_now().await;
    partition
        .set_role(Role {
            leader_epoch: 5,
            ..leader_of(&[1, 2])
        })
        .unwrap();
    partition.record_follower(2, 3);
    assert!(waiter.await.unwrap().is_err());
    assert!(
        partition
            .await_commit(pending, far(), &lease)
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_lapses_answers_its_waiting_producers() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Arc::new(partition(dir.path()));
    partition.set_role(leader_of(&[1, 2])).unwrap();
    let pending = partition.append(vec![batch(3)]).await.unwrap().pending;
    let lease = Arc::new(Lease::held_for(Duration::from_secs(8)));
    let waiter = wait(&partition, pending, &lease);
    tokio::time::advance(Duration::from_secs(8)).await;
    let answer = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("answered when the lease lapsed, not at the deadline")
        .unwrap();
    assert!(
        matches!(answer, Err(Error::Unavailable(ref m)) if m.contains("lost contact")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_accepted_isr_change_from_an_older_term_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let partition = partition(dir.path());
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    let newer = Role {
        leader: Some(2),
        leader_epoch: 2,
        ..leader_of(&[2, 3])
    };
    partition.set_role(newer.clone()).unwrap();
    partition.set_in_sync_replicas(1, vec![1]);
    assert_eq!(
        partition.role(),
        newer,
        "the answer to an old request changes nothing"
    );
    partition.set_role(leader_of(&[1, 2, 3])).unwrap();
    partition.set_in_sync_replicas(1, vec![1, 2]);
    assert_eq!(partition.role().in_sync_replicas, [1, 2]);
}

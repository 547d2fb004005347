//! Leader-follower replication of partition data.
//!
//! A follower runs one task per partition: it first asks the leader where its own last
//! leader epoch ends and truncates anything past that (a suffix written under an old
//! leader that the new one never had), then fetches from its log end, appends the same
//! batch bytes, and follows the leader's high watermark. The leader learns each
//! follower's log end from the offset it fetches at, and moves the high watermark to the
//! smallest log end among the in-sync replicas. A leader task shrinks the in-sync
//! replicas when a follower has not caught up for `replica_lag_max`, and expands them
//! when it has, through the cluster manager with the leader epoch checked there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_proto::MAX_MESSAGE_BYTES;
use pubsub_proto::net::{self, Channel, ChannelPool, Link};
use pubsub_proto::v1::{self, broker_client::BrokerClient};
use tonic::Code;

use crate::broker::Broker;
use crate::partition::{FollowerState, Partition, Role, blocking};

/// How long a follower's fetch waits at the leader for new records.
const FOLLOWER_FETCH_WAIT: Duration = Duration::from_millis(500);
/// Bytes a follower asks for per fetch.
const FOLLOWER_FETCH_BYTES: u32 = 8 << 20;
/// Pause after a failed follower fetch.
const FOLLOWER_RETRY: Duration = Duration::from_millis(200);
/// How often a leader checks its followers against the in-sync replicas.
const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Longest pause between attempts at an ISR change the cluster manager refused or
/// could not be asked.
const ISR_RETRY_MAX: Duration = Duration::from_secs(5);

/// Starts the task of a replica's new role: a fetcher for a follower, an ISR check
/// for a leader, nothing without a leader.
pub(crate) async fn start_role(
    broker: &Arc<Broker>,
    topic: &str,
    index: u32,
    partition: &Arc<Partition>,
    role: &Role,
) {
    let me = broker.config().broker_id.0;
    let task = match role.leader {
        Some(leader) if leader == me => {
            let log = partition.log().clone();
            let epoch = role.leader_epoch;
            if let Err(e) = blocking(move || Ok(log.begin_epoch(epoch)?)).await {
                tracing::error!(topic, partition = index, error = %e, "cannot record the new leader epoch");
            }
            partition.advance_high_watermark();
            tracing::info!(
                topic,
                partition = index,
                leader_epoch = role.leader_epoch,
                "leading partition"
            );
            tokio::spawn(maintain_isr(
                broker.clone(),
                topic.to_string(),
                index,
                Arc::downgrade(partition),
            ))
        }
        Some(leader) => {
            tracing::info!(
                topic,
                partition = index,
                leader,
                leader_epoch = role.leader_epoch,
                "following partition"
            );
            tokio::spawn(follow(
                broker.clone(),
                topic.to_string(),
                index,
                Arc::downgrade(partition),
                leader,
                role.leader_epoch,
            ))
        }
        None => {
            partition.set_task(None);
            return;
        }
    };
    partition.set_task(Some(task));
}

/// One HTTP/2 connection per peer broker, shared by every follower task fetching
/// from it (a channel multiplexes their long polls), instead of a new connection, and
/// a new TCP handshake, for every fetch.
#[derive(Default)]
pub(crate) struct Peers {
    channels: ChannelPool,
}

impl Peers {
    /// Peers reached over links secured as `link` says.
    pub(crate) fn new(link: Link) -> Peers {
        Peers {
            channels: ChannelPool::new(link),
        }
    }

    /// A stub on the (lazily connected) channel to `address`.
    pub(crate) fn stub(&self, address: &str) -> Option<BrokerClient<Channel>> {
        let channel = self.channels.channel(address).ok()?;
        Some(
            BrokerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// How many peer connections exist.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    /// True before any peer was fetched from.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// The follower loop of one partition; ends when the task is aborted.
async fn follow(
    broker: Arc<Broker>,
    topic: String,
    index: u32,
    partition: std::sync::Weak<Partition>,
    leader: u32,
    epoch: i32,
) {
    let me = broker.config().broker_id.0;
    let mut truncated = false;
    loop {
        let Some(partition) = partition.upgrade() else {
            return;
        };
        let address = broker.broker_address(leader);
        let Some(mut leader_stub) = address.as_deref().and_then(|a| broker.peers().stub(a)) else {
            tokio::time::sleep(FOLLOWER_RETRY).await;
            continue;
        };
        if !truncated {
            match truncate_diverged(&mut leader_stub, &topic, index, &partition).await {
                Ok(()) => truncated = true,
                Err(e) => {
                    tracing::debug!(topic, partition = index, error = %e, "epoch check failed; retrying");
                    tokio::time::sleep(FOLLOWER_RETRY).await;
                    continue;
                }
            }
        }
        // A replica a move is adding copies under the broker's move throttle.
        let throttled = partition.receiving_move();
        let allowed = match throttled {
            true => broker.move_throttle().admit().await,
            false => None,
        };
        let offset = partition.log().log_end_offset();
        let request = v1::FetchRequest {
            topic: topic.clone(),
            partition: index,
            offset,
            max_bytes: allowed.unwrap_or(FOLLOWER_FETCH_BYTES),
            max_wait_ms: FOLLOWER_FETCH_WAIT.as_millis() as u32,
            replica_id: Some(me),
            leader_epoch: epoch,
        };
        match leader_stub.fetch(request).await {
            Ok(response) => {
                let response = response.into_inner();
                if throttled {
                    crate::metrics::move_copied(response.records.len());
                }
                if allowed.is_some() {
                    broker.move_throttle().spend(response.records.len());
                }
                if !response.records.is_empty()
                    && let Err(e) = partition.append_replicated(response.records).await
                {
                    tracing::warn!(topic, partition = index, error = %e, "cannot append replicated batches");
                    truncated = false;
                    tokio::time::sleep(FOLLOWER_RETRY).await;
                    continue;
                }
                partition.follow_high_watermark(response.high_watermark);
            }
            Err(status) if status.code() == Code::OutOfRange => {
                // Below the leader's log start: start over there. Above its end: diverged.
                let start = net::metadata_u64(&status, net::keys::LOG_START_OFFSET);
                match start {
                    Some(start) if offset < start => {
                        if let Err(e) = partition.truncate(start, true).await {
                            tracing::error!(topic, partition = index, error = %e, "cannot reset the follower log");
                        }
                    }
                    _ => truncated = false,
                }
            }
            Err(status) => {
                tracing::debug!(topic, partition = index, error = %status.message(), "follower fetch failed");
                tokio::time::sleep(FOLLOWER_RETRY).await;
            }
        }
    }
}

/// Asks the leader where this replica's last epoch ends and truncates past it.
async fn truncate_diverged(
    leader: &mut BrokerClient<Channel>,
    topic: &str,
    index: u32,
    partition: &Partition,
) -> crate::Result<()> {
    let Some(last_epoch) = partition.log().last_epoch() else {
        return Ok(());
    };
    let request = v1::OffsetForLeaderEpochRequest {
        topic: topic.to_string(),
        partition: index,
        leader_epoch: last_epoch,
    };
    let answer = leader
        .offset_for_leader_epoch(request)
        .await
        .map_err(|s| crate::Error::Unavailable(format!("leader: {}", s.message())))?
        .into_inner();
    let own_end = partition.log().log_end_offset();
    if answer.end_offset < own_end {
        tracing::warn!(
            topic,
            partition = index,
            from = own_end,
            to = answer.end_offset,
            last_epoch,
            "truncating a diverged suffix"
        );
        partition.truncate(answer.end_offset, false).await?;
    }
    Ok(())
}

/// The in-sync replicas a leader should have: itself, the members still caught up within
/// `lag_max`, and the followers outside that have caught up with its log end.
pub(crate) fn desired_isr(
    me: u32,
    role: &Role,
    followers: &std::collections::HashMap<u32, FollowerState>,
    own_end: u64,
    now: Instant,
    lag_max: Duration,
) -> Vec<u32> {
    role.replicas
        .iter()
        .copied()
        .filter(|&replica| {
            if replica == me {
                return true;
            }
            let Some(state) = followers.get(&replica) else {
                return false;
            };
            if role.in_sync_replicas.contains(&replica) {
                now.duration_since(state.caught_up_at) <= lag_max
            } else {
                state.log_end_offset >= own_end
            }
        })
        .collect()
}

/// The leader's loop keeping the in-sync replicas true; ends when aborted.
///
/// A refused or failed change is retried after a backoff that doubles up to
/// `ISR_RETRY_MAX`, and ticks missed while a call hung (the cluster managers out of
/// reach) are not made up in a burst when it returns.
async fn maintain_isr(
    broker: Arc<Broker>,
    topic: String,
    index: u32,
    partition: std::sync::Weak<Partition>,
) {
    let mut interval = tokio::time::interval(ISR_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = ISR_CHECK_INTERVAL;
    loop {
        interval.tick().await;
        let Some(partition) = partition.upgrade() else {
            return;
        };
        match check_isr(&broker, &topic, index, &partition).await {
            IsrCheck::NotLeader => return,
            IsrCheck::Unchanged | IsrCheck::Changed => backoff = ISR_CHECK_INTERVAL,
            IsrCheck::Failed => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ISR_RETRY_MAX);
            }
        }
    }
}

/// What one ISR check of a leader did.
enum IsrCheck {
    NotLeader,
    Unchanged,
    Changed,
    Failed,
}

/// Compares the in-sync replicas with what the followers' progress says they should
/// be, and asks the cluster manager for the change (with this leader's epoch).
async fn check_isr(broker: &Broker, topic: &str, index: u32, partition: &Partition) -> IsrCheck {
    let me = broker.config().broker_id.0;
    let role = partition.role();
    if role.leader != Some(me) {
        return IsrCheck::NotLeader;
    }
    let isr = desired_isr(
        me,
        &role,
        &partition.followers(),
        partition.log_end(),
        Instant::now(),
        broker.config().replica_lag_max,
    );
    let mut current = role.in_sync_replicas.clone();
    current.sort_unstable();
    let mut wanted = isr.clone();
    wanted.sort_unstable();
    if current == wanted {
        return IsrCheck::Unchanged;
    }
    tracing::info!(topic, partition = index, from = ?role.in_sync_replicas, to = ?isr, "changing in-sync replicas");
    let request = v1::UpdateIsrRequest {
        broker_id: me,
        topic: topic.to_string(),
        partition: index,
        leader_epoch: role.leader_epoch,
        in_sync_replicas: isr,
    };
    let answer = broker
        .link()
        .call(|mut stub| {
            let request = request.clone();
            async move { stub.update_isr(request).await }
        })
        .await;
    match answer {
        Ok(response) => {
            if let Some(updated) = response.partition
                && updated.leader_epoch == role.leader_epoch
            {
                crate::metrics::isr_changed(
                    topic,
                    role.in_sync_replicas.len(),
                    updated.in_sync_replicas.len(),
                );
                partition.set_in_sync_replicas(role.leader_epoch, updated.in_sync_replicas);
            }
            IsrCheck::Changed
        }
        Err(status) => {
            tracing::warn!(topic, partition = index, error = %status.message(), "in-sync replica change refused");
            IsrCheck::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn role(isr: &[u32]) -> Role {
        Role {
            leader: Some(1),
            leader_epoch: 3,
            replicas: vec![1, 2, 3],
            in_sync_replicas: isr.to_vec(),
            leader_address: None,
            adding: Vec::new(),
        }
    }

    #[test]
    fn lagging_members_leave_and_caught_up_followers_join() {
        let start = Instant::now();
        let lag = Duration::from_secs(10);
        let now = start + Duration::from_secs(11);
        let followers = HashMap::from([
            (
                2,
                FollowerState {
                    log_end_offset: 100,
                    caught_up_at: now,
                },
            ),
            (
                3,
                FollowerState {
                    log_end_offset: 40,
                    caught_up_at: start,
                },
            ),
        ]);
        assert_eq!(
            desired_isr(1, &role(&[1, 2, 3]), &followers, 100, now, lag),
            [1, 2],
            "3 lags too long"
        );
        assert_eq!(
            desired_isr(1, &role(&[1, 2, 3]), &followers, 100, start, lag),
            [1, 2, 3],
            "within the lag"
        );
        assert_eq!(
            desired_isr(1, &role(&[1]), &followers, 100, now, lag),
            [1, 2],
            "2 has caught up and rejoins"
        );
        assert_eq!(
            desired_isr(1, &role(&[1]), &HashMap::new(), 100, now, lag),
            [1],
            "unknown followers stay out"
        );
    }

    #[tokio::test]
    async fn followers_of_one_leader_share_one_connection() {
        let peers = Peers::default();
        assert!(peers.is_empty());
        for _ in 0..100 {
            peers.stub("127.0.0.1:9").unwrap();
        }
        peers.stub("127.0.0.1:10").unwrap();
        assert_eq!(peers.len(), 2, "one channel per leader address, reused");
    }
}

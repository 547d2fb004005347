//! Push delivery over a bidirectional stream with credit-based flow control.
//!
//! A credit is room for one unacknowledged record. The server delivers only while
//! the stream holds fewer leases than the credits granted; an ack, a nack or an
//! expired lease frees the slot. So the server never buffers more for a subscriber
//! than it granted, however slow it is, and a subscriber that never acks gets its
//! records again once their ack deadline passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use pubsub_proto::v1;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::error::Error;
use crate::manager::{Caller, Manager};
use crate::subscription::Mode;

/// Most records delivered per step.
const STEP_RECORDS: u64 = 5_000;
/// Long-poll wait of one delivery step.
const STEP_WAIT: Duration = Duration::from_millis(500);
/// Messages queued toward the client before the delivery task waits.
const OUTBOUND_QUEUE: usize = 64;
/// Inbound messages taken together (acks in one batch are made durable with one flush).
const INBOUND_BATCH: usize = 1_024;

/// Runs one stream: registers the member, spawns its inbound and delivery tasks,
/// returns the receiver of what goes to the client.
pub async fn open(
    manager: Arc<Manager>,
    open: v1::StreamOpen,
    address: String,
    inbound: Streaming<v1::StreamRequest>,
) -> Result<mpsc::Receiver<Result<v1::StreamResponse, Status>>, Status> {
    let subscription = manager.subscription(&open.subscription)?;
    let caller = Caller {
        member_id: open.member_id.clone(),
        address,
    };
    let joined = manager
        .join(&open.subscription, &caller, Mode::Stream)
        .await?;
    let member_id = joined.member_id.clone();
    let (holder, mut evicted) = {
        let state = subscription.lock()?;
        let member = state
            .members
            .get(&member_id)
            .ok_or_else(|| Status::aborted("member left while the stream opened"))?;
        (member.holder, member.evicted.subscribe())
    };
    let (outbound, receiver) = mpsc::channel(OUTBOUND_QUEUE);
    let credits = Arc::new(AtomicU64::new(u64::from(open.credits)));
    // Set when the client ended the stream, so its end is not reported as an eviction.
    let client_ended = Arc::new(AtomicBool::new(false));
    let _ = outbound
        .send(Ok(v1::StreamResponse {
            kind: Some(v1::stream_response::Kind::Assignment(joined)),
        }))
        .await;
    tracing::info!(subscription = %subscription.name, member = %member_id, credits = open.credits, "stream opened");

    // Inbound: credits, acks, nacks, heartbeats; the end of the stream ends the member.
    let inbound_task = {
        let (manager, subscription, credits, member_id, outbound, client_ended) = (
            manager.clone(),
            subscription.clone(),
            credits.clone(),
            member_id.clone(),
            outbound.clone(),
            client_ended.clone(),
        );
        tokio::spawn(async move {
            let mut batches = inbound.ready_chunks(INBOUND_BATCH);
            while let Some(batch) = batches.next().await {
                let mut acks = Vec::new();
                let mut nacks = Vec::new();
                let mut ended = false;
                for message in batch {
                    let Ok(message) = message else {
                        ended = true;
                        break;
                    };
                    use v1::stream_request::Kind;
                    match message.kind {
                        Some(Kind::Credits(n)) => {
                            credits.fetch_add(u64::from(n), Ordering::Relaxed);
                        }
                        Some(Kind::Ack(id)) => acks.push((id.partition, id.offset)),
                        Some(Kind::Nack(id)) => nacks.push((id.partition, id.offset)),
                        Some(Kind::Heartbeat(_)) | Some(Kind::Open(_)) | None => {}
                    }
                }
                if let Ok(mut state) = subscription.lock()
                    && let Some(member) = state.members.get_mut(&member_id)
                {
                    member.last_seen = std::time::Instant::now();
                }
                if !acks.is_empty()
                    && let Err(e) = manager.ack_ids(&subscription, &acks, false).await
                {
                    let _ = outbound.send(Err(e.into())).await;
                    break;
                }
                if !nacks.is_empty()
                    && let Ok(mut state) = subscription.lock()
                {
                    for (p, o) in nacks {
                        if let Some(cursor) = state.cursors.get_mut(p as usize) {
                            cursor.nack(o, holder);
                        }
                    }
                }
                subscription.changed.notify_waiters();
                if ended {
                    break;
                }
            }
            client_ended.store(true, Ordering::SeqCst);
            let _ = manager.leave(&subscription.name, &member_id).await;
            tracing::info!(subscription = %subscription.name, member = %member_id, "stream closed");
        })
    };

    // Delivery: while credits allow, deliver and send.
    tokio::spawn(async move {
        let mut generation = None;
        loop {
            if *evicted.borrow() || outbound.is_closed() {
                break;
            }
            let changed = subscription.changed.notified();
            let (held, assignment) = match subscription.lock() {
                Ok(mut state) => {
                    state.expire_all(std::time::Instant::now());
                    let assignment = (subscription.options.group
                        && generation != Some(state.generation))
                    .then(|| {
                        generation = Some(state.generation);
                        v1::JoinGroupResponse {
                            member_id: member_id.clone(),
                            generation: state.generation,
                            partitions: state
                                .assignment
                                .get(&member_id)
                                .cloned()
                                .unwrap_or_default(),
                            session_timeout_ms: subscription.options.session_timeout_ms,
                        }
                    });
                    (state.held_by(holder), assignment)
                }
                Err(_) => break,
            };
            if let Some(assignment) = assignment
                && outbound
                    .send(Ok(v1::StreamResponse {
                        kind: Some(v1::stream_response::Kind::Assignment(assignment)),
                    }))
                    .await
                    .is_err()
            {
                break;
            }
            let available = credits.load(Ordering::Relaxed).saturating_sub(held);
            if available == 0 {
                tokio::select! {
                    _ = changed => {}
                    _ = evicted.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            let max = available.min(STEP_RECORDS) as usize;
            let delivery = tokio::select! {
                d = manager.deliver(&subscription, &member_id, holder, max, STEP_WAIT) => d,
                _ = evicted.changed() => break,
            };
            match delivery {
                Ok(delivery) => {
                    for skipped in delivery.skipped {
                        let message = v1::StreamResponse {
                            kind: Some(v1::stream_response::Kind::Skipped(skipped)),
                        };
                        if outbound.send(Ok(message)).await.is_err() {
                            break;
                        }
                    }
                    for record in delivery.records {
                        let message = v1::StreamResponse {
                            kind: Some(v1::stream_response::Kind::Record(record)),
                        };
                        if outbound.send(Ok(message)).await.is_err() {
                            break;
                        }
                    }
                }
                // Every partition of this member is stopped, or the subscription is
                // gone: say so and end, rather than stay open delivering nothing.
                Err(e @ (Error::PartitionStopped { .. } | Error::NotFound(_))) => {
                    let _ = outbound.send(Err(e.into())).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(subscription = %subscription.name, error = %e, "stream delivery failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        if *evicted.borrow() && !client_ended.load(Ordering::SeqCst) {
            let status = match subscription.lock() {
                // Deleted (unsubscribed, or its topic deleted): NOT_FOUND with why.
                Err(e @ Error::NotFound(_)) => e.into(),
                _ => Status::aborted(format!(
                    "member {member_id:?} of subscription {:?} was removed (session timeout): \
                     open a new stream",
                    subscription.name
                )),
            };
            let _ = outbound.send(Err(status)).await;
        }
        inbound_task.abort();
        let _ = manager.leave(&subscription.name, &member_id).await;
    });
    Ok(receiver)
}

//! Push delivery over a bidirectional stream with credit-based flow control.
//!
//! A credit is room for one unacknowledged record. The server delivers only while
//! the stream holds fewer leases than the credits granted; an ack, a nack or an
//! expired lease frees the slot. So the server never buffers more for a subscriber
//! than it granted, however slow it is, and a subscriber that never acks gets its
//! records again once their ack deadline passes.
//!
//! A stream belongs to the manager that opened it: when that manager's database
//! fails, the stream ends with UNAVAILABLE (and lets go of the manager, so it can be
//! reloaded from disk); subscribers open a new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use pubsub_proto::v1;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use crate::cursor::Holder;
use crate::error::{Error, Result};
use crate::manager::{Caller, Manager};
use crate::subscription::{Mode, Subscription};

/// Bytes of records a batched stream puts in one message, about.
const BATCH_BYTES: usize = 256 << 10;
/// Most records delivered per step.
const STEP_RECORDS: u64 = 5_000;
/// A step waits for at least this fraction of the credits to be free (1/4), for at
/// most [`STEP_GATHER`]: each step costs a flush, and a subscriber acking record by
/// record frees credits a few at a time.
const STEP_FRACTION: u64 = 4;
/// Longest a step waits for more credits to be free (see [`STEP_FRACTION`]).
const STEP_GATHER: Duration = Duration::from_millis(2);
/// Long-poll wait of one delivery step.
const STEP_WAIT: Duration = Duration::from_millis(500);
/// Messages queued toward the client before the delivery task waits. Each is a record
/// the stream holds a credit for, so the queue holds no more than the credits granted;
/// a deep queue lets the delivery task hand over a whole step at once instead of
/// waking the sending task every few records.
const OUTBOUND_QUEUE: usize = 1_024;
/// The same for a batched stream, whose messages hold up to [`BATCH_BYTES`] each: a
/// step's worth, so an unread stream holds about 1 MiB here, as an unbatched one
/// holds its 1,024 records.
const OUTBOUND_QUEUE_BATCHED: usize = 4;
/// Most inbound messages taken together: whatever has arrived is taken, up to this,
/// and its acks are applied as one command (more than the credits a subscriber
/// usually grants, so one apply can cover all it holds).
const INBOUND_BATCH: usize = 16_384;
/// How long a stream's acks wait to share one flush. A stream answers no ack, so this
/// delays nothing a subscriber waits for; it bounds how many acks a crash can undo
/// (they are delivered again), and saves an fsync, a flush and its thread hand-offs
/// per few hundred acks.
const ACK_FLUSH_DELAY: Duration = Duration::from_millis(5);
/// Longest the final status of a stream waits for room in a client's full queue: a
/// client that reads nothing must not keep the stream (and its manager) alive.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(1);

/// What goes to the client.
type Outbound = mpsc::Sender<Result<v1::StreamResponse, Status>>;

/// One open stream: what its inbound and delivery tasks share.
struct Open {
    manager: Arc<Manager>,
    subscription: Arc<Subscription>,
    member_id: String,
    holder: Holder,
    /// Credits granted so far.
    credits: AtomicU64,
    /// Set when the client ended the stream (it acknowledges nothing more), so its end
    /// is not reported as an eviction.
    client_ended: AtomicBool,
    outbound: Outbound,
    /// Each step's records go out as one message (`StreamOpen.batched`).
    batched: bool,
}

/// Runs one stream: registers the member, spawns its inbound and delivery tasks,
/// returns the receiver of what goes to the client.
pub(crate) async fn open(
    manager: Arc<Manager>,
    open: v1::StreamOpen,
    address: String,
    inbound: Streaming<v1::StreamRequest>,
) -> Result<mpsc::Receiver<Result<v1::StreamResponse, Status>>> {
    let subscription = manager.subscription(&open.subscription)?;
    let caller = Caller {
        member_id: open.member_id.clone(),
        address,
    };
    let joined = manager
        .join(&open.subscription, &caller, Mode::Stream)
        .await?;
    let member_id = joined.member_id.clone();
    let (holder, evicted) = {
        let state = subscription.lock()?;
        let member = state
            .members
            .get(&member_id)
            .ok_or_else(|| Error::MemberRemoved {
                member_id: member_id.clone(),
                subscription: subscription.name.clone(),
            })?;
        (member.holder, member.evicted.subscribe())
    };
    let depth = if open.batched {
        OUTBOUND_QUEUE_BATCHED
    } else {
        OUTBOUND_QUEUE
    };
    let (outbound, receiver) = mpsc::channel(depth);
    let _ = outbound
        .send(Ok(v1::StreamResponse {
            kind: Some(v1::stream_response::Kind::Assignment(joined)),
        }))
        .await;
    tracing::info!(subscription = %subscription.name, member = %member_id, credits = open.credits, "stream opened");
    let stream = Arc::new(Open {
        manager,
        subscription,
        member_id,
        holder,
        credits: AtomicU64::new(u64::from(open.credits)),
        client_ended: AtomicBool::new(false),
        outbound,
        batched: open.batched,
    });
    let inbound_task = tokio::spawn(receive(stream.clone(), inbound));
    tokio::spawn(run_delivery(stream, evicted, inbound_task));
    Ok(receiver)
}

/// Inbound: credits, acks, nacks, heartbeats; the end of the stream ends the member.
async fn receive(stream: Arc<Open>, mut inbound: Streaming<v1::StreamRequest>) {
    let subscription = &stream.subscription;
    let durable = Durable::spawn(stream.clone());
    while let Some(batch) = next_batch(&mut inbound).await {
        let (taken, ended) = Taken::from(&stream, batch);
        if let Err(e) = taken.apply(&stream) {
            let _ = stream.outbound.send(Err(e.into())).await;
            break;
        }
        durable.ask();
        subscription.changed.notify_waiters();
        if ended {
            break;
        }
    }
    drop(durable);
    // Set before the member goes: a delivery step that ends after this gives its
    // records back rather than send what can no longer be acknowledged.
    stream.client_ended.store(true, Ordering::SeqCst);
    // Whatever the stream acknowledged is durable before its member goes.
    let _ = stream.manager.store().flush().await;
    let _ = stream
        .manager
        .leave(&subscription.name, &stream.member_id)
        .await;
    tracing::info!(subscription = %subscription.name, member = %stream.member_id, "stream closed");
}

/// The acks and nacks of one inbound batch (credits are counted as they are read).
struct Taken {
    acks: Vec<(u32, u64)>,
    nacks: Vec<(u32, u64)>,
}

impl Taken {
    /// Reads a batch; also says whether the stream ended in it.
    fn from(stream: &Open, batch: Vec<Result<v1::StreamRequest, Status>>) -> (Taken, bool) {
        let mut taken = Taken {
            acks: Vec::new(),
            nacks: Vec::new(),
        };
        for message in batch {
            let Ok(message) = message else {
                return (taken, true);
            };
            use v1::stream_request::Kind;
            match message.kind {
                Some(Kind::Credits(n)) => {
                    stream.credits.fetch_add(u64::from(n), Ordering::Relaxed);
                }
                Some(Kind::Ack(id)) => taken.acks.push((id.partition, id.offset)),
                Some(Kind::Acks(ids)) => {
                    let ids = ids.records.iter().map(|id| (id.partition, id.offset));
                    taken.acks.extend(ids);
                }
                Some(Kind::Nack(id)) => taken.nacks.push((id.partition, id.offset)),
                Some(Kind::Heartbeat(_)) | Some(Kind::Open(_)) | None => {}
            }
        }
        (taken, false)
    }

    /// Renews the member's session, applies the acks (durable behind, see
    /// [`Durable`]) and the nacks.
    fn apply(self, stream: &Open) -> Result<()> {
        let subscription = &stream.subscription;
        if let Ok(mut state) = subscription.lock()
            && let Some(member) = state.members.get_mut(&stream.member_id)
        {
            member.last_seen = std::time::Instant::now();
        }
        if !self.acks.is_empty() {
            stream.manager.apply_acks(subscription, &self.acks, false)?;
        }
        if !self.nacks.is_empty()
            && let Ok(mut state) = subscription.lock()
        {
            for (p, o) in self.nacks {
                if let Some(cursor) = state.cursors.get_mut(p as usize) {
                    cursor.nack(o, stream.holder);
                }
            }
        }
        Ok(())
    }
}

/// Makes a stream's acks durable behind its reads: the inbound task applies each
/// batch and reads on while this task waits for group commit, so a flush never holds
/// up the acks that follow. A stream answers no ack, so nothing is promised before the
/// flush; an ack is durable within [`ACK_FLUSH_DELAY`] and a flush (sooner if another
/// writer flushes), and a failed flush ends the stream. Dropped (with the inbound
/// task), it stops.
struct Durable {
    asked: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Durable {
    fn spawn(stream: Arc<Open>) -> Durable {
        let asked = Arc::new(Notify::new());
        let task = tokio::spawn({
            let asked = asked.clone();
            async move {
                loop {
                    asked.notified().await;
                    // Let the acks of the next few milliseconds share this flush.
                    tokio::time::sleep(ACK_FLUSH_DELAY).await;
                    if let Err(e) = stream.manager.store().flush().await {
                        let _ = stream.outbound.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Durable { asked, task }
    }

    /// Asks for a flush of what was applied so far (one at a time; asks meanwhile
    /// are folded into the next).
    fn ask(&self) {
        self.asked.notify_one();
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next inbound message and every one already received after it, up to
/// [`INBOUND_BATCH`]; `None` once the stream ended.
async fn next_batch(
    inbound: &mut Streaming<v1::StreamRequest>,
) -> Option<Vec<Result<v1::StreamRequest, Status>>> {
    let first = inbound.next().await?;
    let mut batch = vec![first];
    while batch.len() < INBOUND_BATCH {
        match futures::FutureExt::now_or_never(inbound.next()) {
            Some(Some(message)) => batch.push(message),
            Some(None) | None => break,
        }
    }
    Some(batch)
}

/// Delivery until the member is evicted, the client goes, delivery cannot go on, or
/// the manager's database fails; then the stream ends with why.
async fn run_delivery(
    stream: Arc<Open>,
    mut evicted: watch::Receiver<bool>,
    inbound_task: JoinHandle<()>,
) {
    let failed = stream.manager.store().failed();
    let ended = tokio::select! {
        ended = deliver(&stream, &mut evicted) => ended,
        () = failed => Some(Error::Reloading.into()),
    };
    let subscription = &stream.subscription;
    let ended = ended.or_else(|| {
        (*evicted.borrow() && !stream.client_ended.load(Ordering::SeqCst)).then(|| {
            match subscription.lock() {
                // Deleted (unsubscribed, or its topic deleted): NOT_FOUND with why.
                Err(e) => e.into(),
                Ok(_) => Error::MemberRemoved {
                    member_id: stream.member_id.clone(),
                    subscription: subscription.name.clone(),
                }
                .into(),
            }
        })
    });
    if let Some(status) = ended {
        let _ = stream
            .outbound
            .send_timeout(Err(status), FINAL_STATUS_WAIT)
            .await;
    }
    inbound_task.abort();
    let _ = stream
        .manager
        .leave(&subscription.name, &stream.member_id)
        .await;
}

/// Delivers while credits allow; returns the status to end the stream with, if any.
async fn deliver(stream: &Open, evicted: &mut watch::Receiver<bool>) -> Option<Status> {
    let subscription = &stream.subscription;
    let mut generation = None;
    let mut gathered = false;
    loop {
        if *evicted.borrow() || stream.outbound.is_closed() {
            return None;
        }
        let changed = subscription.changed.notified();
        let (held, assignment) = look(stream, &mut generation)?;
        if let Some(assignment) = assignment {
            let kind = v1::stream_response::Kind::Assignment(assignment);
            if !send(&stream.outbound, kind).await {
                return None;
            }
        }
        let credits = stream.credits.load(Ordering::Relaxed);
        let available = credits.saturating_sub(held);
        if available == 0 {
            tokio::select! {
                _ = changed => {}
                _ = evicted.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        if available < credits / STEP_FRACTION && !gathered {
            // Few credits free while the subscriber holds many: let its next acks
            // come, so one step (and its flush) serves more records.
            gathered = true;
            tokio::select! {
                _ = tokio::time::sleep(STEP_GATHER) => {}
                _ = evicted.changed() => {}
            }
            continue;
        }
        gathered = false;
        let max = available.min(STEP_RECORDS) as usize;
        // The step runs as a task of its own, never cancelled half way: once it has
        // leased records, they are sent or given back.
        let mut step = tokio::spawn({
            let (manager, subscription) = (stream.manager.clone(), subscription.clone());
            let (member_id, holder) = (stream.member_id.clone(), stream.holder);
            async move {
                manager
                    .deliver(&subscription, &member_id, holder, max, STEP_WAIT)
                    .await
            }
        });
        let delivery = tokio::select! {
            d = &mut step => match d {
                Ok(d) => d,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return None,
            },
            _ = evicted.changed() => {
                // The member left: end now; what the step leases goes back once it ends.
                let (manager, subscription) = (stream.manager.clone(), subscription.clone());
                let holder = stream.holder;
                tokio::spawn(async move {
                    if let Ok(Ok(delivery)) = step.await {
                        let unsent = delivery.records.iter().map(id).collect::<Vec<_>>();
                        give_back(&manager, &subscription, holder, &unsent).await;
                    }
                });
                return None;
            }
        };
        match delivery {
            Ok(delivery) => {
                tracing::trace!(subscription = %subscription.name, records = delivery.records.len(), max, held, "stream step");
                // A client that ended its side, or a member that left, can acknowledge
                // nothing more: what the step leased goes back rather than out.
                let mut gone = stream.client_ended.load(Ordering::SeqCst) || *evicted.borrow();
                for skip in delivery.skipped {
                    if gone
                        || !send(&stream.outbound, v1::stream_response::Kind::Skipped(skip)).await
                    {
                        gone = true;
                        break;
                    }
                }
                let (unsent, sent, again) = send_records(stream, delivery.records, gone).await;
                subscription.counters.delivered_count(sent, again);
                if !unsent.is_empty() {
                    give_back(&stream.manager, subscription, stream.holder, &unsent).await;
                }
            }
            // Every partition of this member is stopped, or the subscription is
            // gone: say so and end, rather than stay open delivering nothing.
            Err(e) if e.is_gone() || matches!(e, Error::PartitionStopped { .. }) => {
                return Some(e.into());
            }
            Err(e) => {
                tracing::debug!(subscription = %subscription.name, error = %e, "stream delivery failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Sends one step's records (one message if the stream is batched, else one each),
/// unless the client is already `gone`; returns the ids not sent, how many were
/// sent and how many of those were redeliveries.
async fn send_records(
    stream: &Open,
    records: Vec<v1::DeliveredRecord>,
    mut gone: bool,
) -> (Vec<(u32, u64, u32)>, usize, usize) {
    let (mut unsent, mut sent, mut again) = (Vec::new(), 0, 0);
    if stream.batched {
        for batch in batches(records) {
            let ids: Vec<_> = batch.iter().map(id).collect();
            let kind = v1::stream_response::Kind::Records(v1::DeliveredRecords { records: batch });
            if gone || !send(&stream.outbound, kind).await {
                gone = true;
                unsent.extend(ids);
            } else {
                sent += ids.len();
                again += ids.iter().filter(|id| id.2 > 1).count();
            }
        }
        return (unsent, sent, again);
    }
    for record in records {
        let id = id(&record);
        if gone || !send(&stream.outbound, v1::stream_response::Kind::Record(record)).await {
            gone = true;
            unsent.push(id);
        } else {
            sent += 1;
            again += usize::from(id.2 > 1);
        }
    }
    (unsent, sent, again)
}

/// Splits a step's records into messages of about [`BATCH_BYTES`] each, so the
/// client's decoding buffer stays small whatever its credits.
fn batches(mut records: Vec<v1::DeliveredRecord>) -> Vec<Vec<v1::DeliveredRecord>> {
    let mut cuts = Vec::new();
    let mut bytes = 0usize;
    for (index, record) in records.iter().enumerate() {
        bytes += approximate_size(record);
        if bytes >= BATCH_BYTES {
            cuts.push(index + 1);
            bytes = 0;
        }
    }
    // Cut from the back, so each record moves at most once (a step that fits one
    // message, the usual case, is sent as it is).
    let mut batches = Vec::with_capacity(cuts.len() + 1);
    for &cut in cuts.iter().rev() {
        if cut < records.len() {
            batches.push(records.split_off(cut));
        }
    }
    if !records.is_empty() {
        batches.push(records);
    }
    batches.reverse();
    batches
}

/// About the bytes `record` takes on the wire: its payload and a little framing.
fn approximate_size(record: &v1::DeliveredRecord) -> usize {
    let payload = |b: &Option<_>| b.as_ref().map_or(0, |b: &bytes::Bytes| b.len());
    let headers = record.headers.iter();
    let headers: usize = headers.map(|h| h.key.len() + payload(&h.value) + 8).sum();
    payload(&record.key) + payload(&record.value) + headers + 32
}

/// A delivered record's partition, offset and delivery attempt.
fn id(record: &v1::DeliveredRecord) -> (u32, u64, u32) {
    (record.partition, record.offset, record.delivery_attempt)
}

/// Gives back records a step leased for `holder` and did not send (the client ended
/// the stream or is gone, or the member left): they are offered again first, their
/// attempt not counted (see [`Cursor::unsend`]), and their delivery counts made
/// durable.
///
/// [`Cursor::unsend`]: crate::cursor::Cursor::unsend
async fn give_back(
    manager: &Manager,
    subscription: &Subscription,
    holder: Holder,
    unsent: &[(u32, u64, u32)],
) {
    let given_back = manager
        .write(subscription, |state, writes| {
            let mut given_back = 0;
            for &(partition, offset, attempt) in unsent {
                let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                    continue;
                };
                if let Some(count) = cursor.unsend(offset, holder, attempt) {
                    writes.deliveries(partition, offset, count);
                    given_back += 1;
                }
            }
            Ok(given_back)
        })
        .await;
    match given_back {
        Ok(n) => {
            tracing::debug!(subscription = %subscription.name, records = n, "records not sent given back")
        }
        Err(e) => {
            tracing::debug!(subscription = %subscription.name, error = %e, "records not sent not given back; redelivered after their ack deadline")
        }
    }
    subscription.changed.notify_waiters();
}

/// Under the lock: expires leases, counts what the member holds, and the assignment
/// to send if the group's generation changed. `None` once the subscription is deleted.
fn look(
    stream: &Open,
    generation: &mut Option<u64>,
) -> Option<(u64, Option<v1::JoinGroupResponse>)> {
    let subscription = &stream.subscription;
    let mut state = subscription.lock().ok()?;
    state.expire_all(std::time::Instant::now());
    let assignment =
        (subscription.options.group && *generation != Some(state.generation)).then(|| {
            *generation = Some(state.generation);
            v1::JoinGroupResponse {
                member_id: stream.member_id.clone(),
                generation: state.generation,
                partitions: state
                    .assignment
                    .get(&stream.member_id)
                    .cloned()
                    .unwrap_or_default(),
                session_timeout_ms: subscription.options.session_timeout_ms,
            }
        });
    Some((state.held_by(stream.holder), assignment))
}

/// Sends one message to the client; false once the client is gone.
async fn send(outbound: &Outbound, kind: v1::stream_response::Kind) -> bool {
    let message = v1::StreamResponse { kind: Some(kind) };
    outbound.send(Ok(message)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, value_bytes: usize) -> v1::DeliveredRecord {
        v1::DeliveredRecord {
            offset,
            value: Some(bytes::Bytes::from(vec![0u8; value_bytes])),
            ..Default::default()
        }
    }

    #[test]
    fn a_step_goes_out_in_messages_of_about_the_batch_size_in_order() {
        let records: Vec<_> = (0..7).map(|o| record(o, 100 << 10)).collect();
        let sizes: Vec<Vec<u64>> = batches(records)
            .iter()
            .map(|b| b.iter().map(|r| r.offset).collect())
            .collect();
        assert_eq!(sizes, [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert!(batches(Vec::new()).is_empty());
        let small: Vec<_> = (0..1_000).map(|o| record(o, 100)).collect();
        assert_eq!(batches(small).len(), 1);
    }
}

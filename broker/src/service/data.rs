//! The Broker service: Produce, ProduceStream, Fetch and ListOffsets.

use pubsub_proto::auth::{Operation, Target, authorize, caller};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pubsub_proto::v1::{self, broker_server::Broker as BrokerRpc};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::error::Error;
use crate::metrics::Rpc;
use crate::partition::{Partition, Pending, blocking};

/// Fetch size when a request asks for 0 bytes.
pub(crate) const FETCH_BYTES_DEFAULT: usize = 1 << 20;
/// Largest fetch response: bounded well below the gRPC message limit.
pub(crate) const FETCH_BYTES_MAX: usize = 32 << 20;
/// Longest long poll; a client wanting longer polls again.
pub(crate) const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// The bytes a fetch may return and when its long poll ends, as `request` asks within
/// the broker's bounds.
pub(crate) fn fetch_limits(request: &v1::FetchRequest) -> (usize, tokio::time::Instant) {
    let max_bytes = match request.max_bytes as usize {
        0 => FETCH_BYTES_DEFAULT,
        n => n.min(FETCH_BYTES_MAX),
    };
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
    (max_bytes, tokio::time::Instant::now() + wait)
}

/// Most batches in one produce request: bounds the work one request can queue.
pub(crate) const BATCHES_PER_REQUEST_MAX: usize = 1024;
/// Kafka's ListOffsets shortcuts, accepted in `timestamp_ms`.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
/// Produce requests read ahead on one stream while earlier ones are appended.
const STREAM_BUFFER: usize = 16;

/// Data-path service over the broker's partitions.
pub(crate) struct DataService {
    broker: Arc<Broker>,
}

impl DataService {
    /// Serves data requests from `broker`.
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        DataService { broker }
    }
}

/// How long an acks=all produce waits for the in-sync replicas.
pub(crate) const ACKS_ALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A produce written on the leader, waiting for its acknowledgement condition: first
/// the fsync policy, then (acks=all) the in-sync replicas.
pub(crate) struct Appended {
    correlation_id: u64,
    base_offsets: Vec<u64>,
    /// The fsync policy's wait, set off as soon as the batches are written: it is what
    /// makes them durable and visible, so it runs even if nobody waits for the answer
    /// (acks=0, a caller gone), and a stream's next request is written meanwhile.
    durable: tokio::task::JoinHandle<Result<(), Error>>,
    partition: Arc<Partition>,
    broker: Arc<Broker>,
    /// For acks=all: what commits the records, and how many in-sync replicas the
    /// topic asks for.
    commit: Option<(Pending, u32)>,
    /// When the request arrived.
    started: std::time::Instant,
}

impl Appended {
    /// Waits for the in-sync replicas where acks=all asks for it: the records must be
    /// committed in the epoch they were appended in, by at least `min_insync_replicas`
    /// (a leader whose ISR shrank to itself meanwhile commits alone, as Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND says).
    pub(crate) async fn acknowledge(self) -> Result<v1::ProduceResponse, Error> {
        let started = self.started;
        let answer = self.wait().await;
        crate::metrics::request_done(Rpc::Produce, started);
        answer
    }

    async fn wait(self) -> Result<v1::ProduceResponse, Error> {
        self.durable
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        if let Some((pending, needed)) = self.commit {
            let deadline = tokio::time::Instant::now() + ACKS_ALL_TIMEOUT;
            let lease = self.broker.lease();
            if !self
                .partition
                .await_commit(pending, deadline, lease)
                .await?
            {
                return Err(Error::Unavailable(format!(
                    "the in-sync replicas did not reach offset {} within {ACKS_ALL_TIMEOUT:?}; the records may still be committed",
                    pending.end_offset
                )));
            }
            let in_sync = self.partition.role().in_sync_replicas.len() as u32;
            if in_sync < needed {
                return Err(Error::Unavailable(format!(
                    "the records were written, but only {in_sync} in-sync replica(s) remain of the {needed} required; retry (the idempotent producer keeps a retry from duplicating them)"
                )));
            }
        }
        Ok(v1::ProduceResponse {
            correlation_id: self.correlation_id,
            base_offsets: self.base_offsets,
            error: None,
        })
    }
}

/// Validates and appends a produce request on the leader, in arrival order (the
/// Kafka listener's Produce comes through here too).
pub(crate) async fn append(
    broker: &Arc<Broker>,
    request: v1::ProduceRequest,
) -> Result<Appended, Error> {
    let started = std::time::Instant::now();
    if request.batches.is_empty() {
        return Err(Error::InvalidArgument(
            "produce request holds no batches".into(),
        ));
    }
    if request.batches.len() > BATCHES_PER_REQUEST_MAX {
        return Err(Error::ResourceExhausted(format!(
            "produce request holds {} batches; the limit is {BATCHES_PER_REQUEST_MAX}",
            request.batches.len()
        )));
    }
    let acks = acks(request.acks)?;
    let topic = broker.topic(&request.topic)?;
    let partition = broker.leader_partition(&request.topic, request.partition)?;
    let role = partition.role();
    // A leader that may have been replaced takes nothing: what it appended now would
    // be truncated when it learns of its successor. (A partition with one replica
    // cannot get another leader.)
    if role.replicas.len() > 1 {
        broker.lease().check(broker.config().broker_id.0)?;
    }
    let acks_all = acks == v1::Acks::All;
    let needed = topic
        .record
        .settings
        .min_insync(topic.record.replication_factor);
    if acks_all {
        // Checked before appending, so a refused request leaves nothing half-written.
        let in_sync = role.in_sync_replicas.len() as u32;
        if in_sync < needed {
            return Err(Error::Unavailable(format!(
                "not enough in-sync replicas: {in_sync} < {needed} (partition {}-{})",
                request.topic, request.partition
            )));
        }
    }
    let bytes: u64 = request.batches.iter().map(|b| b.len() as u64).sum();
    // Written, not yet durable: the wait for the fsync policy runs on its own, so a
    // stream's next request is written meanwhile and shares the fsync.
    let appended = partition.write(request.batches).await?;
    let durable = {
        let partition = partition.clone();
        let end = appended.pending.end_offset;
        tokio::spawn(async move { partition.make_durable(end).await })
    };
    if let Some(first) = appended.base_offsets.first() {
        let records = appended.pending.end_offset.saturating_sub(*first);
        partition.counters().produced(records, bytes);
    }
    let base_offsets = if acks == v1::Acks::None {
        Vec::new()
    } else {
        appended.base_offsets
    };
    Ok(Appended {
        correlation_id: request.correlation_id,
        base_offsets,
        durable,
        partition,
        broker: broker.clone(),
        commit: acks_all.then_some((appended.pending, needed)),
        started,
    })
}

/// The request's acks: unset means leader; a value the proto does not list is refused
/// rather than guessed.
fn acks(value: i32) -> Result<v1::Acks, Error> {
    match v1::Acks::try_from(value) {
        Ok(v1::Acks::Unspecified) => Ok(v1::Acks::Leader),
        Ok(acks) => Ok(acks),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown acks value {value}: use ACKS_LEADER (3), ACKS_ALL (2) or ACKS_NONE (1); 0 means leader"
        ))),
    }
}

/// Appends a produce request and waits for its acks condition.
pub(crate) async fn produce(
    broker: &Arc<Broker>,
    request: v1::ProduceRequest,
) -> Result<v1::ProduceResponse, Error> {
    append(broker, request).await?.acknowledge().await
}

fn error_response(correlation_id: u64, error: Error) -> v1::ProduceResponse {
    let leader_address = match &error {
        Error::NotLeader { leader_address, .. } => leader_address.clone(),
        _ => None,
    };
    let status = Status::from(error);
    v1::ProduceResponse {
        correlation_id,
        base_offsets: Vec::new(),
        error: Some(v1::ErrorStatus {
            code: status.code() as i32,
            message: status.message().to_string(),
            leader_address,
        }),
    }
}

/// What the acknowledging side of a produce stream waits on, in request order.
enum AckTask {
    /// Appended; acknowledged when this finishes.
    Waiting(tokio::task::JoinHandle<Result<v1::ProduceResponse, Error>>),
    /// Refused before anything was appended.
    Rejected(Error),
    /// The inbound stream broke.
    Failed(Status),
}

type ProduceStreamOut = Pin<Box<dyn Stream<Item = Result<v1::ProduceResponse, Status>> + Send>>;

/// tonic reports a request over the message limit as OUT_OF_RANGE, the code Fetch
/// uses for an offset out of range; say RESOURCE_EXHAUSTED and name the limit instead.
fn oversize(status: Status) -> Status {
    if pubsub_proto::is_oversize(&status) {
        Status::resource_exhausted(pubsub_proto::oversize_message())
    } else {
        status
    }
}

#[tonic::async_trait]
impl BrokerRpc for DataService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        authorize(
            &request,
            Operation::Produce,
            Target::Topic(&request.get_ref().topic),
        )?;
        Ok(Response::new(
            produce(&self.broker, request.into_inner()).await?,
        ))
    }

    type ProduceStreamStream = ProduceStreamOut;

    async fn produce_stream(
        &self,
        request: Request<Streaming<v1::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = caller(&request);
        let mut inbound = request.into_inner();
        let broker = self.broker.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let (waiting, mut acknowledged) =
            tokio::sync::mpsc::channel::<(u64, AckTask)>(STREAM_BUFFER);
        // Appends happen one request at a time, in arrival order: this is what keeps a
        // producer's pipelined batches in order. Acknowledgements (acks=all waits for the
        // in-sync replicas) run concurrently and are answered in the same order.
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = waiting.send((0, AckTask::Failed(status))).await;
                        break;
                    }
                };
                let correlation_id = request.correlation_id;
                // Checked per request: one stream may write to several topics, and a
                // token revoked mid-stream stops working.
                if let Err(status) =
                    caller.authorize(Operation::Produce, Target::Topic(&request.topic))
                {
                    let _ = waiting
                        .send((correlation_id, AckTask::Failed(status)))
                        .await;
                    break;
                }
                match append(&broker, request).await {
                    Ok(appended) => {
                        let task = tokio::spawn(appended.acknowledge());
                        if waiting
                            .send((correlation_id, AckTask::Waiting(task)))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(error) => {
                        // After a failed request the stream ends: requests behind it are
                        // not appended, so a producer that retries keeps its batches in order.
                        let _ = waiting
                            .send((correlation_id, AckTask::Rejected(error)))
                            .await;
                        break;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some((correlation_id, task)) = acknowledged.recv().await {
                let reply = match task {
                    AckTask::Waiting(task) => match task.await {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(error)) => Ok(error_response(correlation_id, error)),
                        Err(e) => Ok(error_response(correlation_id, Error::Task(e.to_string()))),
                    },
                    AckTask::Rejected(error) => Ok(error_response(correlation_id, error)),
                    AckTask::Failed(status) => Err(status),
                };
                let failed = match &reply {
                    Ok(response) => response.error.is_some(),
                    Err(_) => true,
                };
                if tx.send(reply.map_err(oversize)).await.is_err() {
                    break;
                }
                if failed {
                    // Requests behind a failed one are not answered (the appender stopped
                    // reading, so later batches keep their order on a retry); end the call
                    // with a status so that is never mistaken for a clean end.
                    let _ = tx
                        .send(Err(Status::aborted(format!(
                            "request {correlation_id} failed, so this stream ends: requests sent after it were not answered (those already appended keep their offsets); retry them on a new stream"
                        ))))
                        .await;
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn publish(
        &self,
        request: Request<v1::PublishRequest>,
    ) -> Result<Response<v1::PublishResponse>, Status> {
        authorize(
            &request,
            Operation::Produce,
            Target::Topic(&request.get_ref().topic),
        )?;
        let answer = super::records::publish(&self.broker, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn read_records(
        &self,
        request: Request<v1::ReadRecordsRequest>,
    ) -> Result<Response<v1::ReadRecordsResponse>, Status> {
        authorize(
            &request,
            Operation::Consume,
            Target::Topic(&request.get_ref().topic),
        )?;
        let answer = super::records::read_records(&self.broker, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn offset_for_leader_epoch(
        &self,
        request: Request<v1::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<v1::OffsetForLeaderEpochResponse>, Status> {
        authorize(
            &request,
            Operation::Describe,
            Target::Topic(&request.get_ref().topic),
        )?;
        let request = request.into_inner();
        let partition = self
            .broker
            .leader_partition(&request.topic, request.partition)?;
        let log = partition.log().clone();
        let epoch = request.leader_epoch;
        let (found, end_offset) = blocking(move || Ok(log.epoch_end_offset(epoch)?)).await?;
        Ok(Response::new(v1::OffsetForLeaderEpochResponse {
            leader_epoch: found.unwrap_or(-1),
            end_offset,
        }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, offset = request.get_ref().offset))]
    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        if request.get_ref().replica_id.is_some() {
            caller(&request).require_node("fetch as a replica")?;
        }
        authorize(
            &request,
            Operation::Consume,
            Target::Topic(&request.get_ref().topic),
        )?;
        let request = request.into_inner();
        let (partition, topic_created_ms) = self
            .broker
            .leader_replica(&request.topic, request.partition)?;
        let (max_bytes, deadline) = fetch_limits(&request);
        let replica = request.replica_id.is_some();
        if let Some(follower) = request.replica_id {
            let epoch = partition.role().leader_epoch;
            if request.leader_epoch < epoch {
                return Err(Status::failed_precondition(format!(
                    "stale leader epoch {} for {}-{}: the current epoch is {epoch}",
                    request.leader_epoch, request.topic, request.partition
                )));
            }
            if request.leader_epoch > epoch {
                return Err(Status::unavailable(format!(
                    "leader epoch {} for {}-{} is newer than this broker's {epoch}; its metadata is catching up",
                    request.leader_epoch, request.topic, request.partition
                )));
            }
            partition.record_follower(follower, request.offset);
        }
        let started = std::time::Instant::now();
        let fetched = partition
            .fetch(request.offset, max_bytes, deadline, replica)
            .await?;
        if !replica {
            partition.counters().fetched(&fetched.records);
            crate::metrics::request_done(Rpc::Fetch, started);
        }
        Ok(Response::new(v1::FetchResponse {
            records: fetched.records,
            high_watermark: fetched.high_watermark,
            log_start_offset: fetched.log_start_offset,
            log_end_offset: fetched.log_end_offset,
            topic_created_ms,
        }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        authorize(
            &request,
            Operation::Describe,
            Target::Topic(&request.get_ref().topic),
        )?;
        let request = request.into_inner();
        let partition = self
            .broker
            .leader_partition(&request.topic, request.partition)?;
        use v1::list_offsets_request::Spec;
        let offset = match request.spec {
            Some(Spec::Earliest(true) | Spec::TimestampMs(EARLIEST_TIMESTAMP)) => {
                partition.log().log_start_offset()
            }
            Some(Spec::Latest(true) | Spec::TimestampMs(LATEST_TIMESTAMP)) => {
                partition.high_watermark()
            }
            Some(Spec::TimestampMs(ts)) if ts >= 0 => partition.offset_for_timestamp(ts).await?,
            Some(Spec::TimestampMs(ts)) => {
                return Err(Error::InvalidArgument(format!(
                    "timestamp_ms {ts} is negative: use a time in ms, -1 for latest or -2 for earliest"
                ))
                .into());
            }
            Some(Spec::Earliest(false) | Spec::Latest(false)) => {
                return Err(Error::InvalidArgument(
                    "earliest and latest must be true when set; leave them unset otherwise".into(),
                )
                .into());
            }
            None => {
                return Err(Error::InvalidArgument(
                    "list offsets needs one of earliest, latest or timestamp_ms".into(),
                )
                .into());
            }
        };
        Ok(Response::new(v1::ListOffsetsResponse { offset }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn delete_records(
        &self,
        request: Request<v1::DeleteRecordsRequest>,
    ) -> Result<Response<v1::DeleteRecordsResponse>, Status> {
        authorize(
            &request,
            Operation::Admin,
            Target::Topic(&request.get_ref().topic),
        )?;
        let request = request.into_inner();
        let partition = self
            .broker
            .local_partition(&request.topic, request.partition)?;
        let log = partition.log().clone();
        let before = request.before_offset;
        let (deleted, start) = blocking(move || {
            let deleted = log.delete_segments_below(before)?;
            Ok((deleted, log.log_start_offset()))
        })
        .await?;
        if deleted > 0 {
            tracing::info!(topic = %request.topic, partition = request.partition, segments = deleted, log_start_offset = start, "deleted consumed segments");
        }
        Ok(Response::new(v1::DeleteRecordsResponse {
            log_start_offset: start,
            segments_deleted: deleted as u32,
        }))
    }
}

//! The Broker service: Produce, ProduceStream, Fetch and ListOffsets.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pubsub_proto::v1::{self, broker_server::Broker as BrokerRpc};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::broker::Broker;
use crate::error::Error;

/// Fetch size when a request asks for 0 bytes.
pub const FETCH_BYTES_DEFAULT: usize = 1 << 20;
/// Largest fetch response: bounded well below the gRPC message limit.
pub const FETCH_BYTES_MAX: usize = 32 << 20;
/// Longest long poll; a client wanting longer polls again.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Most batches in one produce request: bounds the work one request can queue.
pub const BATCHES_PER_REQUEST_MAX: usize = 1024;
/// Produce requests read ahead on one stream while earlier ones are appended.
const STREAM_BUFFER: usize = 16;

/// Data-path service over the broker's partitions.
pub struct DataService {
    broker: Arc<Broker>,
}

impl DataService {
    /// Serves data requests from `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        DataService { broker }
    }
}

async fn produce(
    broker: &Broker,
    request: v1::ProduceRequest,
) -> Result<v1::ProduceResponse, Error> {
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
    let partition = broker.leader_partition(&request.topic, request.partition)?;
    let base_offsets = partition.append(request.batches).await?;
    let base_offsets = if request.acks == v1::Acks::None as i32 {
        Vec::new()
    } else {
        base_offsets
    };
    Ok(v1::ProduceResponse {
        correlation_id: request.correlation_id,
        base_offsets,
        error: None,
    })
}

type ProduceStreamOut = Pin<Box<dyn Stream<Item = Result<v1::ProduceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BrokerRpc for DataService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        Ok(Response::new(
            produce(&self.broker, request.into_inner()).await?,
        ))
    }

    type ProduceStreamStream = ProduceStreamOut;

    async fn produce_stream(
        &self,
        request: Request<Streaming<v1::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let broker = self.broker.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            // One request at a time, in arrival order: this is what keeps a producer's
            // pipelined batches in order.
            while let Some(next) = inbound.next().await {
                let reply = match next {
                    Ok(request) => {
                        let correlation_id = request.correlation_id;
                        match produce(&broker, request).await {
                            Ok(response) => Ok(response),
                            Err(error) => {
                                let status = Status::from(error);
                                Ok(v1::ProduceResponse {
                                    correlation_id,
                                    base_offsets: Vec::new(),
                                    error: Some(v1::ErrorStatus {
                                        code: status.code() as i32,
                                        message: status.message().to_string(),
                                    }),
                                })
                            }
                        }
                    }
                    Err(status) => Err(status),
                };
                // After a failed request the stream ends: requests behind it are not
                // appended, so a producer that retries it keeps its batches in order.
                let failed = reply.as_ref().map_or(true, |r| r.error.is_some());
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, offset = request.get_ref().offset))]
    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let request = request.into_inner();
        let partition = self
            .broker
            .leader_partition(&request.topic, request.partition)?;
        let max_bytes = match request.max_bytes as usize {
            0 => FETCH_BYTES_DEFAULT,
            n => n.min(FETCH_BYTES_MAX),
        };
        let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let fetched = partition.fetch(request.offset, max_bytes, deadline).await?;
        Ok(Response::new(v1::FetchResponse {
            records: fetched.records,
            high_watermark: fetched.high_watermark,
            log_start_offset: fetched.log_start_offset,
        }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let partition = self
            .broker
            .leader_partition(&request.topic, request.partition)?;
        let offset = match request.spec {
            Some(v1::list_offsets_request::Spec::Earliest(_)) => partition.log().log_start_offset(),
            Some(v1::list_offsets_request::Spec::Latest(_)) => partition.high_watermark(),
            Some(v1::list_offsets_request::Spec::TimestampMs(ts)) => {
                partition.offset_for_timestamp(ts).await?
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
}

//! One Kafka connection: reads size-prefixed requests, decodes each header, hands the
//! request to its API, and writes the answers in request order (Kafka clients pipeline
//! requests on a connection and match answers by order as well as correlation id).
//!
//! A request this listener cannot serve (an unknown API, an unserved version, a body
//! that does not decode, a frame over the size limit) closes the connection, as a Kafka
//! broker does; ApiVersions alone answers an unserved version with UNSUPPORTED_VERSION
//! so that clients can negotiate.

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use pubsub_proto::auth::{Operation, Target};
use pubsub_proto::serve::Conn;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::server::Connected;

use super::groups::GroupLink;
use super::{admin, fetch, groups, metadata, offsets, produce, sasl, versions};
use crate::broker::Broker;

/// Largest request accepted: Kafka's `socket.request.max.bytes` default.
const FRAME_BYTES_MAX: usize = 100 << 20;
/// Requests read ahead of their answers on one connection.
const IN_FLIGHT_MAX: usize = 32;

/// An encoded answer: `None` when the request gets none (a produce with acks=0);
/// `Err` closes the connection, with the reason logged.
pub(super) type Frame = Result<Option<Bytes>, String>;

/// An answer in the making; the writer takes them in request order.
pub(super) enum Pending {
    /// Made while reading the request.
    Ready(Frame),
    /// Made by a task (a long-polling fetch, an acks=all produce, an admin call).
    Later(JoinHandle<Frame>),
}

/// What every API handler gets: the broker, the request's version and who sent it.
#[derive(Clone)]
pub(super) struct Ctx {
    /// The broker whose partitions are served.
    pub broker: Arc<Broker>,
    /// The API version of the request; the answer uses the same.
    pub version: i16,
    api_key: ApiKey,
    correlation_id: i32,
    /// The authenticated principal; `None` while authentication is off.
    principal: Option<String>,
    /// The token the caller authenticated with, while authentication is on; group
    /// calls to the consumer manager carry it.
    pub token: Option<String>,
    /// The consumer manager serving this listener's groups, if any.
    pub groups: Option<Arc<GroupLink>>,
}

impl Ctx {
    /// Whether the caller may do `operation` on topic `name`.
    pub(super) fn allowed(&self, operation: Operation, name: &str) -> bool {
        let access = &self.broker.config().security.access;
        match &self.principal {
            _ if !access.is_on() => true,
            Some(principal) => access
                .snapshot()
                .allows(principal, operation, Target::Topic(name)),
            None => false,
        }
    }

    /// `response` as a whole frame: size, response header, body.
    pub(super) fn frame<R: Encodable>(&self, response: &R) -> Frame {
        encode_frame(self.api_key, self.version, self.correlation_id, response).map(Some)
    }
}

fn encode_frame<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<Bytes, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .and_then(|()| response.encode(&mut buf, version))
        .map_err(|e| format!("cannot encode the {api_key:?} v{version} answer: {e}"))?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| "answer too large".to_string())?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a request body of type `R`; a body that does not decode closes the connection.
pub(super) fn decode<R: Decodable>(
    mut body: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<R, String> {
    R::decode(&mut body, version)
        .map_err(|e| format!("malformed {api_key:?} v{version} request: {e}"))
}

/// Runs `handler` on the decoded request in a task; its answer is written in turn.
pub(super) fn later<R, A, F, Fut>(ctx: Ctx, body: Bytes, handler: F) -> Result<Pending, String>
where
    R: Decodable,
    A: Encodable,
    F: FnOnce(Ctx, R) -> Fut,
    Fut: Future<Output = A> + Send + 'static,
{
    let request = decode::<R>(body, ctx.api_key, ctx.version)?;
    let answering = ctx.clone();
    let answer = handler(ctx, request);
    Ok(Pending::Later(tokio::spawn(async move {
        answering.frame(&answer.await)
    })))
}

/// Serves one connection until the client closes it or sends what cannot be served.
pub(super) async fn serve(broker: Arc<Broker>, groups: Option<Arc<GroupLink>>, stream: Conn) {
    let peer = stream.connect_info().tcp.remote_addr();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (answers, mut to_write) = mpsc::channel::<Pending>(IN_FLIGHT_MAX);
    let writing = tokio::spawn(async move {
        while let Some(pending) = to_write.recv().await {
            let frame = match pending {
                Pending::Ready(frame) => frame,
                Pending::Later(task) => task
                    .await
                    .unwrap_or_else(|e| Err(format!("request task failed: {e}"))),
            };
            match frame {
                Ok(Some(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(peer = ?peer, reason = %reason, "kafka connection closed");
                    break;
                }
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut session = sasl::Session::default();
    loop {
        let body = match read_frame(&mut reader).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(reason) => {
                tracing::debug!(peer = ?peer, reason = %reason, "kafka connection closed");
                break;
            }
        };
        let pending = match handle(&broker, &groups, &mut session, body).await {
            Ok(pending) => pending,
            Err(reason) => Pending::Ready(Err(reason)),
        };
        let closing = matches!(pending, Pending::Ready(Err(_)));
        if answers.send(pending).await.is_err() || closing {
            break;
        }
    }
    drop(answers);
    let _ = writing.await;
}

/// Reads one size-prefixed request; `None` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Bytes>, String> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= FRAME_BYTES_MAX)
        .ok_or_else(|| format!("request size {size} is outside 0..={FRAME_BYTES_MAX}"))?;
    // Grown as bytes arrive, not allocated from the prefix alone.
    let mut body = Vec::with_capacity(size.min(64 << 10));
    let read = reader
        .take(size as u64)
        .read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if read < size {
        return Err(format!(
            "connection closed {read} bytes into a {size}-byte request"
        ));
    }
    Ok(Some(Bytes::from(body)))
}

/// Decodes the request header and hands the body to its API.
async fn handle(
    broker: &Arc<Broker>,
    groups: &Option<Arc<GroupLink>>,
    session: &mut sasl::Session,
    mut body: Bytes,
) -> Result<Pending, String> {
    if body.len() < 8 {
        return Err(format!(
            "request of {} bytes is shorter than a header",
            body.len()
        ));
    }
    let raw_key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| format!("unknown API key {raw_key}"))?;
    if !versions::serves(api_key, version, groups.is_some()) {
        if api_key == ApiKey::ApiVersions {
            let answer = versions::unsupported(groups.is_some());
            return Ok(Pending::Ready(
                encode_frame(api_key, 0, correlation_id, &answer).map(Some),
            ));
        }
        return Err(format!(
            "{api_key:?} v{version} is not served (ApiVersions lists what is)"
        ));
    }
    RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .map_err(|e| format!("malformed request header: {e}"))?;
    let principal = session.principal(broker, api_key)?;
    let ctx = Ctx {
        broker: broker.clone(),
        version,
        api_key,
        correlation_id,
        token: principal.as_ref().and(session.token()).map(str::to_string),
        principal,
        groups: groups.clone(),
    };
    dispatch(ctx, session, body).await
}

async fn dispatch(ctx: Ctx, session: &mut sasl::Session, body: Bytes) -> Result<Pending, String> {
    let ready = |frame: Frame| Ok(Pending::Ready(frame));
    match ctx.api_key {
        ApiKey::ApiVersions => ready(ctx.frame(&versions::answer(ctx.groups.is_some()))),
        ApiKey::SaslHandshake => {
            let request = decode(body, ctx.api_key, ctx.version)?;
            ready(ctx.frame(&session.handshake(request)))
        }
        ApiKey::SaslAuthenticate => {
            let request = decode(body, ctx.api_key, ctx.version)?;
            let answer = session.authenticate(&ctx.broker, request);
            ready(ctx.frame(&answer))
        }
        ApiKey::Metadata => later(ctx, body, metadata::answer),
        ApiKey::Produce => produce::handle(ctx, body).await,
        ApiKey::InitProducerId => later(ctx, body, produce::init_producer_id),
        ApiKey::Fetch => later(ctx, body, fetch::answer),
        ApiKey::ListOffsets => later(ctx, body, offsets::list),
        ApiKey::OffsetForLeaderEpoch => later(ctx, body, offsets::for_leader_epoch),
        ApiKey::CreateTopics => later(ctx, body, admin::create_topics),
        ApiKey::DeleteTopics => later(ctx, body, admin::delete_topics),
        ApiKey::CreatePartitions => later(ctx, body, admin::create_partitions),
        ApiKey::DescribeConfigs => later(ctx, body, admin::describe_configs),
        ApiKey::AlterConfigs => later(ctx, body, admin::alter_configs),
        ApiKey::IncrementalAlterConfigs => later(ctx, body, admin::incremental_alter_configs),
        ApiKey::DeleteRecords => later(ctx, body, offsets::delete_records),
        ApiKey::FindCoordinator => later(ctx, body, groups::find_coordinator),
        ApiKey::JoinGroup => later(ctx, body, groups::join_group),
        ApiKey::SyncGroup => later(ctx, body, groups::sync_group),
        ApiKey::Heartbeat => later(ctx, body, groups::heartbeat),
        ApiKey::LeaveGroup => later(ctx, body, groups::leave_group),
        ApiKey::OffsetCommit => later(ctx, body, groups::offset_commit),
        ApiKey::OffsetFetch => later(ctx, body, groups::offset_fetch),
        ApiKey::DescribeGroups => later(ctx, body, groups::describe_groups),
        ApiKey::ListGroups => later(ctx, body, groups::list_groups),
        ApiKey::DeleteGroups => later(ctx, body, groups::delete_groups),
        other => Err(format!("{other:?} is not served")),
    }
}

//! How every `pubsubd` role builds its gRPC server: the same limits, frame size and
//! keepalive, the authentication layer, and reflection (v1 and v1alpha) that lists only
//! the services the address serves.

mod limit;

use std::sync::Arc;
use std::time::Duration;

pub use limit::{Admitted, ConnectionLimit};

use tonic::transport::Server;
use tower_layer::{Identity, Stack};

use crate::auth::{Access, AuthLayer};
use crate::{FILE_DESCRIPTOR_SET, MAX_FRAME_BYTES, OversizeLayer};

/// Interval of the server's HTTP/2 keepalive pings: notices dead clients on long-lived
/// streams (a follower's fetch, a metadata watch, a subscriber's push stream).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a server's keepalive ping may go unanswered before it drops the connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The gRPC health service's full name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// A server builder with the project's settings, whose every call is authenticated
/// against `access`; add services (each through `with_limits!`) and serve.
pub fn server(access: Arc<Access>) -> Server<Stack<AuthLayer, Stack<OversizeLayer, Identity>>> {
    Server::builder()
        .layer(OversizeLayer)
        .layer(AuthLayer::new(access))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Reflection that lists exactly `served` (and health), so a tool never sees a
/// service that would answer UNIMPLEMENTED here.
fn reflection(served: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(HEALTH_SERVICE);
    served.iter().fold(builder, |builder, name| {
        builder.with_service_name(name.to_string())
    })
}

/// The v1 reflection service listing `served`.
pub fn reflection_v1(
    served: &[&str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection(served).build_v1()
}

/// The v1alpha reflection service listing `served` (grpcurl and older tools ask it).
pub fn reflection_v1alpha(
    served: &[&str],
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection(served).build_v1alpha()
}

/// A connection a role's gRPC server can serve: a byte stream that says what it knows
/// of its peer ([`ConnInfo`], which the auth layer reads). [`Conn`] and
/// [`Admitted`] are.
pub trait Served:
    tonic::transport::server::Connected<ConnectInfo = ConnInfo>
    + tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + Send
    + Unpin
    + 'static
{
}

impl<T> Served for T where
    T: tonic::transport::server::Connected<ConnectInfo = ConnInfo>
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Send
        + Unpin
        + 'static
{
}

/// A stream of accepted connections a server is handed rather than accepting them
/// itself (see [`crate::dial`]).
pub type Connections =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = std::io::Result<Conn>> + Send>>;

/// An accepted connection, plain or TLS: one type, so every role serves either from
/// the same code.
pub enum Conn {
    /// Plain TCP.
    Plain(tokio::net::TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
    /// A stream of another network (see [`crate::dial`]), with the addresses it has.
    Other(
        Box<dyn crate::dial::ByteStream>,
        tonic::transport::server::TcpConnectInfo,
    ),
}

/// What a server knows of a connection: its addresses and, under mutual TLS, the
/// common name of the peer's certificate (a node's identity: `broker-3`).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Local and remote addresses (the auth layer also files them where tonic's
    /// `Request::remote_addr` looks).
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The peer certificate's common name, when it presented one.
    pub peer_name: Option<String>,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(stream) => ConnInfo {
                tcp: stream.connect_info(),
                peer_name: None,
            },
            Conn::Tls(stream) => {
                let (tcp, session) = stream.get_ref();
                let peer_name = session
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(crate::tls::common_name);
                ConnInfo {
                    tcp: tcp.connect_info(),
                    peer_name,
                }
            }
            Conn::Other(_, tcp) => ConnInfo {
                tcp: tcp.clone(),
                peer_name: None,
            },
        }
    }
}

macro_rules! delegate {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            Conn::Plain($stream) => {
                let $stream = std::pin::Pin::new($stream);
                $call
            }
            Conn::Tls($stream) => {
                let $stream = std::pin::Pin::new($stream.as_mut());
                $call
            }
            Conn::Other($stream, _) => {
                let $stream = std::pin::Pin::new($stream.as_mut());
                $call
            }
        }
    };
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Other(s, _) => s.is_write_vectored(),
        }
    }
}

/// What every HTTP/2 client sends first; a TLS client sends a ClientHello instead.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Whether the peer opened with HTTP/2 in plain text (a client without TLS).
async fn speaks_plain_http2(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 14];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match stream.peek(&mut first).await {
                Ok(n) if n >= first.len() || n == 0 => return n,
                Ok(n) if !HTTP2_PREFACE.starts_with(&first[..n]) => return n,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(_) => return 0,
            }
        }
    })
    .await;
    matches!(peeked, Ok(n) if n == first.len()) && first == HTTP2_PREFACE
}

/// Answers every call of a plain-text client with UNAVAILABLE saying the port serves
/// TLS, instead of a broken pipe it cannot make sense of.
async fn refuse_plaintext(stream: tokio::net::TcpStream) {
    let status = tonic::Status::unavailable(
        "this port serves TLS only: connect with TLS (--tls-ca FILE or PUBSUB_TLS_CA)",
    );
    answer_every_call(stream, &status, Duration::from_secs(30)).await;
}

/// Speaks HTTP/2 on `io` only to answer each call with `status`, for at most `linger`.
async fn answer_every_call<IO>(io: IO, status: &tonic::Status, linger: Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(Ok(mut connection)) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, h2::server::handshake(io)).await
    else {
        return;
    };
    let answer = async {
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            let mut response = status.clone().into_http::<()>();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            let _ = respond.send_response(response, true);
        }
    };
    let _ = tokio::time::timeout(linger, answer).await;
}

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connections a role's gRPC listener serves: [`incoming`] under `security`'s TLS,
/// within its connection cap.
pub fn admitted(
    listener: tokio::net::TcpListener,
    security: &crate::auth::NodeSecurity,
) -> impl tokio_stream::Stream<Item = std::io::Result<Admitted>> + use<> {
    let connections = incoming(listener, security.server_tls.clone());
    ConnectionLimit::new(security.max_connections).admit(connections)
}

/// The connections `listener` accepts, with Nagle's algorithm off (acks and Raft
/// heartbeats are small writes) and, with `tls`, after a TLS handshake each (run
/// apart, so a slow client holds no one else up). Ends when the server drops it.
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some(tls) = &tls else {
                if tx.send(Ok(Conn::Plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                let peer = stream.peer_addr().ok();
                if speaks_plain_http2(&stream).await {
                    refuse_plaintext(stream).await;
                    return;
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = ?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

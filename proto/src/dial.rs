//! Connections that are not this process's TCP sockets: a [`Dialer`] opens the byte
//! stream a client channel runs over, and a server serves [`ByteStream`]s it is
//! handed (as [`crate::serve::Conn::Other`]).
//!
//! Production never sets one: every link is TCP (or TLS over it) through
//! [`crate::net::endpoint`]. The seam exists so the same server and client code runs
//! over another network: the deterministic simulation tests run a cluster-manager group
//! over turmoil's simulated TCP, in one thread, with a seeded schedule of partitions
//! and crashes. Every other setting of the channel (keepalive, frame size, timeouts,
//! credentials) is the project's, unchanged.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::Uri;

/// A connected byte stream a channel or a server can run HTTP/2 over.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// What dialing gives: the connected stream, or why it could not be opened.
pub type Dialed = Pin<Box<dyn Future<Output = io::Result<Box<dyn ByteStream>>> + Send>>;

/// Opens connections to `host:port` in place of TCP. Cheap to clone.
#[derive(Clone)]
pub struct Dialer(Arc<dyn Fn(String) -> Dialed + Send + Sync>);

impl Dialer {
    /// A dialer that opens a connection to `host:port` with `dial`.
    pub fn new(dial: impl Fn(String) -> Dialed + Send + Sync + 'static) -> Dialer {
        Dialer(Arc::new(dial))
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dialer")
    }
}

/// The connector tonic calls for each new connection of a channel.
impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<Box<dyn ByteStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let Some(authority) = uri.authority() else {
            let error = io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"));
            return Box::pin(std::future::ready(Err(error)));
        };
        let dialed = (self.0)(authority.to_string());
        Box::pin(async move { dialed.await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower_service::Service;

    use super::*;

    #[tokio::test]
    async fn dials_the_uri_authority() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let ours = std::sync::Mutex::new(Some(ours));
        let mut dialer = Dialer::new(move |address| {
            assert_eq!(address, "node-2:7000");
            let stream = ours.lock().ok().and_then(|mut s| s.take());
            Box::pin(async move {
                let stream = stream.ok_or_else(|| io::Error::other("dialed twice"))?;
                Ok(Box::new(stream) as Box<dyn ByteStream>)
            })
        });
        let uri: Uri = "http://node-2:7000/pubsub.v1.Raft/Vote".parse().unwrap();
        let stream = dialer.call(uri).await.unwrap();
        let mut stream = stream.into_inner();
        stream.write_all(b"ping").await.unwrap();
        let mut read = [0u8; 4];
        theirs.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"ping");
    }

    #[tokio::test]
    async fn a_uri_without_a_host_is_refused() {
        let mut dialer = Dialer::new(|_| Box::pin(async { Err(io::Error::other("unreachable")) }));
        let uri: Uri = "/relative".parse().unwrap();
        let error = dialer.call(uri).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}

//! A listener's cap on open connections (Kafka's `max.connections`). Every connection
//! may hold an HTTP/2 window of requests in the server's memory, so the cap is what
//! bounds that memory when clients pile in; it also keeps file descriptors for the
//! data files. A connection over the cap is not dropped in silence: it is taken, and
//! every call on it is answered RESOURCE_EXHAUSTED with the cap in the message, so a
//! client knows to retry later or that the operator must raise it. At most
//! [`REFUSING_MAX`] such answers run at once; beyond that a connection is closed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};

use super::{Conn, ConnInfo};

/// Refused connections answered at once; more are closed without an answer.
const REFUSING_MAX: usize = 64;
/// Longest a refused connection is kept to answer its calls.
const REFUSAL_LINGER: Duration = Duration::from_secs(5);
/// Refusals are logged at most this often, so a flood does not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many connections a listener holds at once; shared by its accept loop and the
/// connections it admitted (each gives its place back when it closes).
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    open: Arc<Semaphore>,
    max: usize,
    refusing: Arc<Semaphore>,
    /// When the last refusal was logged: one line per [`WARN_EVERY`] at most.
    warned: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl ConnectionLimit {
    /// At most `max` connections; 0 means no cap.
    pub fn new(max: usize) -> Self {
        let permits = match max {
            0 => Semaphore::MAX_PERMITS,
            max => max.min(Semaphore::MAX_PERMITS),
        };
        ConnectionLimit {
            open: Arc::new(Semaphore::new(permits)),
            max,
            refusing: Arc::new(Semaphore::new(REFUSING_MAX)),
            warned: Arc::default(),
        }
    }

    /// The connections `incoming` yields, each holding a place until it closes; those
    /// over the cap are answered RESOURCE_EXHAUSTED instead.
    pub fn admit(
        self,
        incoming: impl Stream<Item = std::io::Result<Conn>>,
    ) -> impl Stream<Item = std::io::Result<Admitted>> {
        incoming.filter_map(move |accepted| {
            let conn = match accepted {
                Ok(conn) => conn,
                Err(e) => return Some(Err(e)),
            };
            match self.open.clone().try_acquire_owned() {
                Ok(place) => Some(Ok(Admitted {
                    conn,
                    _place: place,
                })),
                Err(_) => {
                    self.refuse(conn);
                    None
                }
            }
        })
    }

    /// A place for a connection a caller serves itself (the Kafka listener, whose
    /// clients get no gRPC answer: one over the cap is closed, and logged); `None` at
    /// the cap. The connection holds the place until it is dropped.
    pub fn place(&self) -> Option<OwnedSemaphorePermit> {
        let place = self.open.clone().try_acquire_owned().ok();
        if place.is_none() {
            self.warn();
        }
        place
    }

    /// Logs that connections are being refused, at most once per [`WARN_EVERY`].
    fn warn(&self) {
        let due = self.warned.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        });
        if due {
            tracing::warn!(
                max_connections = self.max,
                "connections refused: at the cap"
            );
        }
    }

    fn refuse(&self, conn: Conn) {
        self.warn();
        let Ok(answering) = self.refusing.clone().try_acquire_owned() else {
            return; // dropped: closed
        };
        let message = format!(
            "too many connections: this server holds at most {} at once; retry later, or raise its --max-connections",
            self.max
        );
        tokio::spawn(async move {
            let status = tonic::Status::resource_exhausted(message);
            super::answer_every_call(conn, &status, REFUSAL_LINGER).await;
            drop(answering);
        });
    }
}

/// A connection within the cap: its place is given back when it is dropped.
pub struct Admitted {
    conn: Conn,
    _place: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_given_while_under_the_cap_and_comes_back_when_dropped() {
        let limit = ConnectionLimit::new(2);
        let first = limit.place().unwrap();
        let _second = limit.place().unwrap();
        assert!(limit.place().is_none());
        drop(first);
        assert!(limit.place().is_some());
        let unlimited = ConnectionLimit::new(0);
        let places: Vec<_> = (0..1000).map(|_| unlimited.place()).collect();
        assert!(places.iter().all(Option::is_some));
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_answered_resource_exhausted_and_a_place_comes_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limit = ConnectionLimit::new(1);
        let admitted = limit.admit(super::super::incoming(listener, None));
        // Driven all along, as a server drives it.
        let (tx, mut admitted_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut admitted = Box::pin(admitted);
            while let Some(conn) = admitted.next().await {
                let _ = tx.send(conn);
            }
        });
        let first = tokio::net::TcpStream::connect(address).await.unwrap();
        let held = admitted_rx.recv().await.unwrap().unwrap();

        // The second is answered on HTTP/2, as a gRPC client sees it.
        let second = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut client, connection) = h2::client::handshake(second).await.unwrap();
        tokio::spawn(connection);
        let request = http::Request::post("http://x/pubsub.v1.Broker/Produce")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("at most 1"), "{status:?}");

        // Once the first closes, a new one is admitted.
        drop((held, first));
        let _third = tokio::net::TcpStream::connect(address).await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(5), admitted_rx.recv()).await;
        assert!(matches!(again, Ok(Some(Ok(_)))));
    }
}

//! The simulated network: cluster managers and brokers listen on turmoil's TCP, and
//! every channel (between them, and from the clients) dials through it.

use std::io;
use std::sync::Arc;

use pubsub_proto::dial::{ByteStream, Dialer};
use pubsub_proto::net::{Channel, ChannelPool, Link};
use pubsub_proto::serve::{Conn, Connections};
use tokio::sync::{Mutex, mpsc};
use tonic::transport::server::TcpConnectInfo;

/// The port cluster managers serve on.
pub const CM_PORT: u16 = 7000;
/// The port brokers serve on.
pub const BROKER_PORT: u16 = 9392;

/// The simulated host name of cluster manager `id`.
pub fn cm_host(id: u64) -> String {
    format!("cm-{id}")
}

/// The address of cluster manager `id`.
pub fn cm_address(id: u64) -> String {
    format!("{}:{CM_PORT}", cm_host(id))
}

/// The simulated host name of broker `id`.
pub fn broker_host(id: u32) -> String {
    format!("broker-{id}")
}

/// The address of broker `id`.
pub fn broker_address(id: u32) -> String {
    format!("{}:{BROKER_PORT}", broker_host(id))
}

/// A simulation of `seed`: 1-20 ms per message, run for at most `limit`.
pub fn simulation<'a>(seed: u64, limit: std::time::Duration) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .simulation_duration(limit)
        .tick_duration(std::time::Duration::from_millis(1))
        .min_message_latency(std::time::Duration::from_millis(1))
        .max_message_latency(crate::faults::LATENCY_MAX)
        .rng_seed(seed)
        .build()
}

/// Opens connections over the simulated network.
pub fn dialer() -> Dialer {
    Dialer::new(|address| {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(address).await?;
            Ok(Box::new(stream) as Box<dyn ByteStream>)
        })
    })
}

/// Channels over the simulated network, with the project's settings.
pub fn pool() -> ChannelPool {
    ChannelPool::new(Link {
        dialer: Some(dialer()),
        ..Link::default()
    })
}

/// A channel from `pool` to cluster manager `id`.
pub fn cm_channel(pool: &ChannelPool, id: u64) -> Channel {
    pool.channel(&cm_address(id))
        .expect("simulated addresses are well formed")
}

/// Listens on `port` and gives each life of the host's server the connections
/// accepted from then on (a node's listener outlives a restart of Raft, as a real
/// one does).
pub async fn listen(port: u16) -> io::Result<impl FnMut() -> Connections> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let info = TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(peer),
            };
            if tx.send(Conn::Other(Box::new(stream), info)).await.is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    Ok(move || {
        let next = |rx: Arc<Mutex<mpsc::Receiver<Conn>>>| async move {
            let conn = rx.lock().await.recv().await?;
            Some((Ok(conn), rx))
        };
        Box::pin(futures::stream::unfold(rx.clone(), next)) as Connections
    })
}

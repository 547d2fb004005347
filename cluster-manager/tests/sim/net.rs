//! The simulated network: cluster-manager nodes listen on turmoil's TCP, and every
//! channel (between the nodes, and from the clients) dials through it.

use std::io;
use std::sync::Arc;

use pubsub_cluster_manager::Connections;
use pubsub_proto::dial::{ByteStream, Dialer};
use pubsub_proto::net::{Channel, ChannelPool, Link};
use pubsub_proto::serve::Conn;
use tokio::sync::{Mutex, mpsc};
use tonic::transport::server::TcpConnectInfo;

/// The port every node serves on.
pub const PORT: u16 = 7000;

/// The address of node `id` (`cm-<id>:7000`).
pub fn address(id: u64) -> String {
    format!("{}:{PORT}", host(id))
}

/// The simulated host name of node `id`.
pub fn host(id: u64) -> String {
    format!("cm-{id}")
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

/// A channel from `pool` to node `id`.
pub fn channel(pool: &ChannelPool, id: u64) -> Channel {
    pool.channel(&address(id))
        .expect("simulated addresses are well formed")
}

/// Listens on [`PORT`] and gives each life of the node the connections accepted
/// from then on (a node's listener outlives a restart of Raft, as a real one does).
pub async fn listen() -> io::Result<impl FnMut() -> Connections> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
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

//! Starts a cluster-manager node: opens its Raft storage, starts Raft, bootstraps a new
//! group when this node should, runs lease expiry, and serves the `ClusterManager` and
//! `Raft` services (plus health and reflection) until shutdown.
//!
//! Shutdown order: metadata watches end, the gRPC server drains (bounded by
//! [`SHUTDOWN_DRAIN`]), lease expiry stops, Raft shuts down, and `run` returns only once
//! every handle on the sled database is gone, so the same data directory can be opened
//! again at once (sled locks it while open).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use pubsub_proto::auth::NodeSecurity;
use pubsub_proto::flush::SledFile;
use pubsub_proto::serve::{Connections, Served};
use pubsub_proto::v1::access_server::AccessServer;
use pubsub_proto::v1::cluster_manager_server::ClusterManagerServer;
use pubsub_proto::v1::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access_sync::keep_access;
use crate::config::ClusterManagerConfig;
use crate::embedded::EmbeddedServices;
use crate::error::{Error, Result};
use crate::lease;
use crate::manager::Manager;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Channels, NetworkFactory};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{NodeId, Raft};
use crate::service::access::AccessService;
use crate::service::cluster::ClusterManagerService;
use crate::service::raft::RaftService;

/// Longest the server waits for in-flight requests once shutdown starts.
pub(crate) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Longest `run` waits for openraft's tasks to drop their storage handles.
const STORAGE_RELEASE_WAIT: Duration = Duration::from_secs(5);
/// First and longest wait before the node starts again after Raft stopped.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// sled's page cache. The metadata is a few MiB; sled's 1 GiB default is for data stores.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// Runs a cluster-manager node on `listener` until `shutdown` resolves.
///
/// If Raft stops on a storage error (a full disk: sled refuses writes until it is
/// reopened), the node stops serving, drops its storage, and starts again from disk
/// with a capped backoff, so it comes back by itself once the disk has room. The
/// listening socket stays open meanwhile; connections wait in its backlog.
pub async fn run(
    config: ClusterManagerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let local = listener.local_addr().map_err(|source| Error::Io {
        path: PathBuf::from("listener"),
        source,
    })?;
    let address = advertised_address(&config, local);
    let listener = listener.into_std().map_err(|source| Error::Io {
        path: PathBuf::from("listener"),
        source,
    })?;
    let front = || {
        listener
            .try_clone()
            .and_then(TcpListener::from_std)
            .map(Front::Listener)
            .map_err(|source| Error::Io {
                path: PathBuf::from("listener"),
                source,
            })
    };
    run_lives(&config, &address, front, shutdown).await
}

/// Runs a cluster-manager node advertised as `address` that serves the connections
/// `connections` gives (one stream per life of the node) until `shutdown` resolves.
///
/// For networks other than this host's TCP (see `pubsub_proto::dial`): the
/// deterministic simulation tests run a group over simulated TCP this way. The
/// connections are served as given: no TLS handshake and no connection cap.
pub async fn run_on_connections(
    config: ClusterManagerConfig,
    address: &str,
    mut connections: impl FnMut() -> Connections,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let front = || Ok(Front::Connections(connections()));
    run_lives(&config, address, front, shutdown).await
}

/// Where a life of the node is served.
pub(crate) enum Front {
    /// Its own gRPC server on this listener.
    Listener(TcpListener),
    /// Its own gRPC server on connections accepted elsewhere.
    Connections(Connections),
    /// Another server's routes, which forward to it while it runs.
    Embedded(EmbeddedServices),
}

/// Runs lives of the node one after the other (each from the storage on disk) until
/// `shutdown`: a life ends when Raft stops, and the next starts after a capped backoff.
pub(crate) async fn run_lives(
    config: &ClusterManagerConfig,
    address: &str,
    mut front: impl FnMut() -> Result<Front>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    tokio::pin!(shutdown);
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut first = true;
    loop {
        let ended = run_once(config, address, front()?, shutdown.as_mut()).await;
        match ended {
            Ended::Shutdown(result) => return result,
            // A node that cannot open its storage at all should say so at once.
            Ended::Failed(e) if first => return Err(e),
            Ended::Failed(e) => {
                tracing::error!(error = %e, retry_in = ?backoff, "cluster manager cannot start from its storage; retrying");
            }
            Ended::RaftStopped(reason) => {
                tracing::error!(reason = %reason, retry_in = ?backoff, "raft stopped; restarting it from disk");
                backoff = RESTART_BACKOFF_MIN;
            }
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.as_mut() => return Ok(()),
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// How one life of the node (storage opened, Raft started, served) ended.
enum Ended {
    /// Shutdown was asked for; the result is the run's.
    Shutdown(Result<()>),
    /// Raft stopped on a fatal error (a storage write failed).
    RaftStopped(String),
    /// Storage or Raft could not be started.
    Failed(Error),
}

/// Opens the storage, starts Raft and serves until shutdown or until Raft stops.
async fn run_once(
    config: &ClusterManagerConfig,
    address: &str,
    front: Front,
    shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Ended {
    let raft_dir = config.data_dir.join("raft");
    let (db, file) = match open_db(&raft_dir).await {
        Ok(opened) => opened,
        Err(e) => return Ended::Failed(e),
    };
    let users = Arc::new(());
    let started = start_raft(config, address, &db, &file, &users, &raft_dir).await;
    let (raft, manager, stopping_tx, pristine) = match started {
        Ok(started) => started,
        Err(e) => {
            release(&users).await;
            return Ended::Failed(e);
        }
    };
    tracing::info!(node_id = config.node_id, address = %address, pristine, "cluster manager starting");
    let mut stopped_reason = None;
    let result = async {
        if pristine && config.bootstraps() {
            bootstrap(&raft, config, address).await?;
        }
        let expiry = tokio::spawn(lease::expire_leases(
            manager.clone(),
            config.lease_check_interval,
        ));
        let gauges = tokio::spawn(crate::gauges::publish(manager.clone()));
        let balance = tokio::spawn(crate::rebalance::run(manager.clone()));
        let access = tokio::spawn(keep_access(
            manager.clone(),
            config.security.access.clone(),
            config.admin_token_path.clone(),
            config.admin_token.clone(),
        ));
        let until = async {
            tokio::select! {
                () = shutdown => {}
                reason = raft_stopped(&raft) => stopped_reason = Some(reason),
            }
        };
        let served = match front {
            Front::Listener(listener) => {
                let security = config.security.clone();
                let connections = pubsub_proto::serve::admitted(listener, &security);
                serve(manager, security, connections, until, stopping_tx).await
            }
            Front::Connections(connections) => {
                let security = config.security.clone();
                serve(manager, security, connections, until, stopping_tx).await
            }
            Front::Embedded(services) => {
                services.start(manager);
                until.await;
                // Watches of this life end; calls wait for the next life.
                stopping_tx.send_replace(true);
                services.stop();
                Ok(())
            }
        };
        expiry.abort();
        access.abort();
        gauges.abort();
        balance.abort();
        // The tasks end at their next await point; a JoinError::Cancelled is expected.
        let _ = expiry.await;
        let _ = access.await;
        let _ = gauges.await;
        let _ = balance.await;
        served
    }
    .await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    drop(raft);
    release(&users).await;
    let flushed = crate::raft::flush(&db, &file)
        .await
        .map_err(|source| Error::Flush {
            path: raft_dir.clone(),
            source,
        });
    drop(db);
    tracing::info!(node_id = config.node_id, "cluster manager stopped");
    match stopped_reason {
        Some(reason) => Ended::RaftStopped(reason),
        None => Ended::Shutdown(result.and(flushed.map(|_| ()))),
    }
}

/// The pieces of a started node: Raft, the manager over it, the sender that tells
/// watchers to stop, and whether the storage was new.
type Started = (Raft, Arc<Manager>, watch::Sender<bool>, bool);

/// Opens the Raft log and state machine in `db` and starts Raft over them.
async fn start_raft(
    config: &ClusterManagerConfig,
    address: &str,
    db: &sled::Db,
    file: &SledFile,
    users: &Arc<()>,
    raft_dir: &Path,
) -> Result<Started> {
    let storage = |source| Error::Storage {
        path: raft_dir.to_path_buf(),
        source,
    };
    let log_store = LogStore::open(db, file.clone(), users).map_err(storage)?;
    let pristine = log_store.is_pristine().map_err(storage)?;
    let (state_machine, view) = StateMachineStore::open(db, file.clone(), users)
        .map_err(|e| Error::Internal(format!("cannot load the metadata snapshot: {e}")))?;
    let pristine = pristine && view.borrow().applied_index == 0;
    let channels = Channels::new(config.security.link.clone());
    let raft = Raft::new(
        config.node_id,
        Arc::new(config.raft.openraft_config()?),
        NetworkFactory::new(channels.clone()),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| Error::Internal(format!("cannot start raft: {e}")))?;
    let (stopping_tx, stopping) = watch::channel(false);
    let manager = Arc::new(Manager::new(
        config.node_id,
        address.to_string(),
        raft.clone(),
        view,
        channels,
        config.lease,
        stopping,
    ));
    Ok((raft, manager, stopping_tx, pristine))
}

/// Resolves with the reason once Raft has stopped for good (a fatal error).
async fn raft_stopped(raft: &Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "raft ended".to_string();
        }
    }
}

/// The configured address, else this node's entry in the peers, else the listener's.
fn advertised_address(config: &ClusterManagerConfig, local: std::net::SocketAddr) -> String {
    config
        .advertised_address
        .clone()
        .or_else(|| {
            config
                .peers
                .iter()
                .find(|p| p.id == config.node_id)
                .map(|p| p.address.clone())
        })
        .unwrap_or_else(|| local.to_string())
}

/// Opens the sled database in `dir` and its data file (see `SledFile`), refusing a
/// store that lost its records.
async fn open_db(dir: &Path) -> Result<(sled::Db, SledFile)> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .map_err(|source| Error::Storage {
                path: dir.clone(),
                source,
            })?;
        let file = SledFile::open(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        guard_store(&dir, &db, &file)?;
        Ok((db, file))
    })
    .await
    .map_err(|e| Error::Internal(format!("opening sled: {e}")))?
}

/// Refuses a store that lost its records since it was last opened (see
/// `pubsub_proto::store_id`), so a damaged store never restarts the node empty.
fn guard_store(dir: &Path, db: &sled::Db, file: &SledFile) -> Result<()> {
    let storage = |source| Error::Storage {
        path: dir.to_path_buf(),
        source,
    };
    let stored = db
        .get(STORE_ID_KEY)
        .map_err(storage)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_ref()).ok());
    pubsub_proto::store_id::check(dir, stored, |id| {
        db.insert(STORE_ID_KEY, &id[..])
            .and_then(|_| db.flush())
            .map_err(std::io::Error::other)?;
        file.sync()
    })?;
    Ok(())
}

/// Where the store's id is kept in the store itself.
const STORE_ID_KEY: &[u8] = b"store_id";

/// Initializes a new group with the configured peers (or this node alone) as voters.
async fn bootstrap(raft: &Raft, config: &ClusterManagerConfig, address: &str) -> Result<()> {
    let members: BTreeMap<NodeId, BasicNode> = if config.peers.is_empty() {
        BTreeMap::from([(config.node_id, BasicNode::new(address))])
    } else {
        config
            .peers
            .iter()
            .map(|p| (p.id, BasicNode::new(&p.address)))
            .collect()
    };
    let voters: Vec<NodeId> = members.keys().copied().collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(voters = ?voters, "initialized a new raft group");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(reason = %e, "raft group already initialized");
            Ok(())
        }
        Err(e) => Err(Error::Internal(format!("cannot initialize raft: {e}"))),
    }
}

/// Serves the services on `connections` until `shutdown`, then flips `stopping` and
/// drains.
async fn serve<C>(
    manager: Arc<Manager>,
    security: NodeSecurity,
    connections: impl futures::Stream<Item = std::io::Result<C>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
    stopping: watch::Sender<bool>,
) -> Result<()>
where
    C: Served,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ClusterManagerServer<ClusterManagerService>>()
        .await;
    health.set_serving::<RaftServer<RaftService>>().await;
    health.set_serving::<AccessServer<AccessService>>().await;
    // Reflection lists only what this address serves.
    let served = [
        pubsub_proto::v1::cluster_manager_server::SERVICE_NAME,
        pubsub_proto::v1::access_server::SERVICE_NAME,
        pubsub_proto::v1::raft_server::SERVICE_NAME,
    ];
    let reflection =
        |e: tonic_reflection::server::Error| Error::Internal(format!("reflection: {e}"));
    let reflection_v1 = pubsub_proto::serve::reflection_v1(&served).map_err(reflection)?;
    let reflection_v1alpha =
        pubsub_proto::serve::reflection_v1alpha(&served).map_err(reflection)?;

    let mut stopped = stopping.subscribe();
    let server = pubsub_proto::serve::server(security.access)
        .add_service(pubsub_proto::with_limits!(health_service))
        .add_service(pubsub_proto::with_limits!(AccessServer::new(
            AccessService::new(manager.clone())
        )))
        .add_service(pubsub_proto::with_limits!(reflection_v1))
        .add_service(pubsub_proto::with_limits!(reflection_v1alpha))
        .add_service(pubsub_proto::with_limits!(ClusterManagerServer::new(
            ClusterManagerService::new(manager.clone())
        )))
        .add_service(pubsub_proto::with_limits!(RaftServer::new(
            RaftService::new(manager)
        )))
        .serve_with_incoming_shutdown(connections, async move {
            // An error means the sender is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(Error::Server),
        () = shutdown => {}
    }
    tracing::info!("cluster manager shutting down");
    stopping.send_replace(true);
    match tokio::time::timeout(SHUTDOWN_DRAIN, &mut server).await {
        Ok(result) => result.map_err(Error::Server),
        Err(_) => {
            tracing::warn!(waited = ?SHUTDOWN_DRAIN, "requests still running at shutdown; dropped");
            Ok(())
        }
    }
}

/// Waits (bounded) until openraft's leftover tasks have dropped their storage handles.
async fn release(users: &Arc<()>) {
    let deadline = tokio::time::Instant::now() + STORAGE_RELEASE_WAIT;
    while Arc::strong_count(users) > 1 {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                handles = Arc::strong_count(users) - 1,
                "raft storage still in use after shutdown"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

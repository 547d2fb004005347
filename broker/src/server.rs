//! Assembles the gRPC server: Admin and Broker services, health, reflection (v1 and
//! v1alpha), compression accepted on every service, and deliberate message limits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pubsub_proto::serve::{Connections, Served};
use pubsub_proto::serve::{admitted, reflection_v1, reflection_v1alpha, server as grpc_server};
use pubsub_proto::v1::admin_server::AdminServer;
use pubsub_proto::v1::broker_server::BrokerServer;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::service::Routes;

use crate::broker::Broker;
use crate::cluster::ClusterLink;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::membership;
use crate::service::{admin::AdminService, data::DataService};

/// How often the log-size and under-replication gauges are set.
const GAUGES_TICK: Duration = Duration::from_secs(5);
/// Interval of the background loop that runs due interval-fsyncs.
const FLUSH_TICK: Duration = Duration::from_millis(50);
/// Longest the server waits for open calls once shutdown starts; with the flush after
/// it, SIGTERM ends a broker well within Kubernetes' 30 s grace period.
pub(crate) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Runs a broker on `listener` until `shutdown` resolves: joins the cluster (register,
/// first metadata), then serves while heartbeats and the metadata watch run.
pub async fn run(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    run_with(config, listener, shutdown, Routes::default(), &[]).await
}

/// [`run`], serving `extra` gRPC services, named `extra_names` (for health and
/// reflection), beside the broker's on the same address (standalone adds the
/// consumer manager this way).
pub async fn run_with(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    extra: Routes,
    extra_names: &[&'static str],
) -> Result<()> {
    tracing::info!(address = ?listener.local_addr().ok(), "broker listening");
    let connections = admitted(listener, &config.security);
    run_served(config, connections, shutdown, extra, extra_names).await
}

/// [`run`] on the connections `connections` gives instead of a listener's: for
/// networks other than this host's TCP (see `pubsub_proto::dial`; the simulation
/// tests run brokers over simulated TCP this way). Served as given: no TLS handshake
/// and no connection cap.
pub async fn run_on_connections(
    config: BrokerConfig,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    run_served(config, connections, shutdown, Routes::default(), &[]).await
}

/// Joins the cluster, then serves `connections` while heartbeats and the metadata
/// watch run, until `shutdown`.
async fn run_served<C>(
    config: BrokerConfig,
    connections: impl Stream<Item = std::io::Result<C>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
    extra: Routes,
    extra_names: &[&'static str],
) -> Result<()>
where
    C: Served,
{
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::DataDir {
        path: config.data_dir.clone(),
        reason: format!("cannot create it: {e}"),
    })?;
    let link = ClusterLink::new(
        config.cluster_managers.clone(),
        config.security.link.clone(),
    )?;
    let local_reads = config.local_reads.clone();
    let broker = Arc::new(Broker::new(config, Arc::new(link)));
    if let Some(reads) = local_reads {
        reads.attach(&broker);
    }
    // Served while it joins, since standalone's own cluster manager answers on this
    // address; until the first metadata is applied, topic requests are UNAVAILABLE
    // and health says NOT_SERVING.
    let joining = {
        let broker = broker.clone();
        async move {
            let lease = membership::join(&broker).await?;
            Ok::<_, Error>(tokio::spawn(membership::maintain(broker, lease)))
        }
    };
    // On shutdown, hand the leaderships over first, then drain.
    let leaving = broker.clone();
    let shutdown = async move {
        shutdown.await;
        membership::leave(&leaving).await;
    };
    let server = serve(broker, connections, shutdown, extra, extra_names);
    tokio::pin!(server);
    let membership = tokio::select! {
        joined = joining => joined?,
        result = &mut server => return result,
    };
    let result = server.await;
    membership.abort();
    result
}

/// Serves an opened broker on `connections` until `shutdown` resolves, then flushes.
pub(crate) async fn serve<C>(
    broker: Arc<Broker>,
    connections: impl Stream<Item = std::io::Result<C>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
    extra: Routes,
    extra_names: &[&'static str],
) -> Result<()>
where
    C: Served,
{
    crate::metrics::describe();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<AdminServer<AdminService>>().await;
    health.set_not_serving::<BrokerServer<DataService>>().await;
    for name in extra_names {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let joined = {
        let broker = broker.clone();
        tokio::spawn(async move {
            broker.joined().await;
            health.set_serving::<AdminServer<AdminService>>().await;
            health.set_serving::<BrokerServer<DataService>>().await;
        })
    };
    // Reflection lists only what this address serves.
    let served: Vec<&str> = [
        pubsub_proto::v1::admin_server::SERVICE_NAME,
        pubsub_proto::v1::broker_server::SERVICE_NAME,
    ]
    .into_iter()
    .chain(extra_names.iter().copied())
    .collect();
    let reflection = |e: tonic_reflection::server::Error| Error::Task(format!("reflection: {e}"));
    let reflection_v1 = reflection_v1(&served).map_err(reflection)?;
    let reflection_v1alpha = reflection_v1alpha(&served).map_err(reflection)?;

    let background = tokio::spawn(background(broker.clone()));
    let kafka = match &broker.config().kafka {
        Some(kafka) => {
            let listener = kafka
                .socket
                .try_clone()
                .and_then(|socket| {
                    socket.set_nonblocking(true)?;
                    TcpListener::from_std(socket)
                })
                .map_err(|e| Error::Listen {
                    address: kafka.advertised_address.clone(),
                    reason: e.to_string(),
                })?;
            Some(tokio::spawn(crate::kafka::serve(broker.clone(), listener)))
        }
        None => None,
    };
    let (start_drain, drain) = tokio::sync::oneshot::channel::<()>();
    let server = grpc_server(broker.config().security.access.clone())
        .layer(crate::join_gate::JoinGateLayer::new(broker.joined_watch()))
        .add_routes(extra)
        .add_service(pubsub_proto::with_limits!(health_service))
        .add_service(pubsub_proto::with_limits!(reflection_v1))
        .add_service(pubsub_proto::with_limits!(reflection_v1alpha))
        .add_service(pubsub_proto::with_limits!(AdminServer::new(
            AdminService::new(broker.clone())
        )))
        .add_service(pubsub_proto::with_limits!(BrokerServer::new(
            DataService::new(broker.clone())
        )))
        .serve_with_incoming_shutdown(connections, async move {
            let _ = drain.await;
        });
    let result = drain_bounded(server, shutdown, start_drain).await;
    background.abort();
    if let Some(kafka) = kafka {
        kafka.abort();
    }
    joined.abort();
    let flushed = broker.flush_all().await;
    tracing::info!("broker stopped");
    result.map_err(|e| Error::Task(format!("grpc server: {e}")))?;
    flushed
}

/// Runs `server` until `shutdown`, then lets it drain for at most [`SHUTDOWN_DRAIN`]:
/// long-lived calls (a follower's fetch, a subscriber's push stream, the embedded
/// consumer manager's own producer connection) would otherwise hold it open forever.
async fn drain_bounded<E>(
    server: impl Future<Output = std::result::Result<(), E>>,
    shutdown: impl Future<Output = ()>,
    start_drain: tokio::sync::oneshot::Sender<()>,
) -> std::result::Result<(), E> {
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    let _ = start_drain.send(());
    match tokio::time::timeout(SHUTDOWN_DRAIN, &mut server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(waited = ?SHUTDOWN_DRAIN, "calls still open at shutdown; dropped");
            Ok(())
        }
    }
}

/// Retention and interval fsyncs, until the server stops.
async fn background(broker: Arc<Broker>) {
    let mut retention = tokio::time::interval(broker.config().retention_check_interval);
    let mut flush = tokio::time::interval(FLUSH_TICK);
    let mut gauges = tokio::time::interval(GAUGES_TICK);
    loop {
        tokio::select! {
            _ = gauges.tick() => crate::metrics::log_gauges(&broker),
            _ = retention.tick() => match broker.apply_retention().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(segments = deleted, "retention deleted segments"),
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            },
            _ = flush.tick() => {
                if let Err(e) = broker.flush_due().await {
                    tracing::error!(error = %e, "interval fsync failed");
                }
            }
        }
    }
}

//! Running a consumer manager: the background work (reloading a failed database,
//! session expiry, topic checks, keep-until-consumed deletion) and, for
//! `pubsubd consumer-manager`, its own gRPC server (the project's server builder,
//! with health and reflection).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pubsub_proto::v1::consumer_manager_server::ConsumerManagerServer;
use tokio::net::TcpListener;

use crate::access_watch::watch_access;
use crate::error::{Error, Result};
use crate::incarnation::{TOPIC_CHECK_INTERVAL, TopicWatch};
use crate::service::ConsumerManagerService;
use crate::supervisor::Supervisor;

/// How often each subscription's lag and unacknowledged records are measured.
const GAUGES_INTERVAL: Duration = Duration::from_secs(5);
/// How often member sessions are checked.
const SESSION_CHECK: Duration = Duration::from_millis(250);

/// The gRPC service of the supervised consumer manager, with the project's transport
/// limits, to serve beside others (standalone serves it on the broker's address).
pub fn grpc_service(supervisor: Arc<Supervisor>) -> ConsumerManagerServer<ConsumerManagerService> {
    pubsub_proto::with_limits!(ConsumerManagerServer::new(ConsumerManagerService::new(
        supervisor
    )))
}

/// Runs the supervisor (a failed database is reloaded from disk), session expiry,
/// the check of subscribed topics (deleted topics end their subscriptions) and
/// keep-until-consumed deletion until the task is dropped.
pub async fn background(supervisor: Arc<Supervisor>) {
    crate::metrics::describe();
    let config = supervisor.config();
    let access = watch_access(config.cluster_managers.clone(), config.security.clone());
    let ownership = async {
        if let Some(ownership) = &config.ownership {
            ownership.keep(|| supervisor.held()).await;
        }
    };
    tokio::join!(
        supervisor.supervise(),
        periodic(&supervisor),
        access,
        ownership
    );
}

/// The periodic work, each pass on the manager serving then (skipped while reloading).
async fn periodic(supervisor: &Supervisor) {
    let mut sessions = tokio::time::interval(SESSION_CHECK);
    let mut topics = tokio::time::interval(TOPIC_CHECK_INTERVAL);
    let mut watch = TopicWatch::default();
    let mut cleanup = tokio::time::interval(supervisor.config().cleanup_interval);
    let mut gauges = tokio::time::interval(GAUGES_INTERVAL);
    loop {
        tokio::select! {
            _ = gauges.tick() => {
                let _ = supervisor.serve(|manager| async move {
                    for subscription in manager.all() {
                        crate::metrics::positions(&manager.describe(&subscription).await);
                    }
                    Ok(())
                }).await;
            }
            _ = sessions.tick() => {
                let _ = supervisor.serve(|manager| async move {
                    manager.expire_members().await;
                    Ok(())
                }).await;
            }
            _ = topics.tick() => {
                let watch = &mut watch;
                let _ = supervisor.serve(|manager| async move {
                    manager.check_topics(watch).await;
                    Ok(())
                }).await;
            }
            _ = cleanup.tick() => match supervisor.serve(|manager| async move { manager.delete_consumed().await }).await {
                Ok(0) | Err(Error::Reloading | Error::Loading) => {}
                Ok(deleted) => tracing::info!(segments = deleted, "deleted segments every subscription consumed"),
                Err(e) => tracing::warn!(error = %e, "keep-until-consumed pass failed"),
            },
        }
    }
}

/// Serves a consumer manager alone on `listener` until `shutdown` resolves.
pub async fn run(
    supervisor: Arc<Supervisor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ConsumerManagerServer<ConsumerManagerService>>()
        .await;
    let background = tokio::spawn(background(supervisor.clone()));
    let mut serving = supervisor.serving();
    let health_follows = tokio::spawn(async move {
        // Health says NOT_SERVING while the subscriptions are (re)loaded.
        loop {
            let now = *serving.borrow_and_update();
            let status = if now {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health
                .set_service_status(
                    pubsub_proto::v1::consumer_manager_server::SERVICE_NAME,
                    status,
                )
                .await;
            if serving.changed().await.is_err() {
                break;
            }
        }
    });
    tracing::info!(address = ?listener.local_addr().ok(), "consumer manager listening");
    let served = [pubsub_proto::v1::consumer_manager_server::SERVICE_NAME];
    let reflection_v1 = pubsub_proto::serve::reflection_v1(&served)?;
    let reflection_v1alpha = pubsub_proto::serve::reflection_v1alpha(&served)?;
    let result = pubsub_proto::serve::server(supervisor.config().security.access.clone())
        .add_service(pubsub_proto::with_limits!(health_service))
        .add_service(pubsub_proto::with_limits!(reflection_v1))
        .add_service(pubsub_proto::with_limits!(reflection_v1alpha))
        .add_service(grpc_service(supervisor.clone()))
        .serve_with_incoming_shutdown(
            pubsub_proto::serve::admitted(listener, &supervisor.config().security),
            shutdown,
        )
        .await;
    background.abort();
    health_follows.abort();
    let flushed = supervisor.flush().await;
    result?;
    flushed
}

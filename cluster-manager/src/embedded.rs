//! A cluster-manager node served by another server, on that server's address.
//!
//! `pubsubd standalone` runs a one-node cluster manager beside its broker and serves
//! both on the one listen address. The node restarts Raft from disk when Raft stops
//! (a full disk, say), and each life has its own [`Manager`], so the server cannot hold
//! the service of one life: it holds an [`EmbeddedServices`], whose routes forward
//! each call to the life that is running; between lives a call waits for the next
//! (UNAVAILABLE after 10 s).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use pubsub_proto::v1::access_server::AccessServer;
use pubsub_proto::v1::cluster_manager_server::ClusterManagerServer;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::config::ClusterManagerConfig;
use crate::error::Result;
use crate::manager::Manager;
use crate::server::{Front, run_lives};
use crate::service::access::AccessService;
use crate::service::cluster::ClusterManagerService;

/// The `ClusterManager` and `Access` services of whichever life of an embedded node is
/// running.
#[derive(Clone, Default)]
pub struct EmbeddedServices {
    cluster_manager: Swappable<ClusterManagerServer<ClusterManagerService>>,
    access: Swappable<AccessServer<AccessService>>,
}

impl EmbeddedServices {
    /// The `ClusterManager` route to add to the hosting server (`Routes::add_service`).
    pub fn cluster_manager(&self) -> Swappable<ClusterManagerServer<ClusterManagerService>> {
        self.cluster_manager.clone()
    }

    /// The `Access` route to add to the hosting server.
    pub fn access(&self) -> Swappable<AccessServer<AccessService>> {
        self.access.clone()
    }

    /// A life started: its manager answers from now on.
    pub(crate) fn start(&self, manager: Arc<Manager>) {
        let access =
            pubsub_proto::with_limits!(AccessServer::new(AccessService::new(manager.clone())));
        let service = pubsub_proto::with_limits!(ClusterManagerServer::new(
            ClusterManagerService::new(manager)
        ));
        self.access.set(Some(access));
        self.cluster_manager.set(Some(service));
    }

    /// The life ended: calls are answered UNAVAILABLE until the next one.
    pub(crate) fn stop(&self) {
        self.cluster_manager.set(None);
        self.access.set(None);
    }
}

/// Runs a cluster-manager node whose services `services` hands to a hosting server,
/// until `shutdown` resolves; restarts Raft from disk as [`crate::run`] does.
pub async fn run_embedded(
    config: ClusterManagerConfig,
    services: EmbeddedServices,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let address = config
        .advertised_address
        .clone()
        .unwrap_or_else(|| "embedded".to_string());
    run_lives(
        &config,
        &address,
        || Ok(Front::Embedded(services.clone())),
        shutdown,
    )
    .await
}

/// Longest a call waits for a life of the node to be running.
const LIFE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A gRPC service that can be replaced, or be absent, while a server holds it.
pub struct Swappable<S> {
    current: Arc<watch::Sender<Option<S>>>,
}

impl<S> Default for Swappable<S> {
    fn default() -> Self {
        Swappable {
            current: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl<S> Clone for Swappable<S> {
    fn clone(&self) -> Self {
        Swappable {
            current: self.current.clone(),
        }
    }
}

impl<S> Swappable<S> {
    fn set(&self, service: Option<S>) {
        self.current.send_replace(service);
    }
}

impl<S: NamedService> NamedService for Swappable<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Swappable<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mut current = self.current.subscribe();
        Box::pin(async move {
            // Between lives (starting, or restarting from disk) a call waits a little.
            let service =
                match tokio::time::timeout(LIFE_WAIT, current.wait_for(Option::is_some)).await {
                    Ok(Ok(service)) => service.clone(),
                    _ => None,
                };
            let Some(mut service) = service else {
                let status = tonic::Status::unavailable(format!(
                    "the cluster manager has not started from its storage within {LIFE_WAIT:?}; retry in a moment"
                ));
                return Ok(status.into_http());
            };
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every call with a 200 carrying its name.
    #[derive(Clone)]
    struct Named(&'static str);

    impl NamedService for Named {
        const NAME: &'static str = "test.Named";
    }

    impl Service<http::Request<Body>> for Named {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
            let mut response = http::Response::new(Body::default());
            response
                .headers_mut()
                .insert("life", http::HeaderValue::from_static(self.0));
            std::future::ready(Ok(response))
        }
    }

    async fn ask(service: &mut Swappable<Named>) -> http::Response<Body> {
        service
            .call(http::Request::new(Body::default()))
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn calls_go_to_the_running_life_and_wait_between_lives() {
        let slot = Swappable::<Named>::default();
        let mut route = slot.clone();
        assert_eq!(
            ask(&mut route).await.headers()["grpc-status"],
            "14",
            "UNAVAILABLE when no life starts in time"
        );
        slot.set(Some(Named("first")));
        assert_eq!(ask(&mut route).await.headers()["life"], "first");
        slot.set(None);
        let waiting = tokio::spawn({
            let mut route = route.clone();
            async move { ask(&mut route).await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "waits for the next life");
        slot.set(Some(Named("second")));
        assert_eq!(waiting.await.unwrap().headers()["life"], "second");
        assert_eq!(<Swappable<Named> as NamedService>::NAME, "test.Named");
    }
}

//! A cluster-manager node served by another server, on that server's address.
//!
//! `pubsubd standalone` runs a one-node cluster manager beside its broker and serves
//! both on the one listen address. The node restarts Raft from disk when Raft stops
//! (a full disk, say), and each life has its own [`Manager`], so the server cannot hold
//! the service of one life: it holds an [`EmbeddedServices`], whose routes forward
//! each call to the life that is running, or answer UNAVAILABLE between lives.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use pubsub_proto::v1::cluster_manager_server::ClusterManagerServer;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::config::ClusterManagerConfig;
use crate::error::Result;
use crate::manager::Manager;
use crate::server::{Front, run_lives};
use crate::service::cluster::ClusterManagerService;

/// The `ClusterManager` service of whichever life of an embedded node is running.
#[derive(Clone, Default)]
pub struct EmbeddedServices {
    cluster_manager: Swappable<ClusterManagerServer<ClusterManagerService>>,
}

impl EmbeddedServices {
    /// The route to add to the hosting server (`Routes::add_service`).
    pub fn cluster_manager(&self) -> Swappable<ClusterManagerServer<ClusterManagerService>> {
        self.cluster_manager.clone()
    }

    /// A life started: its manager answers from now on.
    pub(crate) fn start(&self, manager: Arc<Manager>) {
        let service = pubsub_proto::with_limits!(ClusterManagerServer::new(
            ClusterManagerService::new(manager)
        ));
        self.cluster_manager.set(Some(service));
    }

    /// The life ended: calls are answered UNAVAILABLE until the next one.
    pub(crate) fn stop(&self) {
        self.cluster_manager.set(None);
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

/// A gRPC service that can be replaced, or be absent, while a server holds it.
pub struct Swappable<S> {
    current: Arc<RwLock<Option<S>>>,
}

impl<S> Default for Swappable<S> {
    fn default() -> Self {
        Swappable {
            current: Arc::new(RwLock::new(None)),
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
        if let Ok(mut current) = self.current.write() {
            *current = service;
        }
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
        let current = self.current.read().ok().and_then(|c| c.clone());
        Box::pin(async move {
            let Some(mut service) = current else {
                let status = tonic::Status::unavailable(
                    "the cluster manager is restarting from its storage; retry in a moment",
                );
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

    #[tokio::test]
    async fn calls_go_to_the_running_life_or_are_unavailable_between_lives() {
        let slot = Swappable::<Named>::default();
        let mut route = slot.clone();
        assert_eq!(ask(&mut route).await.headers()["grpc-status"], "14");
        slot.set(Some(Named("first")));
        assert_eq!(ask(&mut route).await.headers()["life"], "first");
        slot.set(None);
        assert_eq!(ask(&mut route).await.headers()["grpc-status"], "14");
        slot.set(Some(Named("second")));
        assert_eq!(ask(&mut route).await.headers()["life"], "second");
        assert_eq!(<Swappable<Named> as NamedService>::NAME, "test.Named");
    }
}

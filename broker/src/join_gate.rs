//! Requests that need the cluster's metadata wait until the broker has joined.
//!
//! A broker serves its address while it joins the cluster, because `pubsubd
//! standalone` answers its own cluster manager there. Until the first metadata
//! snapshot is applied the broker knows no topic, so a produce, fetch or admin call
//! arriving then waits (as it would in the listener's backlog) instead of hearing
//! "topic does not exist"; after [`JOIN_WAIT`] it is answered UNAVAILABLE. The
//! cluster manager's service, health and reflection pass at once.

use std::task::{Context, Poll};
use std::time::Duration;

use pubsub_proto::v1::cluster_manager_server;
use tokio::sync::watch;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};

/// Longest a request waits for the broker to join.
pub(crate) const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Services whose calls never wait: the embedded cluster manager (which the broker
/// joins through), health and reflection.
const UNGATED: [&str; 3] = [
    cluster_manager_server::SERVICE_NAME,
    "grpc.health.v1.Health",
    "grpc.reflection.",
];

/// Wraps a server's routes so calls wait for `joined`.
#[derive(Clone, Debug)]
pub(crate) struct JoinGateLayer {
    joined: watch::Receiver<bool>,
}

impl JoinGateLayer {
    /// A gate that opens when `joined` turns true.
    pub(crate) fn new(joined: watch::Receiver<bool>) -> Self {
        JoinGateLayer { joined }
    }
}

impl<S> tower_layer::Layer<S> for JoinGateLayer {
    type Service = JoinGate<S>;

    fn layer(&self, inner: S) -> JoinGate<S> {
        JoinGate {
            inner,
            joined: self.joined.clone(),
        }
    }
}

/// The gated service of [`JoinGateLayer`].
#[derive(Clone, Debug)]
pub(crate) struct JoinGate<S> {
    inner: S,
    joined: watch::Receiver<bool>,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for JoinGate<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
    ResponseBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        // The clone that was not polled stays; the one taken is polled below.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().trim_start_matches('/');
        let waits = !*self.joined.borrow() && !UNGATED.iter().any(|s| path.starts_with(s));
        let mut joined = self.joined.clone();
        Box::pin(async move {
            if waits {
                let opened = tokio::time::timeout(JOIN_WAIT, joined.wait_for(|&j| j)).await;
                if !matches!(opened, Ok(Ok(_))) {
                    let status = tonic::Status::unavailable(format!(
                        "this broker has not joined the cluster within {JOIN_WAIT:?}; is the cluster manager reachable?"
                    ));
                    return Ok(status.into_http());
                }
            }
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use tower_layer::Layer;

    /// Answers every call with an empty 200.
    #[derive(Clone)]
    struct Ok200;

    impl Service<Request<()>> for Ok200 {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(String::new())))
        }
    }

    fn call(gate: &mut JoinGate<Ok200>, path: &str) -> BoxFuture<Response<String>, Infallible> {
        gate.call(Request::builder().uri(path).body(()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn calls_wait_for_the_join_except_the_cluster_managers() {
        let (joined, watch) = watch::channel(false);
        let mut gate = JoinGateLayer::new(watch).layer(Ok200);
        let waiting = tokio::spawn(call(&mut gate, "/pubsub.v1.Admin/ListTopics"));
        let passed = call(&mut gate, "/pubsub.v1.ClusterManager/RegisterBroker").await;
        assert!(passed.unwrap().headers().get("grpc-status").is_none());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "waits while the broker joins");
        joined.send_replace(true);
        let answered = waiting.await.unwrap().unwrap();
        assert!(
            answered.headers().get("grpc-status").is_none(),
            "served once joined"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_refused_when_the_join_takes_too_long() {
        let (_joined, watch) = watch::channel(false);
        let mut gate = JoinGateLayer::new(watch).layer(Ok200);
        let answered = call(&mut gate, "/pubsub.v1.Broker/Produce").await.unwrap();
        assert_eq!(answered.headers()["grpc-status"], "14", "UNAVAILABLE");
    }
}

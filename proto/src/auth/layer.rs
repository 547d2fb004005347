//! The one place calls are authenticated: a tower layer on every `pubsubd` server.
//!
//! It reads the `authorization` header, decides who is calling (a node presenting the
//! cluster secret, or a principal presenting a bearer token), refuses calls only nodes
//! may make, and hands the [`Caller`] to the handlers in the request's extensions.
//! Handlers then ask [`authorize`] about the resource the call touches, which only they
//! can name (the topic of a produce is inside the message).

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};

use super::access::{Access, AuthError};
use super::rules::{Operation, Target};
use crate::serve::ConnInfo;

/// The header clients and nodes put their credentials in.
pub const AUTHORIZATION: &str = "authorization";

/// Calls that need no credentials: health checks and reflection.
const PUBLIC_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Calls only nodes make: Raft, broker and consumer-manager membership, replication of metadata and
/// access rules. A client token never grants them.
const NODE_ONLY: [&str; 8] = [
    "/pubsub.v1.Raft/",
    "/pubsub.v1.ClusterManager/ConsumerManagerHeartbeat",
    "/pubsub.v1.ClusterManager/RegisterBroker",
    "/pubsub.v1.ClusterManager/Heartbeat",
    "/pubsub.v1.ClusterManager/UpdateIsr",
    "/pubsub.v1.ClusterManager/ShutdownBroker",
    "/pubsub.v1.ClusterManager/WatchMetadata",
    "/pubsub.v1.Access/WatchAccess",
];

/// Who made a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Authentication is off on this node: everything is allowed.
    Open,
    /// Another node of the cluster.
    Node,
    /// A principal, by the token it presented.
    Principal {
        /// The principal's name.
        name: String,
        /// The presented token's id (re-checked on every message of a stream, so a
        /// revoked token stops working mid-stream).
        token_id: String,
    },
}

/// The caller of a request, as the layer found it, with the rules to check it against.
#[derive(Clone, Debug)]
pub struct Caller {
    identity: Identity,
    access: Arc<Access>,
    certified_name: Option<String>,
}

impl Caller {
    /// A caller with every right, for calls a node makes to itself.
    pub fn open() -> Caller {
        Caller {
            identity: Identity::Open,
            access: Access::off(),
            certified_name: None,
        }
    }

    /// The common name of the certificate it presented under mutual TLS (a node's
    /// identity, such as `broker-3`).
    pub fn certified_name(&self) -> Option<&str> {
        self.certified_name.as_deref()
    }

    /// Who it is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether it is another node of the cluster (or authentication is off).
    pub fn is_node(&self) -> bool {
        matches!(self.identity, Identity::Open | Identity::Node)
    }

    /// Whether it may do `operation` on `target` (listings keep only what this says).
    pub fn may(&self, operation: Operation, target: Target<'_>) -> bool {
        self.authorize(operation, target).is_ok()
    }

    /// OK if it may do `operation` on `target`; PERMISSION_DENIED naming both otherwise
    /// (UNAUTHENTICATED if its token was revoked or expired since the call began).
    pub fn authorize(&self, operation: Operation, target: Target<'_>) -> Result<(), Status> {
        let Identity::Principal { name, token_id } = &self.identity else {
            return Ok(());
        };
        match self.access.check(name, token_id, operation, target) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::permission_denied(format!(
                "principal {name:?} may not {operation} {target}; an admin can grant it with `pubsub acl add`"
            ))),
            Err(e) => Err(Status::unauthenticated(e.to_string())),
        }
    }

    /// OK if it is a node; PERMISSION_DENIED otherwise.
    pub fn require_node(&self, what: &str) -> Result<(), Status> {
        if self.is_node() {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "only cluster nodes may {what}"
            )))
        }
    }
}

/// The caller of a request; a request that did not pass the layer (a handler called
/// directly, in a test) counts as open.
pub fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::open)
}

/// OK if the request's caller may do `operation` on `target`.
pub fn authorize<T>(
    request: &tonic::Request<T>,
    operation: Operation,
    target: Target<'_>,
) -> Result<(), Status> {
    match request.extensions().get::<Caller>() {
        Some(caller) => caller.authorize(operation, target),
        None => Ok(()),
    }
}

/// Decides who is calling, from the path and the `authorization` header.
fn identify(access: &Access, path: &str, header: Option<&str>) -> Result<Identity, Status> {
    if !access.is_on() {
        return Ok(Identity::Open);
    }
    let node_only = NODE_ONLY.iter().any(|p| path.starts_with(p));
    let header = header.ok_or_else(|| Status::unauthenticated(AuthError::Missing.to_string()))?;
    if let Some(secret) = header.strip_prefix("Node ") {
        return if access.is_node_secret(secret) {
            Ok(Identity::Node)
        } else {
            Err(Status::unauthenticated(AuthError::WrongSecret.to_string()))
        };
    }
    let bearer = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated(AuthError::Malformed.to_string()))?;
    let (name, token_id) = access.authenticate(bearer.trim()).map_err(|e| match e {
        AuthError::NotLoaded => Status::unavailable(e.to_string()),
        e => Status::unauthenticated(e.to_string()),
    })?;
    if node_only {
        let method = path.rsplit('/').next().unwrap_or(path);
        return Err(Status::permission_denied(format!(
            "only cluster nodes may call {method}; principal {name:?} is a client"
        )));
    }
    Ok(Identity::Principal { name, token_id })
}

/// A tower layer that authenticates every call to the server it wraps.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    access: Arc<Access>,
}

impl AuthLayer {
    /// Checks calls against `access`.
    pub fn new(access: Arc<Access>) -> AuthLayer {
        AuthLayer { access }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            access: self.access.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
    access: Arc<Access>,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for Authenticate<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        let connection = request.extensions().get::<ConnInfo>().cloned();
        if let Some(connection) = &connection {
            // Where tonic's `Request::remote_addr` looks.
            request.extensions_mut().insert(connection.tcp.clone());
        }
        let path = request.uri().path();
        if PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(request));
        }
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match identify(&self.access, path, header) {
            Ok(identity) => {
                let access = self.access.clone();
                let certified_name = connection.and_then(|c| c.peer_name);
                let caller = Caller {
                    identity,
                    access,
                    certified_name,
                };
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let response = status.into_http::<ResponseBody>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token;
    use crate::v1;

    fn access() -> (Arc<Access>, String) {
        let access = Access::on("node-secret");
        let new = token::generate();
        access.update(&v1::AccessControl {
            version: 1,
            tokens: vec![v1::TokenInfo {
                id: new.id.clone(),
                principal: "bob".into(),
                created_ms: 0,
                expires_ms: None,
            }],
            token_hashes: vec![new.hash.to_vec().into()],
            rules: vec![],
        });
        (access, new.token)
    }

    #[test]
    fn callers_are_identified_by_their_header() {
        let (access, token) = access();
        let bearer = format!("Bearer {token}");
        let produce = "/pubsub.v1.Broker/Produce";
        let raft = "/pubsub.v1.Raft/Vote";
        let code = |path, header| identify(&access, path, header).map_err(|s| s.code());
        assert_eq!(code(produce, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            code(produce, Some("Basic x")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(produce, Some("Bearer pst_nope")),
            Err(tonic::Code::Unauthenticated)
        );
        assert!(matches!(
            code(produce, Some(&bearer)),
            Ok(Identity::Principal { .. })
        ));
        assert_eq!(
            code(raft, Some(&bearer)),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(raft, Some("Node node-secret")), Ok(Identity::Node));
        assert_eq!(
            code(raft, Some("Node guess")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            identify(&Access::off(), raft, None).ok(),
            Some(Identity::Open)
        );
    }
}

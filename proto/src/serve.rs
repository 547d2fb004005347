//! How every `pubsubd` role builds its gRPC server: the same limits, frame size and
//! keepalive, the authentication layer, and reflection (v1 and v1alpha) that lists only
//! the services the address serves.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Server;
use tower_layer::{Identity, Stack};

use crate::auth::{Access, AuthLayer};
use crate::{FILE_DESCRIPTOR_SET, MAX_FRAME_BYTES, OversizeLayer};

/// Interval of the server's HTTP/2 keepalive pings: notices dead clients on long-lived
/// streams (a follower's fetch, a metadata watch, a subscriber's push stream).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a server's keepalive ping may go unanswered before it drops the connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The gRPC health service's full name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// A server builder with the project's settings, whose every call is authenticated
/// against `access`; add services (each through `with_limits!`) and serve.
pub fn server(access: Arc<Access>) -> Server<Stack<AuthLayer, Stack<OversizeLayer, Identity>>> {
    Server::builder()
        .layer(OversizeLayer)
        .layer(AuthLayer::new(access))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Reflection that lists exactly `served` (and health), so a tool never sees a
/// service that would answer UNIMPLEMENTED here.
fn reflection(served: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(HEALTH_SERVICE);
    served.iter().fold(builder, |builder, name| {
        builder.with_service_name(name.to_string())
    })
}

/// The v1 reflection service listing `served`.
pub fn reflection_v1(
    served: &[&str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection(served).build_v1()
}

/// The v1alpha reflection service listing `served` (grpcurl and older tools ask it).
pub fn reflection_v1alpha(
    served: &[&str],
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection(served).build_v1alpha()
}

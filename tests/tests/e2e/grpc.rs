//! What any gRPC tool expects of the server: health, reflection as both v1 and
//! v1alpha, and compressed requests accepted on every service.

use pubsub_client::Client;
use pubsub_tests::Server;
use tonic::codec::CompressionEncoding;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

async fn channel(server: &Server) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", server.address()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_with_compression() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = channel(&server).await;
    // NOT_SERVING until the broker has joined its (embedded) cluster manager.
    let mut health = HealthClient::new(channel.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let request = HealthCheckRequest {
            service: "pubsub.v1.Broker".into(),
        };
        let status = health.check(request).await.unwrap().into_inner().status;
        if status == ServingStatus::Serving as i32 {
            break;
        }
        assert_eq!(status, ServingStatus::NotServing as i32);
        assert!(std::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut health = HealthClient::new(channel.clone()).send_compressed(encoding);
        let served = [
            "",
            "pubsub.v1.Broker",
            "pubsub.v1.Admin",
            "pubsub.v1.ConsumerManager",
            "pubsub.v1.ClusterManager",
        ];
        for service in served {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            let status = health.check(request).await.unwrap().into_inner().status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let client = Client::connect(server.address()).await.unwrap();
        let topics = client
            .admin_stub()
            .send_compressed(encoding)
            .list_topics(pubsub_proto::v1::ListTopicsRequest {})
            .await;
        assert!(topics.is_ok(), "{encoding:?}: {topics:?}");
    }

    let names = reflected_services(channel.clone()).await;
    assert!(names.contains(&"pubsub.v1.Broker".to_string()), "{names:?}");
    assert!(names.contains(&"pubsub.v1.Admin".to_string()), "{names:?}");
    assert!(
        names.contains(&"pubsub.v1.ConsumerManager".to_string()),
        "{names:?}"
    );
    // Standalone serves its cluster manager on its one address, but not Raft (a
    // one-node group has no peers to talk to).
    assert!(
        names.contains(&"pubsub.v1.ClusterManager".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"pubsub.v1.Raft".to_string()), "{names:?}");

    use tonic_reflection::pb::v1alpha as alpha;
    let mut v1alpha = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = v1alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
}

/// The services reflection (v1, gzip) lists on `channel`.
pub async fn reflected_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut v1 = ServerReflectionClient::new(channel).send_compressed(CompressionEncoding::Gzip);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = v1
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

//! Keeps the consumer manager's copy of the access rules current. Brokers get theirs
//! with the cluster metadata; a standalone consumer manager watches the cluster
//! managers' `Access.WatchAccess` instead.

use std::time::Duration;

use pubsub_proto::auth::NodeSecurity;
use pubsub_proto::net::ChannelPool;
use pubsub_proto::v1::{self, access_client::AccessClient};

/// Pause before trying the cluster managers again after every watch ended.
const RETRY: Duration = Duration::from_secs(1);

/// Watches the access rules at `cluster_managers` (each in turn, as they fail) and
/// applies them to `security.access`, for as long as the task runs. Does nothing with
/// access control off.
pub(crate) async fn watch_access(cluster_managers: Vec<String>, security: NodeSecurity) {
    if !security.is_on() || cluster_managers.is_empty() {
        return;
    }
    let pool = ChannelPool::new(security.link.clone());
    loop {
        for address in &cluster_managers {
            let Ok(channel) = pool.channel(address) else {
                tracing::warn!(address = %address, "bad cluster-manager address");
                continue;
            };
            match AccessClient::new(channel)
                .watch_access(v1::WatchAccessRequest {})
                .await
            {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    while let Ok(Some(access)) = stream.message().await {
                        security.access.update(&access);
                    }
                    tracing::debug!(address = %address, "access watch ended; reconnecting");
                }
                Err(status) => {
                    tracing::warn!(address = %address, error = %status.message(), "cannot watch the access rules");
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

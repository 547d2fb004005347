//! The gRPC services every cluster-manager node serves.
//!
//! - [`access`]: `Access`, tokens and access rules.
//! - [`cluster`]: `ClusterManager`, for brokers and clients.
//! - [`balance`]: its PlanBalance call.
//! - [`consumers`]: its ConsumerManagerHeartbeat call.
//! - [`raft`]: `Raft`, between cluster-manager nodes.

pub(crate) mod access;
pub(crate) mod balance;
pub(crate) mod cluster;
pub(crate) mod consumers;
pub(crate) mod raft;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::Status;

use crate::manager::Manager;
use crate::raft::state_machine::MetadataView;

/// A stream of what `project` makes of the metadata: once as it is, then after every
/// change, until the caller hangs up or the node stops. `watch` keeps only the newest
/// value, so a slow reader skips to it.
pub(crate) fn watch<T: Send + 'static>(
    manager: Arc<Manager>,
    project: impl Fn(&MetadataView, &Manager) -> T + Send + Sync + 'static,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let watching = manager.subscribe();
    let stopping = manager.stopping();
    let project = Arc::new(project);
    let stream = futures::stream::unfold(
        (watching, stopping, manager, true),
        move |(mut watching, mut stopping, manager, first)| {
            let project = project.clone();
            async move {
                if *stopping.borrow() {
                    return None;
                }
                if !first {
                    tokio::select! {
                        changed = watching.changed() => changed.ok()?,
                        _ = stopping.wait_for(|stop| *stop) => return None,
                    }
                }
                let view = watching.borrow_and_update().clone();
                let item = project(&view, &manager);
                Some((Ok(item), (watching, stopping, manager, false)))
            }
        },
    );
    Box::pin(stream)
}

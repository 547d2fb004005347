//! Reads of this broker's partitions by a consumer manager in the same process
//! (`pubsubd standalone`): the fetch a gRPC Fetch would answer, without encoding the
//! response, crossing loopback and decoding it again.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use pubsub_proto::v1;
use tonic::Status;

use crate::broker::Broker;
use crate::service::data::fetch_limits;

/// A handle the binary gives both the broker (through [`crate::BrokerConfig`]) and a
/// consumer manager in the same process; it reads once the broker is running.
#[derive(Clone, Debug, Default)]
pub struct LocalReads {
    /// The running broker; a broker started again with the same handle replaces it.
    broker: Arc<Mutex<Weak<Broker>>>,
}

impl LocalReads {
    /// Called by the broker once it exists.
    pub(crate) fn attach(&self, broker: &Arc<Broker>) {
        *self.broker.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(broker);
    }

    /// A consumer's fetch (never a replica's), answered as the broker's Fetch answers
    /// it, if this broker leads the partition; `None` otherwise (not running, not
    /// joined, not the leader, no such partition here), and the caller asks the
    /// cluster over gRPC. The caller is trusted (it runs in this process): no access
    /// check applies, and no Fetch call is counted in the request metrics (the
    /// fetched records are). The records returned are slices of the segment's memory
    /// map, as the gRPC handler encodes them from.
    pub async fn fetch(
        &self,
        request: &v1::FetchRequest,
    ) -> Option<Result<v1::FetchResponse, Status>> {
        if request.replica_id.is_some() {
            return None;
        }
        let broker = self
            .broker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()?;
        let (partition, topic_created_ms) = broker
            .leader_replica(&request.topic, request.partition)
            .ok()?;
        let (max_bytes, deadline) = fetch_limits(request);
        let fetched = match partition
            .fetch(request.offset, max_bytes, deadline, false)
            .await
        {
            Ok(fetched) => fetched,
            Err(e) => return Some(Err(e.into())),
        };
        partition.counters().fetched(&fetched.records);
        Some(Ok(v1::FetchResponse {
            records: fetched.records,
            high_watermark: fetched.high_watermark,
            log_start_offset: fetched.log_start_offset,
            log_end_offset: fetched.log_end_offset,
            topic_created_ms,
        }))
    }
}

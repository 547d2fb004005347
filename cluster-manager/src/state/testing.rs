//! Cluster states for the tests of `state` and of the modules built on it.

use pubsub_proto::v1::TopicConfig;

use super::{ClusterState, Partition};
use crate::command::Command;

/// Registers `broker` (address `10.0.0.<id>:9392`) in `rack` at `now_ms`.
pub(crate) fn register(state: &mut ClusterState, broker: u32, rack: Option<&str>, now_ms: u64) {
    state
        .apply(Command::RegisterBroker {
            broker,
            address: format!("10.0.0.{broker}:9392"),
            rack: rack.map(String::from),
            kafka_address: None,
            now_ms,
            lease_ms: 0,
            proven: false,
        })
        .unwrap();
}

/// A state with brokers `1..=brokers` registered, without racks.
pub(crate) fn cluster(brokers: u32) -> ClusterState {
    let mut state = ClusterState::default();
    for id in 1..=brokers {
        register(&mut state, id, None, 0);
    }
    state
}

/// Creates `name` with default settings.
pub(crate) fn create(name: &str, partitions: u32, replication_factor: u32) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor,
        settings: TopicConfig::default(),
        unclean_leader_election: false,
        now_ms: 0,
    }
}

/// One partition of `name` with `settings`.
pub(crate) fn create_with(name: &str, replication_factor: u32, settings: TopicConfig) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions: 1,
        replication_factor,
        settings,
        unclean_leader_election: false,
        now_ms: 0,
    }
}

/// Partition `p` of `topic`, which must exist.
pub(crate) fn partition<'a>(state: &'a ClusterState, topic: &str, p: usize) -> &'a Partition {
    &state.topic(topic).unwrap().partitions()[p]
}

/// Applies a heartbeat of `broker` stamped `now_ms`, reporting no sizes.
pub(crate) fn heartbeat(state: &mut ClusterState, broker: u32, now_ms: u64) {
    state
        .apply(Command::Heartbeat {
            broker,
            now_ms,
            sizes: Vec::new(),
        })
        .unwrap();
}

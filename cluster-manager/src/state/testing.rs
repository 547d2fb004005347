//! Cluster states for the tests of `state` and of the modules built on it.

use super::ClusterState;
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

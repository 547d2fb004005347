//! What the fuzz targets (`fuzz/fuzz_targets/raft_payload.rs`) drive: every payload a
//! node decodes from a peer or from its own store, and the state machine applying what
//! decodes. Not an API: hidden, and free to change with the fuzz targets.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload, LogId, SnapshotMeta, Vote};

use crate::command::Command;
use crate::manager::{LeaderReply, LeaderRequest};
use crate::raft::codec::{self, PAYLOAD_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use crate::raft::{Entry, NodeId, TypeConfig};
use crate::state::ClusterState;

/// Leader clock of the commands the base state is built with.
const NOW_MS: u64 = 1_700_000_000_000;

/// Decodes `bytes` as each Raft payload (AppendEntries, Vote and InstallSnapshot
/// requests and replies, a forwarded write and its reply, a stored log entry, vote,
/// log id, snapshot meta and snapshot) and applies every command that decodes to a
/// populated state, as a follower would, then builds what brokers are sent and one
/// balance check from the result. None of it may panic; how many commands were
/// applied is returned (so the target's work is observable).
pub fn raft_payload(bytes: &[u8]) -> usize {
    decode_replies_and_stored(bytes);
    let mut commands = Vec::new();
    if let Ok(rpc) = codec::decode::<AppendEntriesRequest<TypeConfig>>(bytes, PAYLOAD_BYTES_MAX) {
        commands.extend(rpc.entries.into_iter().filter_map(normal));
    }
    let _ = codec::decode::<VoteRequest<NodeId>>(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<InstallSnapshotRequest<TypeConfig>>(bytes, PAYLOAD_BYTES_MAX);
    if let Ok(LeaderRequest::Command(command)) = codec::decode(bytes, PAYLOAD_BYTES_MAX) {
        commands.push(command);
    }
    if let Ok(entry) = codec::decode::<Entry>(bytes, PAYLOAD_BYTES_MAX) {
        commands.extend(normal(entry));
    }
    let _ = codec::decode::<ClusterState>(bytes, SNAPSHOT_BYTES_MAX);
    let mut state = base_state();
    let mut applied = 0;
    for command in commands {
        if state.apply(command).is_ok() {
            applied += 1;
        }
    }
    let _ = crate::wire::state_metadata(&state, 1, Some(1));
    let _ = crate::rebalance::next_commands(&state);
    applied
}

/// What a node decodes but applies nothing from: peers' replies and its own stored
/// vote, log ids and snapshot meta.
fn decode_replies_and_stored(bytes: &[u8]) {
    type Reply<T, E = RaftError<NodeId>> = Result<T, E>;
    let _ = codec::decode::<Reply<AppendEntriesResponse<NodeId>>>(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<Reply<VoteResponse<NodeId>>>(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<
        Reply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    >(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<LeaderReply>(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<Option<Vote<NodeId>>>(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<Option<LogId<NodeId>>>(bytes, PAYLOAD_BYTES_MAX);
    let _ = codec::decode::<SnapshotMeta<NodeId, BasicNode>>(bytes, PAYLOAD_BYTES_MAX);
}

/// The command of a normal entry.
fn normal(entry: Entry) -> Option<Command> {
    match entry.payload {
        EntryPayload::Normal(command) => Some(command),
        _ => None,
    }
}

/// Three brokers in two racks and a topic of three partitions over them.
fn base_state() -> ClusterState {
    let mut state = ClusterState::default();
    for broker in 1..=3u32 {
        let _ = state.apply(Command::RegisterBroker {
            broker,
            address: format!("broker-{broker}:9392"),
            rack: Some(format!("rack-{}", broker % 2)),
            kafka_address: None,
            now_ms: NOW_MS,
            lease_ms: 6_000,
            proven: false,
        });
    }
    let _ = state.apply(Command::CreateTopic {
        name: "orders".into(),
        partitions: 3,
        replication_factor: 3,
        settings: Default::default(),
        unclean_leader_election: false,
        now_ms: NOW_MS,
    });
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_command_is_applied_and_garbage_is_not() {
        let command = LeaderRequest::Command(Command::DeleteTopic {
            name: "orders".into(),
        });
        let bytes = codec::encode(&command).unwrap();
        assert_eq!(raft_payload(&bytes), 1);
        assert_eq!(raft_payload(b"{\"Command\":"), 0);
        assert_eq!(raft_payload(&[0xff; 64]), 0);
    }

    #[test]
    fn the_base_state_has_its_topic() {
        assert!(base_state().topic("orders").is_some());
    }
}

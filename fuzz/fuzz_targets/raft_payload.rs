//! What a cluster-manager node decodes from its Raft peers and its own store: any bytes
//! as AppendEntries, Vote and InstallSnapshot requests and replies, a forwarded write
//! and its reply, a stored log entry, vote, log id, snapshot meta and metadata
//! snapshot (bounded JSON); every command that decodes is applied
//! to a populated metadata state, which is then turned into what brokers are sent and
//! one balance check. Refused or applied, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = pubsub_cluster_manager::fuzz_api::raft_payload(bytes);
});

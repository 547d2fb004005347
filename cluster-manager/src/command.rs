//! The metadata changes that go through Raft ([`Command`]), what applying one answers
//! ([`Response`]) and why one is refused ([`CommandError`]).
//!
//! Commands carry every input their effect depends on, the clock included (`now_ms`),
//! so that every node applying the same log reaches the same state and refuses the same
//! commands. They are serialized into the Raft log and into snapshots, so variants and
//! fields are only ever added, with serde defaults.

use pubsub_proto::ConfigError;
use pubsub_proto::auth::{Rule, TokenHash, validate_principal};
use pubsub_proto::ids::PARTITIONS_MAX;
use pubsub_proto::v1::TopicConfig;
use serde::{Deserialize, Serialize};

mod error;
mod validate;
use crate::state::CONSUMER_MANAGERS_MAX;
pub(crate) use crate::state::SilentConsumerManager;
pub(crate) use error::CommandError;
pub(crate) use validate::validate_topic_name;
use validate::{
    invalid_access, validate_address, validate_broker, validate_consumer_manager, validate_move,
    validate_sizes, validate_token_id,
};

/// Longest broker address accepted (`host:port`; a DNS name is at most 253 bytes).
pub(crate) const ADDRESS_BYTES_MAX: usize = 260;
/// Longest rack name accepted.
pub(crate) const RACK_BYTES_MAX: usize = 255;
/// Most brokers the metadata holds: bounds every snapshot and every scan over brokers.
pub(crate) const BROKERS_MAX: usize = 4096;
/// Most partitions over all topics: keeps a snapshot (about 100 bytes per partition)
/// in the tens of MiB, so it is sent and loaded in well under a second.
pub(crate) const PARTITIONS_TOTAL_MAX: u64 = 100_000;
/// Most replicas per partition; more only multiplies write traffic.
pub(crate) const REPLICATION_FACTOR_MAX: u32 = 16;
/// Replication factor of a topic created with 0, capped by the live broker count.
pub(crate) const REPLICATION_FACTOR_DEFAULT: u32 = 3;
/// Most partition sizes one heartbeat reports: bounds the Raft entry it becomes.
pub(crate) const SIZES_PER_HEARTBEAT_MAX: usize = 4096;

/// A broker the Raft leader saw renew nothing for a whole lease, with the renewal
/// count it last saw, so a renewal that lands first saves the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentBroker {
    /// Broker id.
    pub broker: u32,
    /// Its renewals (registrations and heartbeats) when the leader judged it.
    pub renewals: u64,
}

/// A partition's log size as its leader reports it, so the balancer can even out bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSize {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Bytes of every segment of the leader's log.
    pub bytes: u64,
}

/// One change to the cluster metadata, as stored in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker announces itself. A known broker registering again (restart, or return
    /// after fencing) is treated as fenced and unfenced at once: it leaves the ISRs and
    /// its leaderships move, except where it is the last in-sync replica.
    RegisterBroker {
        /// Broker id.
        broker: u32,
        /// `host:port` clients connect to.
        address: String,
        /// Failure domain; replicas are spread across racks.
        rack: Option<String>,
        /// `host:port` of its Kafka-protocol listener, if it serves one.
        #[serde(default)]
        kafka_address: Option<String>,
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
        /// The lease length: while the broker's lease holds, it cannot be registered
        /// from another address (0: entries written before this check existed).
        #[serde(default)]
        lease_ms: u64,
        /// The caller proved it is this broker (its mutual-TLS certificate names it):
        /// it may move the id to a new address while the lease holds.
        #[serde(default)]
        proven: bool,
    },
    /// A broker renews its lease, reporting the sizes of partitions it leads that
    /// changed notably since its last report.
    Heartbeat {
        /// Broker id.
        broker: u32,
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
        /// Log sizes of partitions the broker leads, at most [`SIZES_PER_HEARTBEAT_MAX`];
        /// a size for a partition it does not lead is ignored.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sizes: Vec<PartitionSize>,
    },
    /// Creates a topic and places its replicas over the live brokers.
    CreateTopic {
        /// Topic name, validated by [`TopicName`].
        name: String,
        /// Partition count, `1..=PARTITIONS_MAX`.
        partitions: u32,
        /// Replicas per partition; 0 takes [`REPLICATION_FACTOR_DEFAULT`] capped by the
        /// live broker count.
        replication_factor: u32,
        /// Settings as requested: unset keys take the defaults, resolved when applied
        /// (the replication factor decides `min_insync_replicas`'s).
        settings: TopicConfig,
        /// Whether a leader may be elected outside the in-sync replicas.
        unclean_leader_election: bool,
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Changes the alterable settings of a topic.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// The keys to change; unset keys keep their value.
        changes: TopicConfig,
    },
    /// Raises a topic's partition count; the new partitions are placed over the live
    /// brokers as a new topic's are.
    CreatePartitions {
        /// Topic name.
        name: String,
        /// The new partition count.
        partitions: u32,
    },
    /// Fences every broker whose last heartbeat is older than `lease_ms` and moves
    /// leadership of its partitions to in-sync replicas. Judged by stamped wall-clock
    /// times, which a clock step corrupts: leaders now propose [`Command::FenceSilent`];
    /// this stays so that logs holding it still apply.
    ExpireLeases {
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
        /// Lease length.
        lease_ms: u64,
    },
    /// Fences brokers the Raft leader has seen no renewal from for a whole lease, by
    /// its monotonic clock (so a step of any wall clock fences no one and spares no
    /// one), and moves leadership of their partitions to in-sync replicas. Each is
    /// fenced only if its renewal count is still the one listed.
    FenceSilent {
        /// The silent brokers, at most [`BROKERS_MAX`].
        brokers: Vec<SilentBroker>,
    },
    /// A partition leader sets the partition's in-sync replicas.
    UpdateIsr {
        /// The leader asking.
        broker: u32,
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The epoch the leader was elected in; any other is refused.
        leader_epoch: i32,
        /// New in-sync replicas, the leader included.
        isr: Vec<u32>,
    },
    /// Moves each partition's leadership back to its preferred (first) replica where
    /// that one is live and in sync (Kafka's preferred leader election), so a broker
    /// that restarted leads its share again.
    ElectPreferredLeaders,
    /// A broker about to stop: fenced now, so its leaderships move to in-sync
    /// replicas before it goes.
    ShutdownBroker {
        /// Broker id.
        broker: u32,
    },
    /// Starts moving a partition's replicas from `from` to `to` (same length, one or
    /// more brokers replaced). `from` must be the current list (compare-and-set), so a
    /// plan made on older metadata is refused rather than misapplied. The new brokers
    /// follow the leader until they are in sync; [`Command::CompleteMove`] then
    /// switches the list. A reorder of the same brokers applies at once.
    StartMove {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The replica list the move starts from.
        from: Vec<u32>,
        /// The replica list it ends with; the first is the preferred leader.
        to: Vec<u32>,
    },
    /// Ends a move whose target replicas are all in sync: the replica list becomes the
    /// target, the leaving brokers drop out (and delete their copy), and leadership
    /// moves, with a new epoch, if the leader is leaving.
    CompleteMove {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// Rolls a move back to the replicas it started from (a receiving broker died).
    CancelMove {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// Marks a broker as leaving (decommission): its replicas move off, none move on,
    /// and new topics are not placed on it. `false` takes it back.
    SetDraining {
        /// Broker id.
        broker: u32,
        /// Leaving or not.
        draining: bool,
    },
    /// Changes how the cluster balances itself; unset fields keep their value.
    SetBalancing {
        /// Whether replicas move on their own to even out load.
        auto: Option<bool>,
        /// Bytes per second each receiving broker copies for moves; 0: unlimited.
        move_rate_bytes: Option<u64>,
    },
    /// A consumer manager renews its lease (the first registers it), serving the
    /// journal partitions `held`; see `state/consumers.rs`.
    ConsumerManagerHeartbeat {
        /// Where clients reach it: its identity.
        address: String,
        /// Journal partitions it serves now.
        held: Vec<u32>,
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// Fences consumer managers the Raft leader saw renew nothing for a lease (by its
    /// monotonic clock), each only if its renewal count is still the one listed; their
    /// journal partitions go to the others.
    FenceSilentConsumerManagers {
        /// The silent ones, at most [`CONSUMER_MANAGERS_MAX`].
        nodes: Vec<SilentConsumerManager>,
    },
    /// Stores a token's hash for a principal.
    CreateToken {
        /// The token's public id.
        id: String,
        /// Who it stands for.
        principal: String,
        /// SHA-256 of its secret.
        hash: TokenHash,
        /// When it stops being accepted, ms since the Unix epoch.
        expires_ms: Option<u64>,
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// The admin token of the first start with authentication on; does nothing once
    /// any token was issued.
    BootstrapAdmin {
        /// The token's public id.
        id: String,
        /// SHA-256 of its secret.
        hash: TokenHash,
        /// Leader clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// Revokes every token of a principal, or one token.
    RevokeTokens {
        /// Every token of this principal.
        principal: Option<String>,
        /// The token with this id.
        id: Option<String>,
    },
    /// Adds an access rule.
    AddAcl {
        /// The rule.
        rule: Rule,
    },
    /// Removes an access rule.
    RemoveAcl {
        /// The rule.
        rule: Rule,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A Raft-internal entry (leader no-op, membership change) was applied.
    Applied,
    /// The broker is registered and unfenced.
    BrokerRegistered {
        /// Partitions whose leadership it took on returning (it was their last
        /// in-sync replica and they had no leader).
        leaderships: u32,
    },
    /// The lease was renewed.
    HeartbeatRenewed,
    /// The topic exists as requested.
    TopicCreated {
        /// False when an identical topic already existed.
        created: bool,
    },
    /// The topic is gone.
    TopicDeleted,
    /// The topic's settings were changed.
    TopicConfigAltered,
    /// The topic has more partitions.
    PartitionsCreated {
        /// How many were added.
        added: u32,
    },
    /// Leases were checked.
    LeasesExpired {
        /// Brokers fenced now.
        fenced: Vec<u32>,
        /// Partitions whose leader changed.
        leader_changes: u32,
    },
    /// The in-sync replicas were replaced.
    IsrUpdated,
    /// Leaderships went back to preferred replicas.
    PreferredLeadersElected {
        /// Partitions whose leader changed.
        leader_changes: u32,
    },
    /// A stopping broker was fenced.
    BrokerShutDown {
        /// Partitions whose leader changed.
        leader_changes: u32,
    },
    /// A move started (`copies`: new brokers fetch) or, for a reorder, was done.
    MoveStarted {
        /// Whether data is copied; false for a reorder.
        copies: bool,
    },
    /// A move finished.
    MoveCompleted {
        /// Whether the partition's leader changed.
        leader_changed: bool,
    },
    /// A move was rolled back.
    MoveCancelled,
    /// A broker's draining flag or the balancing settings changed.
    BalancingChanged,
    /// A consumer manager's lease was renewed.
    ConsumerManagerRenewed,
    /// Silent consumer managers were fenced.
    ConsumerManagersFenced {
        /// Addresses fenced now.
        fenced: Vec<String>,
    },
    /// Tokens or rules changed.
    AccessChanged {
        /// How many were added or removed.
        count: u32,
    },
}

impl Response {
    /// Whether the metadata that brokers and clients watch changed. Heartbeats and
    /// lease checks that fence nobody only move timestamps, so watchers are not woken.
    pub fn changes_metadata(&self) -> bool {
        match self {
            Response::HeartbeatRenewed
            | Response::ConsumerManagerRenewed
            | Response::ConsumerManagersFenced { .. } => false,
            Response::LeasesExpired { fenced, .. } => !fenced.is_empty(),
            Response::Applied
            | Response::BrokerRegistered { .. }
            | Response::TopicCreated { .. }
            | Response::TopicDeleted
            | Response::TopicConfigAltered
            | Response::PartitionsCreated { .. }
            | Response::IsrUpdated
            | Response::BrokerShutDown { .. }
            | Response::MoveStarted { .. }
            | Response::MoveCompleted { .. }
            | Response::MoveCancelled
            | Response::BalancingChanged => true,
            Response::AccessChanged { count } => *count > 0,
            Response::PreferredLeadersElected { leader_changes } => *leader_changes > 0,
        }
    }
}

impl Command {
    /// Checks what can be checked without the state, so a malformed request is refused
    /// before it takes a place in the Raft log. `apply` checks again.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Command::RegisterBroker {
                broker,
                address,
                rack,
                kafka_address,
                ..
            } => {
                validate_broker(*broker, address, rack.as_deref())?;
                match kafka_address {
                    Some(kafka) => validate_address(*broker, "Kafka address", kafka),
                    None => Ok(()),
                }
            }
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                settings,
                ..
            } => {
                validate_topic_name(name)?;
                if !(1..=PARTITIONS_MAX).contains(partitions) {
                    return Err(CommandError::InvalidPartitions {
                        partitions: *partitions,
                    });
                }
                if *replication_factor > REPLICATION_FACTOR_MAX {
                    return Err(CommandError::InvalidReplicationFactor {
                        replication_factor: *replication_factor,
                    });
                }
                // 0 leaves the factor to `apply`, which checks the rest then.
                let known = Some(*replication_factor).filter(|r| *r > 0);
                Ok(settings.validate(known)?)
            }
            Command::CreatePartitions { name, partitions } => {
                validate_topic_name(name)?;
                if !(1..=PARTITIONS_MAX).contains(partitions) {
                    return Err(CommandError::InvalidPartitions {
                        partitions: *partitions,
                    });
                }
                Ok(())
            }
            Command::AlterTopicConfig { name, changes } => {
                validate_topic_name(name)?;
                if let Some(key) = changes.set_keys().into_iter().find(|k| !k.alterable()) {
                    return Err(ConfigError::NotAlterable { key }.into());
                }
                Ok(changes.validate(None)?)
            }
            Command::UpdateIsr {
                topic,
                partition,
                isr,
                ..
            } => {
                validate_topic_name(topic)?;
                if isr.len() > REPLICATION_FACTOR_MAX as usize {
                    return Err(CommandError::InvalidIsr {
                        topic: topic.clone(),
                        partition: *partition,
                        reason: format!(
                            "{} members is more than any partition has replicas",
                            isr.len()
                        ),
                    });
                }
                Ok(())
            }
            // Names are checked so that no error message echoes an unbounded one.
            Command::DeleteTopic { name } => validate_topic_name(name),
            Command::StartMove {
                topic,
                partition,
                from,
                to,
            } => validate_move(topic, *partition, from, to),
            Command::CompleteMove { topic, .. } | Command::CancelMove { topic, .. } => {
                validate_topic_name(topic)
            }
            Command::SetDraining { .. } | Command::SetBalancing { .. } => Ok(()),
            Command::ConsumerManagerHeartbeat { address, held, .. } => {
                validate_consumer_manager(address, held)
            }
            Command::FenceSilentConsumerManagers { nodes }
                if nodes.len() > CONSUMER_MANAGERS_MAX =>
            {
                Err(CommandError::LimitExceeded {
                    what: "silent consumer manager".into(),
                    limit: CONSUMER_MANAGERS_MAX as u64,
                })
            }
            Command::FenceSilentConsumerManagers { .. } => Ok(()),
            Command::Heartbeat { broker, sizes, .. } => validate_sizes(*broker, sizes),
            Command::FenceSilent { brokers } if brokers.len() > BROKERS_MAX => {
                Err(CommandError::LimitExceeded {
                    what: "silent broker".into(),
                    limit: BROKERS_MAX as u64,
                })
            }
            Command::ExpireLeases { .. }
            | Command::FenceSilent { .. }
            | Command::ShutdownBroker { .. }
            | Command::ElectPreferredLeaders => Ok(()),
            Command::CreateToken { id, principal, .. } => {
                validate_token_id(id)?;
                validate_principal(principal).map_err(invalid_access)
            }
            Command::BootstrapAdmin { id, .. } => validate_token_id(id),
            Command::RevokeTokens { principal, id } => match (principal, id) {
                (Some(principal), None) => validate_principal(principal).map_err(invalid_access),
                (None, Some(id)) => validate_token_id(id),
                _ => Err(CommandError::InvalidAccess {
                    reason: "revoke by principal or by token id".into(),
                }),
            },
            Command::AddAcl { rule } | Command::RemoveAcl { rule } => {
                Rule::from_wire(&rule.to_wire())
                    .map(drop)
                    .map_err(invalid_access)
            }
        }
    }

    /// Sets the clock reading of a command that carries one. The Raft leader stamps
    /// commands just before proposing them, so leases are judged by one clock.
    pub fn stamp(&mut self, now: u64) {
        match self {
            Command::RegisterBroker { now_ms, .. }
            | Command::Heartbeat { now_ms, .. }
            | Command::CreateTopic { now_ms, .. }
            | Command::CreateToken { now_ms, .. }
            | Command::BootstrapAdmin { now_ms, .. }
            | Command::ExpireLeases { now_ms, .. }
            | Command::ConsumerManagerHeartbeat { now_ms, .. } => *now_ms = now,
            Command::DeleteTopic { .. }
            | Command::FenceSilentConsumerManagers { .. }
            | Command::AlterTopicConfig { .. }
            | Command::CreatePartitions { .. }
            | Command::FenceSilent { .. }
            | Command::UpdateIsr { .. }
            | Command::ShutdownBroker { .. }
            | Command::ElectPreferredLeaders
            | Command::RevokeTokens { .. }
            | Command::AddAcl { .. }
            | Command::RemoveAcl { .. }
            | Command::StartMove { .. }
            | Command::CompleteMove { .. }
            | Command::CancelMove { .. }
            | Command::SetDraining { .. }
            | Command::SetBalancing { .. } => {}
        }
    }

    /// The command's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::RegisterBroker { .. } => "register_broker",
            Command::Heartbeat { .. } => "heartbeat",
            Command::CreateTopic { .. } => "create_topic",
            Command::DeleteTopic { .. } => "delete_topic",
            Command::AlterTopicConfig { .. } => "alter_topic_config",
            Command::CreatePartitions { .. } => "create_partitions",
            Command::ExpireLeases { .. } => "expire_leases",
            Command::FenceSilent { .. } => "fence_silent",
            Command::UpdateIsr { .. } => "update_isr",
            Command::ShutdownBroker { .. } => "shutdown_broker",
            Command::ElectPreferredLeaders => "elect_preferred_leaders",
            Command::CreateToken { .. } => "create_token",
            Command::BootstrapAdmin { .. } => "bootstrap_admin",
            Command::RevokeTokens { .. } => "revoke_tokens",
            Command::AddAcl { .. } => "add_acl",
            Command::RemoveAcl { .. } => "remove_acl",
            Command::StartMove { .. } => "start_move",
            Command::CompleteMove { .. } => "complete_move",
            Command::CancelMove { .. } => "cancel_move",
            Command::SetDraining { .. } => "set_draining",
            Command::SetBalancing { .. } => "set_balancing",
            Command::ConsumerManagerHeartbeat { .. } => "consumer_manager_heartbeat",
            Command::FenceSilentConsumerManagers { .. } => "fence_silent_consumer_managers",
        }
    }
}

/// Checks a topic name against the shared naming rules.
#[cfg(test)]
mod tests;

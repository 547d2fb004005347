//! The cluster metadata as plain values, and [`ClusterState::apply`], the deterministic
//! transition every Raft node runs on every committed [`Command`].
//!
//! `apply` reads no clock, no randomness and no I/O: the time is inside the command and
//! maps are ordered, so the same log gives the same state (and the same refusals) on every
//! node, and snapshots of equal states are equal bytes. A refused command leaves the state
//! untouched: everything is checked before anything changes.
//!
//! Partition invariants, asserted after every change: the leader, when there is one, is a
//! live in-sync replica; the in-sync replicas are a non-empty subset of the replicas; the
//! leader epoch never decreases and grows by one with every leader change.

use std::collections::{BTreeMap, BTreeSet};

use pubsub_proto::ConfigKey;
use pubsub_proto::v1::TopicConfig;
use serde::{Deserialize, Serialize};

use crate::command::{BROKERS_MAX, Command, CommandError, PartitionSize, Response};

mod access;
mod consumers;
mod leadership;
mod moves;
mod topics;
pub(crate) use access::AccessState;
pub(crate) use consumers::CONSUMER_MANAGERS_MAX;
pub(crate) use consumers::{ConsumerManagers, SilentConsumerManager};

/// The whole metadata: brokers and topics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    brokers: BTreeMap<u32, Broker>,
    topics: BTreeMap<String, Topic>,
    /// Tokens and access rules.
    #[serde(default)]
    access: AccessState,
    /// How replicas are balanced over brokers.
    #[serde(default)]
    balancing: Balancing,
    /// Consumer managers and who owns each partition of the subscription journal.
    #[serde(default)]
    consumers: ConsumerManagers,
}

/// Cluster-wide balancing settings, changed with [`Command::SetBalancing`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Balancing {
    /// Whether the cluster-manager leader moves replicas on its own to even out load
    /// (as brokers join). Draining brokers are emptied either way.
    pub auto: bool,
    /// Bytes per second a receiving broker copies for moves, over all its moving
    /// partitions; 0: unlimited.
    pub move_rate_bytes: u64,
}

impl Default for Balancing {
    fn default() -> Self {
        Balancing {
            auto: true,
            move_rate_bytes: 0,
        }
    }
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    id: u32,
    address: String,
    rack: Option<String>,
    /// Where its Kafka-protocol listener is, if it serves one.
    #[serde(default)]
    kafka_address: Option<String>,
    last_heartbeat_ms: u64,
    /// Registrations and heartbeats applied: the Raft leader judges leases by when it
    /// saw this change, on its monotonic clock.
    #[serde(default)]
    renewals: u64,
    fenced: bool,
    /// Being decommissioned: its replicas move off, none move on.
    #[serde(default)]
    draining: bool,
}

/// Where a registering broker is reached, and its failure domain.
struct Endpoints {
    address: String,
    rack: Option<String>,
    kafka_address: Option<String>,
}

/// A topic and its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    name: String,
    replication_factor: u32,
    /// Resolved at create and alter: every key set. Topics created before resolution
    /// existed hold the request, unset keys standing for the defaults.
    settings: TopicConfig,
    /// Keys that hold the default (set neither at create nor by an alter).
    #[serde(default)]
    default_keys: BTreeSet<ConfigKey>,
    unclean_leader_election: bool,
    created_ms: u64,
    partitions: Vec<Partition>,
}

/// One partition's placement and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    replicas: Vec<u32>,
    leader: Option<u32>,
    leader_epoch: i32,
    isr: Vec<u32>,
    /// A replica move under way. While set, `replicas` is the move's target followed
    /// by the brokers it is leaving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moving: Option<Moving>,
    /// Log size as the leader last reported it; 0 until reported.
    #[serde(default, skip_serializing_if = "is_zero")]
    size_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A partition's replica move: where it started and where it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    /// The replica list before the move, preferred leader first.
    pub from: Vec<u32>,
    /// The replica list after it, preferred leader first.
    pub to: Vec<u32>,
}

impl Broker {
    /// Broker id.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// `host:port` clients connect to.
    pub fn address(&self) -> &str {
        &self.address
    }
    /// Its rack, if declared.
    pub fn rack(&self) -> Option<&str> {
        self.rack.as_deref()
    }
    /// Its Kafka-protocol listener's address, if it serves one.
    pub fn kafka_address(&self) -> Option<&str> {
        self.kafka_address.as_deref()
    }
    /// Leader clock at its last heartbeat or registration, ms since the Unix epoch.
    pub fn last_heartbeat_ms(&self) -> u64 {
        self.last_heartbeat_ms
    }
    /// Registrations and heartbeats applied so far (wrapping).
    pub fn renewals(&self) -> u64 {
        self.renewals
    }
    /// Whether its lease expired since it last registered.
    pub fn fenced(&self) -> bool {
        self.fenced
    }
    /// Whether it is being decommissioned.
    pub fn draining(&self) -> bool {
        self.draining
    }
}

impl Topic {
    /// Topic name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Replicas per partition.
    pub fn replication_factor(&self) -> u32 {
        self.replication_factor
    }
    /// Settings, every key set.
    pub fn config(&self) -> TopicConfig {
        self.settings.with_defaults(self.replication_factor)
    }
    /// Keys that hold the default.
    pub fn default_keys(&self) -> BTreeSet<ConfigKey> {
        let unset = ConfigKey::ALL
            .into_iter()
            .filter(|k| !self.settings.is_set(*k));
        self.default_keys.iter().copied().chain(unset).collect()
    }
    /// Whether leaders may be elected outside the in-sync replicas.
    pub fn unclean_leader_election(&self) -> bool {
        self.unclean_leader_election
    }
    /// Leader clock at creation, ms since the Unix epoch.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }
    /// The partitions, indexed by partition id.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }
}

impl Partition {
    /// Replica brokers; the first is the preferred leader.
    pub fn replicas(&self) -> &[u32] {
        &self.replicas
    }
    /// The leader, unless no eligible replica is alive.
    pub fn leader(&self) -> Option<u32> {
        self.leader
    }
    /// Grows by one with every leader change.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }
    /// In-sync replicas, in replica order.
    pub fn isr(&self) -> &[u32] {
        &self.isr
    }
    /// Log size as its leader last reported it (0 until reported).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    /// The move under way, if any.
    pub fn moving(&self) -> Option<&Moving> {
        self.moving.as_ref()
    }
    /// Replicas a move is adding (fetching to catch up); empty without a move.
    pub fn adding(&self) -> Vec<u32> {
        self.moving.as_ref().map_or_else(Vec::new, |m| {
            m.to.iter()
                .copied()
                .filter(|b| !m.from.contains(b))
                .collect()
        })
    }
    /// Replicas a move will drop once it completes; empty without a move.
    pub fn removing(&self) -> Vec<u32> {
        self.moving.as_ref().map_or_else(Vec::new, |m| {
            m.from
                .iter()
                .copied()
                .filter(|b| !m.to.contains(b))
                .collect()
        })
    }
    /// Whether fewer replicas are in sync than the partition should have (replicas a
    /// move is still adding are not counted), or there is no leader.
    pub fn under_replicated(&self) -> bool {
        let adding = self.adding();
        let settled = self.replicas.len() - adding.len();
        let in_sync = self.isr.iter().filter(|b| !adding.contains(b)).count();
        in_sync < settled || self.leader.is_none()
    }

    fn check_invariants(&self) {
        assert!(!self.isr.is_empty(), "the in-sync replicas are never empty");
        assert!(
            self.isr.iter().all(|b| self.replicas.contains(b)),
            "in-sync replicas are replicas"
        );
        if let Some(leader) = self.leader {
            assert!(self.isr.contains(&leader), "the leader is in sync");
        }
        assert!(self.leader_epoch >= 0, "leader epochs start at 0");
        if let Some(moving) = &self.moving {
            assert!(
                self.replicas.starts_with(&moving.to),
                "a moving partition lists its target first"
            );
            assert!(
                self.replicas
                    .iter()
                    .all(|b| moving.to.contains(b) || moving.from.contains(b)),
                "a moving partition's replicas are its source and target"
            );
        }
    }
}

impl ClusterState {
    /// Every registered broker, by id.
    pub fn brokers(&self) -> &BTreeMap<u32, Broker> {
        &self.brokers
    }

    /// Every topic, by name.
    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// The balancing settings.
    pub fn balancing(&self) -> &Balancing {
        &self.balancing
    }

    /// Consumer managers and the owners of the subscription journal's partitions.
    pub fn consumer_managers(&self) -> &ConsumerManagers {
        &self.consumers
    }

    /// Brokers not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether an `ExpireLeases { now_ms, lease_ms }` (the wall-clock command of older
    /// logs; leaders now judge leases in `lease.rs`) would fence anyone. Tests only: no
    /// server path judges leases by wall clock any more.
    #[cfg(test)]
    pub(crate) fn has_expired_leases(&self, now_ms: u64, lease_ms: u64) -> bool {
        self.live_brokers()
            .any(|b| lease_expired(b, now_ms, lease_ms))
    }

    /// Every partition `broker` holds a replica of, as (topic, partition id, partition).
    pub fn assignments(&self, broker: u32) -> Vec<(&str, u32, &Partition)> {
        self.partitions()
            .filter(|(_, _, p)| p.replicas.contains(&broker))
            .collect()
    }

    /// Every partition, as (topic, partition id, partition).
    pub fn partitions(&self) -> impl Iterator<Item = (&str, u32, &Partition)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (t.name.as_str(), i as u32, p))
        })
    }

    /// Applies one committed command. Deterministic; on error nothing changed.
    pub fn apply(&mut self, command: Command) -> Result<Response, CommandError> {
        command.validate()?;
        match command {
            Command::RegisterBroker {
                broker,
                address,
                rack,
                kafka_address,
                now_ms,
                lease_ms,
                proven,
            } => {
                let lease_ms = if proven { 0 } else { lease_ms };
                let endpoints = Endpoints {
                    address,
                    rack,
                    kafka_address,
                };
                self.register_broker(broker, endpoints, now_ms, lease_ms)
            }
            Command::Heartbeat {
                broker,
                now_ms,
                sizes,
            } => self.heartbeat(broker, now_ms, &sizes),
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                settings,
                unclean_leader_election,
                now_ms,
            } => self.create_topic(
                name,
                partitions,
                replication_factor,
                settings,
                unclean_leader_election,
                now_ms,
            ),
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => Ok(Response::TopicDeleted),
                None => Err(CommandError::TopicNotFound { name }),
            },
            Command::AlterTopicConfig { name, changes } => self.alter_topic_config(name, changes),
            Command::CreatePartitions { name, partitions } => {
                self.create_partitions(name, partitions)
            }
            Command::ExpireLeases { now_ms, lease_ms } => Ok(self.expire_leases(now_ms, lease_ms)),
            Command::FenceSilent { brokers } => Ok(self.fence_silent(&brokers)),
            Command::ElectPreferredLeaders => Ok(self.elect_preferred_leaders()),
            Command::UpdateIsr {
                broker,
                topic,
                partition,
                leader_epoch,
                isr,
            } => self.update_isr(broker, topic, partition, leader_epoch, isr),
            Command::CreateToken {
                id,
                principal,
                hash,
                expires_ms,
                now_ms,
            } => self
                .access
                .create_token(id, principal, hash, now_ms, expires_ms),
            Command::BootstrapAdmin { id, hash, now_ms } => self.access.bootstrap(id, hash, now_ms),
            Command::RevokeTokens { principal, id } => {
                self.access.revoke(principal.as_deref(), id.as_deref())
            }
            Command::ShutdownBroker { broker } => self.shutdown_broker(broker),
            Command::StartMove {
                topic,
                partition,
                from,
                to,
            } => self.start_move(&topic, partition, from, to),
            Command::CompleteMove { topic, partition } => self.complete_move(&topic, partition),
            Command::CancelMove { topic, partition } => self.cancel_move(&topic, partition),
            Command::SetDraining { broker, draining } => self.set_draining(broker, draining),
            Command::SetBalancing {
                auto,
                move_rate_bytes,
            } => {
                self.balancing.auto = auto.unwrap_or(self.balancing.auto);
                self.balancing.move_rate_bytes =
                    move_rate_bytes.unwrap_or(self.balancing.move_rate_bytes);
                Ok(Response::BalancingChanged)
            }
            Command::ConsumerManagerHeartbeat {
                address,
                held,
                now_ms,
            } => self.consumers.heartbeat(&address, &held, now_ms),
            Command::FenceSilentConsumerManagers { nodes } => {
                Ok(self.consumers.fence_silent(&nodes))
            }
            Command::AddAcl { rule } => self.access.add_rule(rule),
            Command::RemoveAcl { rule } => self.access.remove_rule(&rule),
        }
    }

    /// Tokens and access rules.
    pub(crate) fn access(&self) -> &AccessState {
        &self.access
    }

    fn register_broker(
        &mut self,
        id: u32,
        endpoints: Endpoints,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Response, CommandError> {
        let Endpoints {
            address,
            rack,
            kafka_address,
        } = endpoints;
        if let Some(holder) = self.brokers.get(&id).filter(|b| {
            lease_ms > 0 && !b.fenced && b.address != address && !lease_expired(b, now_ms, lease_ms)
        }) {
            return Err(CommandError::BrokerIdInUse {
                broker: id,
                holder: holder.address.clone(),
            });
        }
        if !self.brokers.contains_key(&id) && self.brokers.len() >= BROKERS_MAX {
            return Err(CommandError::LimitExceeded {
                what: "broker".into(),
                limit: BROKERS_MAX as u64,
            });
        }
        let known = self.brokers.contains_key(&id);
        let broker = self.brokers.entry(id).or_insert_with(|| Broker {
            id,
            address: String::new(),
            rack: None,
            kafka_address: None,
            last_heartbeat_ms: now_ms,
            renewals: 0,
            fenced: false,
            draining: false,
        });
        broker.address = address;
        broker.rack = rack;
        broker.kafka_address = kafka_address;
        broker.last_heartbeat_ms = broker.last_heartbeat_ms.max(now_ms);
        broker.renewals = broker.renewals.wrapping_add(1);
        if !known {
            return Ok(Response::BrokerRegistered { leaderships: 0 });
        }
        // A known broker registering again has restarted (or returns after fencing):
        // what it held in memory may be gone, so it is fenced and unfenced in one step.
        // It leaves the ISRs and its leaderships move to other in-sync replicas with a
        // new epoch; it rejoins as a follower, back in the ISR when the leader says so.
        // Only where it is the last in-sync replica of a leaderless partition does it
        // lead again, since no one else has every acknowledged record.
        broker.fenced = true;
        self.reconcile_all();
        if let Some(broker) = self.brokers.get_mut(&id) {
            broker.fenced = false;
        }
        let leaderships = self.reconcile_all();
        Ok(Response::BrokerRegistered { leaderships })
    }

    /// Fences a broker that is stopping, so its leaderships move now rather than after
    /// its lease; it registers again when it comes back.
    fn shutdown_broker(&mut self, id: u32) -> Result<Response, CommandError> {
        let Some(broker) = self.brokers.get_mut(&id) else {
            return Err(CommandError::BrokerNotFound { broker: id });
        };
        broker.fenced = true;
        let leader_changes = self.reconcile_all();
        Ok(Response::BrokerShutDown { leader_changes })
    }

    fn heartbeat(
        &mut self,
        id: u32,
        now_ms: u64,
        sizes: &[PartitionSize],
    ) -> Result<Response, CommandError> {
        let Some(broker) = self.brokers.get_mut(&id) else {
            return Err(CommandError::BrokerNotFound { broker: id });
        };
        if broker.fenced {
            return Err(CommandError::BrokerFenced { broker: id });
        }
        broker.last_heartbeat_ms = broker.last_heartbeat_ms.max(now_ms);
        broker.renewals = broker.renewals.wrapping_add(1);
        for size in sizes {
            let partition = self
                .topics
                .get_mut(size.topic.as_str())
                .and_then(|t| t.partitions.get_mut(size.partition as usize));
            // Only the leader's log counts: a follower may lag, and one number per
            // partition keeps reports from two brokers from undoing each other.
            if let Some(partition) = partition.filter(|p| p.leader == Some(id)) {
                partition.size_bytes = size.bytes;
            }
        }
        Ok(Response::HeartbeatRenewed)
    }
}

fn lease_expired(broker: &Broker, now_ms: u64, lease_ms: u64) -> bool {
    now_ms.saturating_sub(broker.last_heartbeat_ms) > lease_ms
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

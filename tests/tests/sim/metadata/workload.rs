//! The simulated clients: an admin creating topics through any node, brokers
//! registering and heartbeating, and an observer polling every node's Raft status.
//! They run on the simulation's clock and record what they see in the [`History`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use pubsub_proto::net::Channel;
use pubsub_proto::v1;
use pubsub_proto::v1::cluster_manager_client::ClusterManagerClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::timeout;

use super::history::{HEAL_BOUND, History, Outcome};
use crate::faults::Observed;
use crate::net;

/// Longest one call waits for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a creation whose outcome is unknown is sent again.
const ATTEMPTS: usize = 3;
/// Brokers the clients register (topics need live brokers for their replicas).
const BROKERS: u32 = 3;

/// What the driver and the clients share (one thread: the simulation's).
pub struct Shared {
    pub nodes: u64,
    pub history: RefCell<History>,
    /// The Raft leader most recently reported, with the highest term seen.
    pub leader: Cell<Option<(u64, u64)>>,
    /// Set by the driver once every fault is healed: when, in simulated time.
    pub healed_at: Cell<Option<Duration>>,
    /// Set once the final read is done: the brokers and the observer stop.
    pub done: Cell<bool>,
}

impl Shared {
    pub fn new(nodes: u64) -> Rc<Shared> {
        Rc::new(Shared {
            nodes,
            history: RefCell::default(),
            leader: Cell::new(None),
            healed_at: Cell::new(None),
            done: Cell::new(false),
        })
    }

    fn clients(&self) -> Vec<ClusterManagerClient<Channel>> {
        let pool = net::pool();
        (1..=self.nodes)
            .map(|id| ClusterManagerClient::new(net::cm_channel(&pool, id)))
            .collect()
    }
}

impl Observed for Shared {
    fn leader(&self) -> Option<String> {
        self.leader.get().map(|(_, id)| net::cm_host(id))
    }

    fn healed(&self, at: Duration) {
        self.healed_at.set(Some(at));
    }

    fn injected(&self, kind: &'static str) {
        *self.history.borrow_mut().faults.entry(kind).or_default() += 1;
    }
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Creates topics through random nodes until the faults are healed, then writes until
/// one is acknowledged (timing the recovery), waits for the nodes to converge and
/// reads every node's topics.
pub async fn admin(shared: Rc<Shared>, seed: u64) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xad);
    let clients = shared.clients();
    let mut n = 0;
    while shared.healed_at.get().is_none() {
        let name = format!("topic-{n}");
        n += 1;
        let partitions = rng.random_range(1..=4);
        let mut outcome = Outcome::Refused(tonic::Code::Ok);
        for _ in 0..ATTEMPTS {
            let client = clients[rng.random_range(0..clients.len())].clone();
            outcome = outcome.and(create(client, &name, partitions).await);
            if outcome == Outcome::Acked {
                break;
            }
        }
        shared
            .history
            .borrow_mut()
            .creates
            .insert(name, (partitions, outcome));
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
    }
    let healed_at = shared.healed_at.get().unwrap_or_default();
    for attempt in 0.. {
        let name = format!("healed-{attempt}");
        let client = clients[attempt % clients.len()].clone();
        let outcome = create(client, &name, 1).await;
        shared
            .history
            .borrow_mut()
            .creates
            .insert(name, (1, outcome));
        if outcome == Outcome::Acked {
            shared.history.borrow_mut().healed_in = Some(now() - healed_at);
            break;
        }
        if now() - healed_at > 2 * HEAL_BOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    final_read(&shared, &clients).await;
    shared.done.set(true);
    Ok(())
}

/// One creation attempt through `client`.
async fn create(mut client: ClusterManagerClient<Channel>, name: &str, partitions: u32) -> Outcome {
    let request = v1::ClusterCreateTopicRequest {
        name: name.to_string(),
        partitions,
        ..Default::default()
    };
    match timeout(CALL_TIMEOUT, client.create_topic(request)).await {
        Ok(Ok(_)) => Outcome::Acked,
        Ok(Err(status)) => Outcome::of_error(status.code()),
        Err(_) => Outcome::Unknown,
    }
}

/// Waits (bounded) until every node applied the same last entry, then records each
/// node's topics.
async fn final_read(shared: &Shared, clients: &[ClusterManagerClient<Channel>]) {
    let deadline = now() + Duration::from_secs(20);
    while now() < deadline {
        let mut applied = Vec::new();
        for client in clients {
            let mut client = client.clone();
            let status = timeout(
                CALL_TIMEOUT,
                client.cluster_status(v1::ClusterStatusRequest {}),
            )
            .await;
            applied.push(
                status
                    .ok()
                    .and_then(|s| s.ok())
                    .and_then(|s| s.into_inner().applied_index),
            );
        }
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            shared.history.borrow_mut().converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, client) in (1..).zip(clients) {
        let mut client = client.clone();
        let listed = timeout(CALL_TIMEOUT, client.list_topics(v1::ListTopicsRequest {})).await;
        if let Ok(Ok(listed)) = listed {
            let topics = listed
                .into_inner()
                .topics
                .into_iter()
                .map(|t| (t.name, t.partitions))
                .collect();
            shared.history.borrow_mut().final_topics.insert(id, topics);
        }
    }
}

/// Registers the brokers and keeps their leases, through whichever node answers.
pub async fn brokers(shared: Rc<Shared>, seed: u64) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xb0);
    let clients = shared.clients();
    let mut registered = [false; BROKERS as usize];
    while !shared.done.get() {
        for broker_id in 1..=BROKERS {
            let mut client = clients[rng.random_range(0..clients.len())].clone();
            let slot = &mut registered[broker_id as usize - 1];
            if !*slot {
                let request = v1::RegisterBrokerRequest {
                    broker_id,
                    address: format!("broker-{broker_id}:9092"),
                    ..Default::default()
                };
                *slot = matches!(
                    timeout(CALL_TIMEOUT, client.register_broker(request)).await,
                    Ok(Ok(_))
                );
                continue;
            }
            let request = v1::HeartbeatRequest {
                broker_id,
                partition_sizes: Vec::new(),
            };
            match timeout(CALL_TIMEOUT, client.heartbeat(request)).await {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    let led = record_assignments(&shared, &answer, broker_id);
                    for (topic, partition) in led.into_iter().filter(|_| rng.random_ratio(1, 5)) {
                        toggle_isr(&shared, &mut client, broker_id, topic, partition).await;
                    }
                }
                // A fenced or forgotten broker registers again.
                Ok(Err(status)) => {
                    *slot = status.code() != tonic::Code::NotFound
                        && status.code() != tonic::Code::FailedPrecondition;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Records the partitions of a heartbeat's answer; returns those `broker_id` leads.
fn record_assignments(
    shared: &Shared,
    answer: &v1::HeartbeatResponse,
    broker_id: u32,
) -> Vec<(String, v1::PartitionMetadata)> {
    let mut led = Vec::new();
    let mut history = shared.history.borrow_mut();
    for assignment in &answer.assignments {
        let Some(partition) = &assignment.partition else {
            continue;
        };
        history.record_partition(&assignment.topic, partition, answer.metadata_version);
        if partition.leader == Some(broker_id) {
            led.push((assignment.topic.clone(), partition.clone()));
        }
    }
    led
}

/// As the partition's leader, shrinks its in-sync replicas to itself, or grows them
/// back to every replica, and records the answer.
async fn toggle_isr(
    shared: &Shared,
    client: &mut ClusterManagerClient<Channel>,
    broker_id: u32,
    topic: String,
    partition: v1::PartitionMetadata,
) {
    let in_sync_replicas = if partition.in_sync_replicas.len() > 1 {
        vec![broker_id]
    } else {
        partition.replicas.clone()
    };
    let request = v1::UpdateIsrRequest {
        broker_id,
        topic: topic.clone(),
        partition: partition.partition,
        leader_epoch: partition.leader_epoch,
        in_sync_replicas,
    };
    if let Ok(Ok(answer)) = timeout(CALL_TIMEOUT, client.update_isr(request)).await {
        let answer = answer.into_inner();
        if let Some(partition) = &answer.partition {
            shared.history.borrow_mut().record_partition(
                &topic,
                partition,
                answer.metadata_version,
            );
        }
        shared.history.borrow_mut().isr_changes += 1;
    }
}

/// Polls every node's Raft status, recording the leader each reports for its term.
pub async fn observer(shared: Rc<Shared>) -> turmoil::Result {
    let clients = shared.clients();
    while !shared.done.get() {
        for client in &clients {
            let mut client = client.clone();
            let status = timeout(
                Duration::from_millis(500),
                client.cluster_status(v1::ClusterStatusRequest {}),
            )
            .await;
            let Ok(Ok(status)) = status else { continue };
            let status = status.into_inner();
            let Some(leader) = status.leader_id else {
                continue;
            };
            shared
                .history
                .borrow_mut()
                .leaders
                .entry(status.term)
                .or_default()
                .insert(leader);
            if shared
                .leader
                .get()
                .is_none_or(|(term, _)| status.term >= term)
            {
                shared.leader.set(Some((status.term, leader)));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

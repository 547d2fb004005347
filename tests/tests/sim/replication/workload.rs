//! The simulated clients of the replication run: an admin that creates the topic and
//! follows its leader, acks=all writers, and readers that read every record as it
//! commits. They record sends and reads for `pubsub_tests::checker`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use pubsub_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, Error, Link, NewTopic, PartitionId, Producer,
    ProducerConfig, ProducerRecord, StartPosition, TopicConfig,
};
use pubsub_tests::checker::{self, Outcome, Read, Send};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, timeout};

use super::Report;
use crate::faults::Observed;
use crate::net;

/// Readers reading the whole topic, each on its own.
pub const READERS: usize = 2;
/// Writers, each with its own producer.
const WRITERS: usize = 2;
const TOPIC: &str = "log";
const PARTITIONS: u32 = 2;
/// How long the writers go on after the final heal.
const WRITE_AFTER_HEAL: Duration = Duration::from_secs(12);
/// Longest a send waits for its acknowledgement before it counts as unknown.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Empty polls in a row, once the writers are done, after which a reader stops.
const QUIET_POLLS: usize = 15;

/// What the driver and the clients share (one thread: the simulation's).
pub struct Shared {
    brokers: u32,
    sends: RefCell<Vec<Send>>,
    readers: RefCell<Vec<Vec<Read>>>,
    leader: RefCell<Option<String>>,
    topic_ready: Cell<bool>,
    healed_at: Cell<Option<Duration>>,
    /// Per writer: from the final heal to its first acknowledgement after it.
    resumed: RefCell<BTreeMap<usize, Duration>>,
    writers_done: Cell<usize>,
    readers_done: Cell<usize>,
    faults: RefCell<BTreeMap<&'static str, u32>>,
}

impl Shared {
    pub fn new(brokers: u32) -> Rc<Shared> {
        Rc::new(Shared {
            brokers,
            sends: RefCell::default(),
            readers: RefCell::new(vec![Vec::new(); READERS]),
            leader: RefCell::default(),
            topic_ready: Cell::new(false),
            healed_at: Cell::new(None),
            resumed: RefCell::default(),
            writers_done: Cell::new(0),
            readers_done: Cell::new(0),
            faults: RefCell::default(),
        })
    }

    /// The history checked, with its counts.
    pub fn report(&self) -> Report {
        let sends = self.sends.borrow();
        let readers = self.readers.borrow();
        let resumed = self.resumed.borrow();
        Report {
            anomalies: checker::check(&sends, &readers),
            unknown: sends
                .iter()
                .filter(|s| s.outcome == Outcome::Unknown)
                .count(),
            refused: sends
                .iter()
                .filter(|s| s.outcome == Outcome::Failed)
                .count(),
            reads: readers.iter().map(Vec::len).sum(),
            faults: self.faults.borrow().clone(),
            resumed: (resumed.len() == WRITERS)
                .then(|| resumed.values().copied().max())
                .flatten(),
        }
    }

    async fn connect(&self) -> Client {
        let servers: Vec<String> = (1..=self.brokers).map(net::broker_address).collect();
        let link = Link {
            dialer: Some(net::dialer()),
            ..Link::default()
        };
        loop {
            if let Ok(client) = Client::connect_with(&servers.join(","), link.clone()).await {
                return client;
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Observed for Shared {
    fn leader(&self) -> Option<String> {
        self.leader.borrow().clone()
    }

    fn healed(&self, at: Duration) {
        self.healed_at.set(Some(at));
    }

    fn injected(&self, kind: &'static str) {
        *self.faults.borrow_mut().entry(kind).or_default() += 1;
    }
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Starts every client of the run.
pub fn start(sim: &mut turmoil::Sim<'_>, shared: &Rc<Shared>, seed: u64) {
    sim.client("admin", admin(shared.clone()));
    for writer in 0..WRITERS {
        sim.client(
            format!("writer-{writer}"),
            write(shared.clone(), writer, seed),
        );
    }
    for reader in 0..READERS {
        sim.client(format!("reader-{reader}"), read(shared.clone(), reader));
    }
}

/// Creates the topic, then follows partition 0's leader until the readers are done.
async fn admin(shared: Rc<Shared>) -> turmoil::Result {
    let admin = Admin::new(shared.connect().await);
    let topic = NewTopic {
        name: TOPIC.into(),
        partitions: PARTITIONS,
        replication_factor: 3,
        // Process crashes keep what the page cache holds; power loss is the powercut
        // suite's. Syncing every write would only make the run slower.
        config: TopicConfig {
            fsync: Some("never".into()),
            ..TopicConfig::default()
        },
    };
    loop {
        match admin.create_topic(topic.clone()).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => break,
            Err(_) => sleep(Duration::from_millis(200)).await,
        }
    }
    shared.topic_ready.set(true);
    while shared.readers_done.get() < READERS {
        if let Ok(Ok(described)) =
            timeout(Duration::from_secs(1), admin.describe_topic(TOPIC)).await
        {
            let leader = described
                .topic
                .and_then(|t| t.partitions.first().and_then(|p| p.leader));
            *shared.leader.borrow_mut() = leader.map(net::broker_host);
        }
        sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        // One attempt per send, one at a time: a refusal then says for sure that the
        // record was not stored.
        retries: 0,
        max_in_flight: 1,
        ..ProducerConfig::default()
    }
}

/// How a send that failed ended: refused before it was appended, or unknown.
fn outcome_of(error: &Error) -> Outcome {
    match error {
        // The leader checks the in-sync replicas before appending (after appending,
        // the message says the records were written).
        Error::Unavailable { message } if message.starts_with("not enough in-sync replicas") => {
            Outcome::Failed
        }
        _ => Outcome::Unknown,
    }
}

/// Writer `writer`: sends `p<partition>-w<writer>-<n>` to the partitions in turn, one
/// at a time, until a while after the final heal.
async fn write(shared: Rc<Shared>, writer: usize, seed: u64) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed ^ ((writer as u64 + 1) * 0x9e37));
    let client = shared.connect().await;
    while !shared.topic_ready.get() {
        sleep(Duration::from_millis(100)).await;
    }
    let producer = loop {
        match Producer::new(client.clone(), TOPIC, producer_config()).await {
            Ok(producer) => break producer,
            Err(_) => sleep(Duration::from_millis(200)).await,
        }
    };
    for seq in 0u64.. {
        let healed = shared.healed_at.get();
        if healed.is_some_and(|at| now() > at + WRITE_AFTER_HEAL) {
            break;
        }
        let partition = (seq % u64::from(PARTITIONS)) as u32;
        let value = format!("p{partition}-w{writer}-{seq:08}");
        let record = ProducerRecord {
            partition: Some(PartitionId(partition)),
            ..ProducerRecord::value(value.clone())
        };
        let outcome = match producer.send(record).await {
            Ok(delivery) => match timeout(ACK_TIMEOUT, delivery.wait()).await {
                Ok(Ok(stored)) => stored.offset.map_or(Outcome::Unknown, Outcome::Acked),
                Ok(Err(e)) => outcome_of(&e),
                Err(_) => Outcome::Unknown,
            },
            Err(e) => outcome_of(&e),
        };
        if let (Outcome::Acked(_), Some(at)) = (outcome, healed) {
            shared
                .resumed
                .borrow_mut()
                .entry(writer)
                .or_insert(now() - at);
        }
        shared.sends.borrow_mut().push(Send {
            partition,
            value,
            outcome,
        });
        sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    shared.writers_done.set(shared.writers_done.get() + 1);
    Ok(())
}

/// Reader `reader`: reads every partition from the start as records commit, until
/// the writers are done and it has read to the end.
async fn read(shared: Rc<Shared>, reader: usize) -> turmoil::Result {
    let client = shared.connect().await;
    while !shared.topic_ready.get() {
        sleep(Duration::from_millis(100)).await;
    }
    let mut consumer = Consumer::new(client, TOPIC, ConsumerConfig::default());
    while consumer.assign_all(StartPosition::Earliest).await.is_err() {
        sleep(Duration::from_millis(200)).await;
    }
    let mut quiet = 0;
    while quiet < QUIET_POLLS {
        let polled = timeout(
            Duration::from_secs(3),
            consumer.poll(Duration::from_millis(300)),
        )
        .await;
        let records = match polled {
            Ok(Ok(records)) => records,
            _ => {
                sleep(Duration::from_millis(100)).await;
                Vec::new()
            }
        };
        let done = shared.writers_done.get() == WRITERS;
        quiet = if records.is_empty() && done {
            quiet + 1
        } else {
            0
        };
        let mut readers = shared.readers.borrow_mut();
        for record in records {
            let value = record
                .value
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            readers[reader].push(Read {
                partition: record.partition.0,
                offset: record.offset,
                value: value.unwrap_or_default(),
            });
        }
    }
    shared.readers_done.set(shared.readers_done.get() + 1);
    Ok(())
}

//! Three consumer managers share the subscriptions (each serves those of the journal
//! partitions the cluster managers grant it). A client given all three finds each
//! subscription's owner through any of them; a listing shows every subscription. The
//! owner of a subscription is killed with `kill -9` while a subscriber acknowledges:
//! another takes it over within 10 s, no record whose acknowledgement was answered
//! comes back and none is skipped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_client::{
    Acks, Admin, Client, NewTopic, Producer, ProducerConfig, ProducerRecord, SubscriptionOptions,
    Subscriptions,
};
use pubsub_proto::v1;
use pubsub_proto::v1::consumer_manager_client::ConsumerManagerClient;
use pubsub_tests::checker::subscription::check_subscription;
use pubsub_tests::{Cluster, Server};

use crate::consumer_failover::{Seen, consumer_manager_with, read_and_ack};

const PARTITIONS: u32 = 3;
const RECORDS: u64 = 1_200;
/// Subscriptions besides the one read: enough that several nodes own some.
const OTHERS: usize = 12;

/// What the consumer manager at `address` serves itself, and the others it names.
async fn own_listing(address: &str) -> Option<v1::ListSubscriptionsResponse> {
    let mut stub = ConsumerManagerClient::connect(format!("http://{address}"))
        .await
        .ok()?;
    let request = v1::ListSubscriptionsRequest::default();
    Some(stub.list_subscriptions(request).await.ok()?.into_inner())
}

/// The node of `nodes` serving subscription `name`.
async fn owner_of(nodes: &[Server], name: &str) -> Option<usize> {
    for (index, node) in nodes.iter().enumerate() {
        let listing = own_listing(node.address()).await?;
        if listing.subscriptions.iter().any(|s| s.name == name) {
            return Some(index);
        }
    }
    None
}

/// Waits until every node of `nodes` serves part of the journal (each names the two
/// others as owners).
async fn wait_spread(nodes: &[Server]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut spread = true;
        for node in nodes {
            let others = own_listing(node.address()).await;
            spread &= others.is_some_and(|l| l.other_consumer_managers.len() == nodes.len() - 1);
        }
        if spread {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the journal's partitions never spread over the consumer managers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When the owner was killed, and how long after it a read first succeeded.
type Lost = Arc<Mutex<Option<(Instant, Option<Duration>)>>>;

/// Produces `records` to a new topic `work` of 3 partitions, RF 3; returns how many
/// each partition took.
pub(crate) async fn fill(client: &Client, records: u64) -> HashMap<u32, u64> {
    Admin::new(client.clone())
        .create_topic(NewTopic {
            name: "work".into(),
            partitions: PARTITIONS,
            replication_factor: 3,
            ..NewTopic::default()
        })
        .await
        .unwrap();
    let config = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), "work", config).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..records {
        let record = ProducerRecord::value(i.to_string());
        sent.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut per_partition: HashMap<u32, u64> = HashMap::new();
    for delivery in sent {
        let partition = delivery.wait().await.unwrap().partition.0;
        *per_partition.entry(partition).or_default() += 1;
    }
    per_partition
}

/// Reads and acknowledges every subscription of `names` in turn, a little at a
/// time, until each has every record acknowledged or `deadline` passes; notes when a
/// read of `worker` first succeeds after `lost` is set.
async fn subscriber(
    subs: Subscriptions,
    names: Vec<String>,
    seen: Arc<Vec<Mutex<Seen>>>,
    lost: Lost,
    deadline: Instant,
) {
    let done = |seen: &Mutex<Seen>| seen.lock().unwrap().acked.len() >= RECORDS as usize;
    while Instant::now() < deadline && !seen.iter().all(done) {
        for (name, seen) in names.iter().zip(seen.iter()) {
            if done(seen) {
                continue;
            }
            let before = lost.lock().unwrap().as_ref().map(|(at, _)| *at);
            if !read_and_ack(&subs, name, seen).await {
                continue;
            }
            if name == "worker"
                && let Some(at) = before
                && let Some((_, served)) = lost.lock().unwrap().as_mut()
            {
                served.get_or_insert(at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records of every subscription acknowledged (answered) so far.
fn answered(seen: &[Mutex<Seen>]) -> usize {
    seen.iter().map(|s| s.lock().unwrap().answered).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_managers_share_subscriptions_and_take_over_a_killed_owners() {
    let cluster = Cluster::start("2s");
    crate::cluster::wait_for_brokers(&cluster).await;
    let snapshots = ["--journal-snapshot-bytes", "1KiB"];
    let mut nodes: Vec<Server> = ["cm-a", "cm-b", "cm-c"]
        .iter()
        .map(|name| consumer_manager_with(&cluster, name, &snapshots))
        .collect();
    wait_spread(&nodes).await;
    // The cluster status names an owner for each of the 16 journal partitions.
    let status = crate::clock::any_status(&cluster).await;
    let owners: BTreeSet<&str> = status
        .journal_owners
        .iter()
        .map(|o| o.address.as_str())
        .collect();
    assert_eq!(
        status.journal_owners.len(),
        16,
        "{:?}",
        status.journal_owners
    );
    assert_eq!(
        owners,
        nodes.iter().map(|n| n.address()).collect::<BTreeSet<_>>()
    );
    let client = Client::connect(cluster.brokers[0].address()).await.unwrap();
    let per_partition = fill(&client, RECORDS).await;

    let all: Vec<&str> = nodes.iter().map(|n| n.address()).collect();
    let subs = Subscriptions::new(Client::connect(&all.join(",")).await.unwrap());
    let options = SubscriptionOptions {
        start: Some(v1::subscription_options::Start::Earliest(true)),
        ack_deadline_ms: 2_000,
        ..SubscriptionOptions::default()
    };
    let mut names: Vec<String> = (0..OTHERS).map(|i| format!("other-{i}")).collect();
    names.push("worker".into());
    for name in &names {
        subs.subscribe("work", name, options.clone()).await.unwrap();
    }
    // Every node answers for every subscription (naming the owner); a listing through
    // any of them shows all.
    let listed: BTreeSet<String> = subs
        .list("", "")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, names.iter().cloned().collect::<BTreeSet<_>>());
    let mut owners = BTreeSet::new();
    for name in &names {
        owners.insert(
            owner_of(&nodes, name)
                .await
                .expect("every subscription has an owner"),
        );
    }
    assert!(owners.len() >= 2, "{OTHERS} subscriptions all on one node");

    let seen: Arc<Vec<Mutex<Seen>>> = Arc::new(names.iter().map(|_| Mutex::default()).collect());
    let lost: Lost = Arc::new(Mutex::new(None));
    let deadline = Instant::now() + Duration::from_secs(120);
    let reading = tokio::spawn(subscriber(
        subs.clone(),
        names.clone(),
        seen.clone(),
        lost.clone(),
        deadline,
    ));
    let total = RECORDS as usize * names.len();
    while answered(&seen) < total / 3 {
        assert!(Instant::now() < deadline, "the subscriber made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill the owner of `worker`; once it is served again, a fourth node joins and
    // takes partitions over from the survivors (they let go first) while reading goes on.
    let owner = owner_of(&nodes, "worker")
        .await
        .expect("worker has an owner");
    nodes[owner].kill9();
    *lost.lock().unwrap() = Some((Instant::now(), None));
    // A listing while the dead owner is not yet replaced waits for its successor,
    // and is complete.
    let during: BTreeSet<String> = subs
        .list("", "")
        .await
        .expect("listing while an owner is dead")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(during, names.iter().cloned().collect::<BTreeSet<_>>());
    while lost
        .lock()
        .unwrap()
        .is_some_and(|(_, served)| served.is_none())
    {
        assert!(Instant::now() < deadline, "worker was never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = consumer_manager_with(&cluster, "cm-d", &snapshots);
    let at_join = answered(&seen);
    reading.await.unwrap();
    let served_again = lost.lock().unwrap().and_then(|(_, served)| served);
    let mut clean = true;
    for (name, seen) in names.iter().zip(seen.iter()) {
        let expected = per_partition
            .iter()
            .flat_map(|(&p, &n)| (0..n).map(move |o| (p, o)));
        let found = check_subscription(expected, &seen.lock().unwrap().events);
        println!("{name}: {found}");
        clean &= found.is_clean();
    }
    // The new node got its share of the journal's partitions.
    let share_deadline = Instant::now() + Duration::from_secs(20);
    while own_listing(joined.address())
        .await
        .is_none_or(|l| l.journal_partitions.is_empty())
    {
        assert!(
            Instant::now() < share_deadline,
            "the joining node was granted nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let taken = own_listing(joined.address())
        .await
        .map(|l| l.subscriptions.len());
    println!(
        "owner of worker killed; served again after {served_again:?}; a node joined with \
         {at_join} of {total} records acknowledged and serves {taken:?} subscriptions; \
         {} nodes owned the {} subscriptions at first",
        owners.len(),
        names.len()
    );
    assert!(clean, "the at-least-once promise broke (above)");
    let served_again = served_again.expect("never served again after the owner was killed");
    assert!(
        served_again < Duration::from_secs(10),
        "took {served_again:?} to serve again"
    );
    // The survivors and the new node serve every subscription.
    let mut live: Vec<&str> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(_, n)| n.address())
        .collect();
    live.push(joined.address());
    let subs = Subscriptions::new(Client::connect(&live.join(",")).await.unwrap());
    let listed = subs.list("", "").await.unwrap();
    assert_eq!(listed.len(), names.len(), "{listed:?}");
}

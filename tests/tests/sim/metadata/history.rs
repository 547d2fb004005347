//! What the simulated clients saw, and the checks over it: no acknowledged write lost,
//! no definitely refused write applied, one leader per term, every node ending with the
//! same metadata, and writes accepted again soon after the network heals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pubsub_proto::v1;
use tonic::Code;

/// Longest the group may take to accept writes again once every fault is healed.
pub const HEAL_BOUND: Duration = Duration::from_secs(10);

/// What became of one topic creation, over all its attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An attempt was answered OK: the topic must exist.
    Acked,
    /// Every attempt was refused before it could apply (the code of the last): the
    /// topic must not exist.
    Refused(Code),
    /// Some attempt may have applied (a timeout, a lost answer): either is fine.
    Unknown,
}

impl Outcome {
    /// The outcome after one more attempt that ended as `attempt`.
    pub fn and(self, attempt: Outcome) -> Outcome {
        match (self, attempt) {
            (Outcome::Acked, _) | (_, Outcome::Acked) => Outcome::Acked,
            (Outcome::Unknown, _) | (_, Outcome::Unknown) => Outcome::Unknown,
            (Outcome::Refused(_), refused) => refused,
        }
    }

    /// How an attempt answered with `code` ended: refusals that are decided before
    /// the command is applied are definite, everything else may have applied.
    pub fn of_error(code: Code) -> Outcome {
        match code {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated => Outcome::Refused(code),
            _ => Outcome::Unknown,
        }
    }
}

/// Everything the clients recorded in one run.
#[derive(Debug, Default)]
pub struct History {
    /// Each topic's outcome, by name, with its partition count.
    pub creates: BTreeMap<String, (u32, Outcome)>,
    /// Leaders reported for each term, by any node.
    pub leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// Time from the final heal to the first acknowledged write.
    pub healed_in: Option<Duration>,
    /// Each node's topics (name, partitions) once the group converged.
    pub final_topics: BTreeMap<u64, Vec<(String, u32)>>,
    /// Whether every node reached the same applied index after the heal.
    pub converged: bool,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Each partition's leader, epoch and in-sync replicas, by the metadata version
    /// (Raft log index) an answer read them at.
    pub partitions: BTreeMap<(String, u32), BTreeMap<u64, Placement>>,
    /// In-sync replica changes acknowledged.
    pub isr_changes: u32,
    /// Answers that contradicted an earlier one at the same metadata version.
    pub contradictions: Vec<String>,
}

/// A partition's leadership as one answer read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub leader: Option<u32>,
    pub epoch: i32,
    pub in_sync: Vec<u32>,
}

impl History {
    /// Records `partition` of `topic` as read at metadata `version`.
    pub fn record_partition(
        &mut self,
        topic: &str,
        partition: &v1::PartitionMetadata,
        version: u64,
    ) {
        let placement = Placement {
            leader: partition.leader,
            epoch: partition.leader_epoch,
            in_sync: partition.in_sync_replicas.clone(),
        };
        let key = (topic.to_string(), partition.partition);
        let versions = self.partitions.entry(key).or_default();
        match versions.get(&version) {
            Some(seen) if *seen != placement => self.contradictions.push(format!(
                "inconsistent: {topic}/{} at version {version} read as {seen:?} and {placement:?}",
                partition.partition
            )),
            Some(_) => {}
            None => {
                versions.insert(version, placement);
            }
        }
    }
}

/// The anomalies of `history`, each a sentence; empty when it is correct.
pub fn check(history: &History) -> Vec<String> {
    let mut anomalies = Vec::new();
    for (term, leaders) in &history.leaders {
        if leaders.len() > 1 {
            anomalies.push(format!("split brain: term {term} had leaders {leaders:?}"));
        }
    }
    match history.healed_in {
        Some(took) if took <= HEAL_BOUND => {}
        Some(took) => anomalies.push(format!("writes resumed {took:?} after the heal")),
        None => anomalies.push("no write was acknowledged after the heal".into()),
    }
    if !history.converged {
        anomalies.push("the nodes did not converge after the heal".into());
    }
    let mut views = history.final_topics.iter();
    let Some((first_node, first)) = views.next() else {
        anomalies.push("no node answered the final read".into());
        return anomalies;
    };
    for (node, topics) in views {
        if topics != first {
            anomalies.push(format!(
                "divergence: node {node} has {} topics, node {first_node} {}",
                topics.len(),
                first.len()
            ));
        }
    }
    anomalies.extend(check_topics(history, first));
    anomalies.extend(history.contradictions.iter().cloned());
    anomalies.extend(check_placements(history));
    anomalies
}

/// Leader epochs never go back as the metadata version grows, the in-sync replicas are
/// never empty, and they hold the leader.
fn check_placements(history: &History) -> Vec<String> {
    let mut anomalies = Vec::new();
    for ((topic, partition), versions) in &history.partitions {
        let mut last: Option<(u64, i32)> = None;
        for (version, placement) in versions {
            if let Some((before, epoch)) = last.filter(|(_, epoch)| placement.epoch < *epoch) {
                anomalies.push(format!(
                    "epoch went back: {topic}/{partition} had epoch {epoch} at version {before}, {} at {version}",
                    placement.epoch
                ));
            }
            let leader_outside = placement
                .leader
                .is_some_and(|l| !placement.in_sync.contains(&l));
            if placement.in_sync.is_empty() || leader_outside {
                anomalies.push(format!(
                    "bad in-sync replicas: {topic}/{partition} at version {version}: {placement:?}"
                ));
            }
            last = Some((*version, placement.epoch));
        }
    }
    anomalies
}

/// Checks one node's final topics against the creations' outcomes.
fn check_topics(history: &History, topics: &[(String, u32)]) -> Vec<String> {
    let mut anomalies = Vec::new();
    let present: BTreeMap<&str, u32> = topics.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    for (name, (partitions, outcome)) in &history.creates {
        match (outcome, present.get(name.as_str())) {
            (Outcome::Acked, None) => anomalies.push(format!("lost write: {name}")),
            (Outcome::Refused(code), Some(_)) => {
                anomalies.push(format!("aborted read: {name} was refused {code:?}"));
            }
            (_, Some(found)) if found != partitions => anomalies.push(format!(
                "inconsistent: {name} has {found} partitions, {partitions} were asked"
            )),
            _ => {}
        }
    }
    for (name, _) in topics {
        if !history.creates.contains_key(name) {
            anomalies.push(format!("phantom: {name} was never created"));
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correct() -> History {
        let mut history = History::default();
        history.creates.insert("a".into(), (2, Outcome::Acked));
        history
            .creates
            .insert("b".into(), (1, Outcome::Refused(Code::InvalidArgument)));
        history.creates.insert("c".into(), (1, Outcome::Unknown));
        history.leaders.insert(3, BTreeSet::from([1]));
        history.healed_in = Some(Duration::from_secs(2));
        history.converged = true;
        for node in 1..=3 {
            history.final_topics.insert(node, vec![("a".into(), 2)]);
        }
        history
    }

    #[test]
    fn a_correct_history_has_no_anomaly() {
        assert_eq!(check(&correct()), Vec::<String>::new());
    }

    #[test]
    fn every_anomaly_class_is_reported() {
        let mut history = correct();
        history.leaders.insert(4, BTreeSet::from([1, 2]));
        history.healed_in = Some(Duration::from_secs(11));
        history.creates.insert("d".into(), (1, Outcome::Acked));
        history
            .final_topics
            .insert(1, vec![("a".into(), 3), ("b".into(), 1), ("x".into(), 1)]);
        let partition = |leader, leader_epoch, in_sync_replicas| v1::PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch,
            in_sync_replicas,
            ..Default::default()
        };
        history.record_partition("a", &partition(Some(1), 2, vec![1, 2]), 10);
        history.record_partition("a", &partition(Some(2), 3, vec![2]), 10);
        history.record_partition("a", &partition(Some(1), 1, vec![1]), 11);
        history.record_partition("a", &partition(Some(3), 4, vec![1]), 12);
        let anomalies = check(&history).join("\n");
        for class in [
            "split brain",
            "resumed",
            "divergence",
            "lost write: d",
            "aborted read: b",
            "inconsistent: a",
            "phantom: x",
            "inconsistent: a/0 at version 10",
            "epoch went back",
            "bad in-sync",
        ] {
            assert!(
                anomalies.contains(class),
                "{class} missing from:\n{anomalies}"
            );
        }
    }

    #[test]
    fn outcomes_combine_over_attempts() {
        let refused = Outcome::of_error(Code::FailedPrecondition);
        assert_eq!(
            refused.and(Outcome::of_error(Code::Unavailable)),
            Outcome::Unknown
        );
        assert_eq!(Outcome::Unknown.and(Outcome::Acked), Outcome::Acked);
        assert_eq!(refused.and(refused), refused);
    }
}

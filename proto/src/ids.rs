//! Validated identifiers shared by every service and the client.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest topic name: Kafka's limit, so names fit in a file name with a partition suffix.
pub const TOPIC_NAME_MAX_BYTES: usize = 249;

/// Most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;

/// The topic where consumer managers journal every subscription's state (as Kafka's
/// `__consumer_offsets`): internal, never deleted through the API.
pub const SUBSCRIPTION_STATE_TOPIC: &str = "__subscription_state";

/// Partitions of the subscription-state journal: the units subscriptions are spread
/// over consumer managers by (each partition has one owner at a time).
pub const SUBSCRIPTION_STATE_PARTITIONS: u32 = 16;

/// The journal partition a subscription's state lives in, out of `partitions`: its
/// owner serves the subscription.
pub fn subscription_shard(subscription: &[u8], partitions: u32) -> u32 {
    crate::partitioner::murmur2(subscription) % partitions.max(1)
}

/// Whether a topic is one the system keeps for itself (deleting it would lose state
/// no other copy holds).
pub fn is_internal_topic(name: &str) -> bool {
    name == SUBSCRIPTION_STATE_TOPIC
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("topic name is {len} bytes long; the limit is {TOPIC_NAME_MAX_BYTES}")]
    TooLong {
        /// The name's length.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "topic name {name:?} has the character {ch:?}; only letters, digits, '.', '_' and '-' are allowed"
    )]
    BadCharacter {
        /// The name (at most the first 249 bytes).
        name: String,
        /// The first bad character.
        ch: char,
    },
    /// The name is `.` or `..` or holds `..`.
    #[error("topic name {0:?} may not be '.' or contain '..'")]
    Dots(String),
}

/// A topic name: `[A-Za-z0-9._-]{1,249}` without `..`, safe as a directory name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Validates a name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > TOPIC_NAME_MAX_BYTES {
            return Err(NameError::TooLong { len: name.len() });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::BadCharacter { name, ch });
        }
        if name == "." || name.contains("..") {
            return Err(NameError::Dots(name));
        }
        Ok(TopicName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TopicName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicName::new(s)
    }
}

/// A partition's index within its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A broker's id within the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerId(pub u32);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A random positive producer id (SplitMix64 of the clock and the process id): the
/// SDK's idempotent producers and the Kafka listener's InitProducerId pick their own,
/// so no coordinator hands ids out; two producers collide with negligible odds.
pub fn random_producer_id() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ (u64::from(std::process::id()) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) & (i64::MAX as u64)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(TopicName::new(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn topic_names_follow_the_kafka_rules() {
        check("orders", true);
        check("a.b_c-D9", true);
        check(&"x".repeat(249), true);
        check(&"x".repeat(250), false);
        check("", false);
        check(".", false);
        check("..", false);
        check("a..b", false);
        check("a/b", false);
        check("a b", false);
        check("ü", false);
    }
}

//! Checks of a command's fields before it enters the Raft log, so that no entry holds a
//! name, address or list a reader could not take.

use pubsub_proto::auth::{RuleError, valid_token_id};
use pubsub_proto::ids::TopicName;

use super::{
    ADDRESS_BYTES_MAX, CommandError, PartitionSize, RACK_BYTES_MAX, REPLICATION_FACTOR_MAX,
    SIZES_PER_HEARTBEAT_MAX,
};

/// A heartbeat's sizes: bounded in number, every topic name valid.
pub(super) fn validate_sizes(broker: u32, sizes: &[PartitionSize]) -> Result<(), CommandError> {
    if sizes.len() > SIZES_PER_HEARTBEAT_MAX {
        return Err(CommandError::InvalidBroker {
            broker,
            reason: format!(
                "{} partition sizes in one heartbeat; at most {SIZES_PER_HEARTBEAT_MAX}",
                sizes.len()
            ),
        });
    }
    sizes
        .iter()
        .try_for_each(|size| validate_topic_name(&size.topic))
}

pub(crate) fn validate_topic_name(name: &str) -> Result<(), CommandError> {
    TopicName::new(name)
        .map(|_| ())
        .map_err(|e| CommandError::InvalidTopicName {
            reason: e.to_string(),
        })
}

/// A move's lists: the same length (a move keeps the replication factor), within
/// the replica limit, no broker twice in the target.
pub(super) fn validate_move(
    topic: &str,
    partition: u32,
    from: &[u32],
    to: &[u32],
) -> Result<(), CommandError> {
    validate_topic_name(topic)?;
    let invalid = |reason: &str| CommandError::InvalidMove {
        topic: topic.to_string(),
        partition,
        reason: reason.to_string(),
    };
    if to.is_empty() || to.len() != from.len() {
        return Err(invalid(
            "the target must list as many replicas as the partition has",
        ));
    }
    if to.len() > REPLICATION_FACTOR_MAX as usize {
        return Err(invalid("more replicas than the replication factor limit"));
    }
    let distinct: std::collections::BTreeSet<u32> = to.iter().copied().collect();
    if distinct.len() != to.len() {
        return Err(invalid("the target lists a broker twice"));
    }
    Ok(())
}

pub(super) fn validate_token_id(id: &str) -> Result<(), CommandError> {
    if valid_token_id(id) {
        Ok(())
    } else {
        Err(CommandError::InvalidAccess {
            reason: "a token id is 16 lower-case hex digits".into(),
        })
    }
}

pub(super) fn invalid_access(error: RuleError) -> CommandError {
    CommandError::InvalidAccess {
        reason: error.to_string(),
    }
}

pub(super) fn validate_address(broker: u32, what: &str, address: &str) -> Result<(), CommandError> {
    match address_problem(what, address) {
        Some(reason) => Err(CommandError::InvalidBroker { broker, reason }),
        None => Ok(()),
    }
}

/// What is wrong with a node's address, if anything: empty, or too long.
fn address_problem(what: &str, address: &str) -> Option<String> {
    if address.is_empty() {
        return Some(format!("{what} is empty"));
    }
    (address.len() > ADDRESS_BYTES_MAX).then(|| {
        format!(
            "{what} is {} bytes long; the limit is {ADDRESS_BYTES_MAX}",
            address.len()
        )
    })
}

/// A consumer manager's heartbeat: its address bounded, held partitions within the
/// journal's and few enough.
pub(super) fn validate_consumer_manager(address: &str, held: &[u32]) -> Result<(), CommandError> {
    let invalid = |reason: String| Err(CommandError::InvalidConsumerManager { reason });
    if let Some(reason) = address_problem("address", address) {
        return invalid(reason);
    }
    let partitions = pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS;
    if held.len() > partitions as usize || held.iter().any(|&p| p >= partitions) {
        return invalid(format!(
            "held journal partitions must be below {partitions}, at most {partitions} of them"
        ));
    }
    Ok(())
}

pub(super) fn validate_broker(
    broker: u32,
    address: &str,
    rack: Option<&str>,
) -> Result<(), CommandError> {
    let invalid = |reason: String| Err(CommandError::InvalidBroker { broker, reason });
    validate_address(broker, "address", address)?;
    if let Some(rack) = rack {
        if rack.is_empty() {
            return invalid("rack is empty (leave it unset instead)".into());
        }
        if rack.len() > RACK_BYTES_MAX {
            return invalid(format!(
                "rack is {} bytes long; the limit is {RACK_BYTES_MAX}",
                rack.len()
            ));
        }
    }
    Ok(())
}

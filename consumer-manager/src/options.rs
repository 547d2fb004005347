//! Subscription options: validated, defaults filled in, and compared to decide whether
//! a repeated Subscribe is the same subscription.

use serde::{Deserialize, Serialize};

use pubsub_proto::v1;

use crate::error::{Error, Result};

/// Default ack deadline (Pub/Sub's default is 10 s; 30 s suits slower handlers).
pub(crate) const DEFAULT_ACK_DEADLINE_MS: u32 = 30_000;
/// Default group session timeout (Kafka's `session.timeout.ms` is 45 s; 10 s moves
/// partitions of a dead member sooner).
pub(crate) const DEFAULT_SESSION_TIMEOUT_MS: u32 = 10_000;
/// Bounds of the ack deadline: at least 100 ms, at most 10 minutes (as Pub/Sub).
const ACK_DEADLINE_RANGE_MS: (u32, u32) = (100, 600_000);
/// Bounds of the session timeout.
const SESSION_TIMEOUT_RANGE_MS: (u32, u32) = (500, 3_600_000);

/// Where a new subscription starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// The first record still stored.
    Earliest,
    /// Records produced from now on.
    Latest,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl Start {
    /// The broker offset query for this position. A partition whose stored position
    /// lies past its log end is reset by it too, as Kafka's `auto.offset.reset` does.
    pub fn spec(self) -> v1::list_offsets_request::Spec {
        use v1::list_offsets_request::Spec;
        match self {
            Start::Earliest => Spec::Earliest(true),
            Start::Latest => Spec::Latest(true),
            Start::Timestamp(ts) => Spec::TimestampMs(ts),
        }
    }
}

/// Effective subscription options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Start position of a new subscription.
    pub start: Start,
    /// Records older than this are skipped; `None`: no limit.
    pub retention_ms: Option<u64>,
    /// Lease length of a delivered record.
    pub ack_deadline_ms: u32,
    /// Deliveries before a record is dead-lettered; `None`: never.
    pub max_deliveries: Option<u32>,
    /// Dead-letter topic name.
    pub dead_letter_topic: String,
    /// Consumer group (partitions assigned to members) or shared.
    pub group: bool,
    /// Group member session timeout.
    pub session_timeout_ms: u32,
}

impl Options {
    /// Validates a request's options, filling in defaults.
    pub fn resolve(
        topic: &str,
        subscription: &str,
        options: Option<&v1::SubscriptionOptions>,
    ) -> Result<Options> {
        let empty = v1::SubscriptionOptions::default();
        let o = options.unwrap_or(&empty);
        use v1::subscription_options::Start as S;
        let start = match o.start {
            None | Some(S::Earliest(true)) => Start::Earliest,
            Some(S::Latest(true)) => Start::Latest,
            Some(S::TimestampMs(ts)) if ts >= 0 => Start::Timestamp(ts),
            Some(S::TimestampMs(ts)) => {
                return Err(Error::InvalidOption {
                    option: "start timestamp_ms",
                    got: ts.to_string(),
                    rule: "must not be negative (use a time in ms, or earliest or latest)",
                });
            }
            Some(S::Earliest(false) | S::Latest(false)) => {
                return Err(Error::InvalidOption {
                    option: "start earliest or latest",
                    got: "false".into(),
                    rule: "must be true when set (leave them unset otherwise)",
                });
            }
        };
        let retention_ms = match o.retention_ms {
            0 => None,
            ms if ms > 0 => Some(ms as u64),
            ms => {
                return Err(Error::InvalidOption {
                    option: "retention_ms",
                    got: ms.to_string(),
                    rule: "must be positive (or 0 for no limit)",
                });
            }
        };
        let ack_deadline_ms = in_range(
            o.ack_deadline_ms,
            DEFAULT_ACK_DEADLINE_MS,
            ACK_DEADLINE_RANGE_MS,
            "ack_deadline_ms",
        )?;
        let session_timeout_ms = in_range(
            o.session_timeout_ms,
            DEFAULT_SESSION_TIMEOUT_MS,
            SESSION_TIMEOUT_RANGE_MS,
            "session_timeout_ms",
        )?;
        let dead_letter_topic = if o.dead_letter_topic.is_empty() {
            format!("{topic}.{subscription}.dlq")
        } else {
            o.dead_letter_topic.clone()
        };
        check_name("dead-letter topic", &dead_letter_topic)?;
        if dead_letter_topic == topic {
            return Err(Error::InvalidOption {
                option: "dead_letter_topic",
                got: format!("{dead_letter_topic:?}"),
                rule: "must differ from the subscribed topic",
            });
        }
        Ok(Options {
            start,
            retention_ms,
            ack_deadline_ms,
            max_deliveries: (o.max_deliveries > 0).then_some(o.max_deliveries),
            dead_letter_topic,
            group: o.group,
            session_timeout_ms,
        })
    }

    /// The options as the wire shows them.
    pub fn to_proto(&self) -> v1::SubscriptionOptions {
        use v1::subscription_options::Start as S;
        v1::SubscriptionOptions {
            start: Some(match self.start {
                Start::Earliest => S::Earliest(true),
                Start::Latest => S::Latest(true),
                Start::Timestamp(ts) => S::TimestampMs(ts),
            }),
            retention_ms: self.retention_ms.map_or(0, |ms| ms as i64),
            ack_deadline_ms: self.ack_deadline_ms,
            max_deliveries: self.max_deliveries.unwrap_or(0),
            dead_letter_topic: self.dead_letter_topic.clone(),
            group: self.group,
            session_timeout_ms: self.session_timeout_ms,
        }
    }
}

fn in_range(value: u32, default: u32, (min, max): (u32, u32), option: &'static str) -> Result<u32> {
    match value {
        0 => Ok(default),
        v if (min..=max).contains(&v) => Ok(v),
        got => Err(Error::OptionOutOfRange {
            option,
            min,
            max,
            got,
        }),
    }
}

/// Checks a subscription name: the same rules as topic names.
pub(crate) fn check_subscription_name(name: &str) -> Result<()> {
    check_name("subscription name", name)
}

/// Checks a topic or subscription name against the topic naming rules; `what` says
/// which name it is, for the error.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    pubsub_proto::ids::TopicName::new(name.to_string())
        .map(|_| ())
        .map_err(|reason| Error::InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_filled_in_and_bad_values_named() {
        let o = Options::resolve("t", "s", None).unwrap();
        assert_eq!(o.start, Start::Earliest);
        assert_eq!(o.ack_deadline_ms, DEFAULT_ACK_DEADLINE_MS);
        assert_eq!(o.dead_letter_topic, "t.s.dlq");
        let bad = v1::SubscriptionOptions {
            ack_deadline_ms: 5,
            ..Default::default()
        };
        let e = Options::resolve("t", "s", Some(&bad)).unwrap_err();
        assert!(e.to_string().contains("ack_deadline_ms"), "{e}");
        assert!(check_subscription_name("a/b").is_err());
    }

    #[test]
    fn options_round_trip_through_the_wire_form() {
        let o = Options::resolve("t", "s", None).unwrap();
        assert_eq!(Options::resolve("t", "s", Some(&o.to_proto())).unwrap(), o);
    }
}

//! Kafka's consumer protocol: the bytes inside JoinGroup and SyncGroup that the
//! broker does not otherwise look at. A member's subscription names the topics it
//! reads; an assignment names the partitions it owns. Both start with their own
//! version (an i16), and a reader decodes newer versions as the newest it knows,
//! since later versions only append fields.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::super::metadata::topic_name;

/// Assignors whose members give up every partition at a rebalance and take what they
/// are given: the server's assignment suits them exactly. Preferred when offered.
const EAGER: &[&str] = &["range", "roundrobin"];
/// Newest consumer-protocol version this codec knows.
const NEWEST: i16 = 3;

/// The protocol the group uses: the member's first eager assignor, else its first.
pub(crate) fn choose(protocols: &[JoinGroupRequestProtocol]) -> Option<&JoinGroupRequestProtocol> {
    protocols
        .iter()
        .find(|p| EAGER.contains(&p.name.as_str()))
        .or_else(|| protocols.first())
}

/// The topics a member subscribes to, sorted and without repeats.
pub(crate) fn subscribed_topics(metadata: &[u8]) -> Result<Vec<String>, String> {
    let mut buf = metadata;
    if buf.remaining() < 2 {
        return Err("the subscription metadata is shorter than its version".into());
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(format!(
            "subscription metadata version {version} is negative"
        ));
    }
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version.min(NEWEST))
        .map_err(|e| format!("malformed subscription metadata: {e}"))?;
    let mut topics: Vec<String> = subscription
        .topics
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    topics.sort();
    topics.dedup();
    Ok(topics)
}

/// The subscription bytes of a member reading `topic` (version 0), as DescribeGroups
/// reports a member's metadata: clients decode it, and an empty one fails them.
pub(crate) fn subscription(topic: &str) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default().with_topics(vec![
        kafka_protocol::protocol::StrBytes::from_string(topic.to_string()),
    ]);
    let mut buf = BytesMut::with_capacity(16 + topic.len());
    buf.put_i16(0);
    match subscription.encode(&mut buf, 0) {
        Ok(()) => buf.freeze(),
        Err(e) => {
            tracing::error!(error = %e, topic, "cannot encode a member's subscription");
            Bytes::new()
        }
    }
}

/// The assignment bytes of a member owning `partitions` of `topic` (version 0, which
/// every client reads).
pub(crate) fn assignment(topic: &str, partitions: &[u32]) -> Bytes {
    let owned = TopicPartition::default()
        .with_topic(topic_name(topic))
        .with_partitions(partitions.iter().map(|p| *p as i32).collect());
    let assignment =
        ConsumerProtocolAssignment::default().with_assigned_partitions(if partitions.is_empty() {
            Vec::new()
        } else {
            vec![owned]
        });
    let mut buf = BytesMut::with_capacity(32 + 4 * partitions.len());
    buf.put_i16(0);
    match assignment.encode(&mut buf, 0) {
        Ok(()) => buf.freeze(),
        // Only a topic name over 32,767 bytes fails to encode, and names are at
        // most 249 bytes; an empty assignment is still a valid answer.
        Err(e) => {
            tracing::error!(error = %e, topic, "cannot encode a group assignment");
            Bytes::from_static(&[0, 0, 0, 0, 0, 0, 255, 255, 255, 255])
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    use super::*;

    fn decode_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
        let mut buf = bytes;
        let version = buf.get_i16();
        let assignment = ConsumerProtocolAssignment::decode(&mut buf, version).expect("decodes");
        assignment
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect()
    }

    fn subscription(version: i16, topics: &[&str]) -> Bytes {
        let subscription = ConsumerProtocolSubscription::default().with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string(t.to_string()))
                .collect(),
        );
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        subscription
            .encode(&mut buf, version.min(NEWEST))
            .expect("encodes");
        buf.freeze()
    }

    fn protocol(name: &'static str) -> JoinGroupRequestProtocol {
        JoinGroupRequestProtocol::default().with_name(StrBytes::from_static_str(name))
    }

    #[test]
    fn an_eager_assignor_is_preferred() {
        let offered = [protocol("cooperative-sticky"), protocol("roundrobin")];
        assert_eq!(
            choose(&offered).map(|p| p.name.as_str()),
            Some("roundrobin")
        );
        let only = [protocol("cooperative-sticky")];
        assert_eq!(
            choose(&only).map(|p| p.name.as_str()),
            Some("cooperative-sticky")
        );
        assert!(choose(&[]).is_none());
    }

    #[test]
    fn subscriptions_of_every_version_name_their_topics() {
        for version in 0..=NEWEST + 1 {
            let bytes = subscription(version, &["b", "a", "b"]);
            assert_eq!(
                subscribed_topics(&bytes),
                Ok(vec!["a".to_string(), "b".to_string()])
            );
        }
        assert!(subscribed_topics(&[0]).is_err());
        assert!(subscribed_topics(&[255, 255]).is_err());
        assert!(subscribed_topics(&[0, 0, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn a_described_members_subscription_names_its_topic() {
        assert_eq!(
            subscribed_topics(&super::subscription("orders")),
            Ok(vec!["orders".to_string()])
        );
    }

    #[test]
    fn an_empty_assignment_has_no_topic() {
        assert!(decode_assignment(&assignment("orders", &[])).is_empty());
    }

    proptest! {
        #[test]
        fn assignments_decode_to_what_was_assigned(
            topic in "[a-zA-Z0-9._-]{1,249}",
            partitions in proptest::collection::vec(0u32..100_000, 1..64),
        ) {
            let decoded = decode_assignment(&assignment(&topic, &partitions));
            let expected: Vec<i32> = partitions.iter().map(|p| *p as i32).collect();
            prop_assert_eq!(decoded, vec![(topic, expected)]);
        }

        #[test]
        fn arbitrary_metadata_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = subscribed_topics(&bytes);
        }
    }
}

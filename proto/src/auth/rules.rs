//! Access rules and the one decision over them: may this principal do this operation on
//! this resource? Pure: the same rules give the same answer everywhere they are checked
//! (brokers, cluster managers, consumer managers).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::v1;

/// Longest principal name.
pub const PRINCIPAL_BYTES_MAX: usize = 128;
/// Longest resource name or prefix in a rule (a topic or subscription name).
pub const RESOURCE_BYTES_MAX: usize = crate::ids::TOPIC_NAME_MAX_BYTES;

/// An operation a rule may allow. `Admin` implies the others on the same resources;
/// `Produce` and `Consume` imply `Describe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Write records to a topic.
    Produce,
    /// Read records from a topic or through a subscription.
    Consume,
    /// Create, alter and delete; manage tokens and rules (on the cluster).
    Admin,
    /// See that a resource exists and how it is configured.
    Describe,
}

impl Operation {
    /// Whether a rule allowing `self` allows `wanted` too.
    pub fn implies(self, wanted: Operation) -> bool {
        self == wanted
            || self == Operation::Admin
            || (wanted == Operation::Describe
                && matches!(self, Operation::Produce | Operation::Consume))
    }

    /// The lower-case name used in messages and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Admin => "admin",
            Operation::Describe => "describe",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Operation {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        match s {
            "produce" => Ok(Operation::Produce),
            "consume" => Ok(Operation::Consume),
            "admin" => Ok(Operation::Admin),
            "describe" => Ok(Operation::Describe),
            other => Err(RuleError::Operation(other.chars().take(32).collect())),
        }
    }
}

/// What a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resource {
    /// One topic.
    Topic(String),
    /// Every topic whose name starts with the prefix.
    TopicPrefix(String),
    /// One subscription (or consumer group).
    Subscription(String),
    /// Every subscription whose name starts with the prefix.
    SubscriptionPrefix(String),
    /// Everything.
    Cluster,
}

/// The concrete thing a call touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A topic.
    Topic(&'a str),
    /// A subscription or consumer group.
    Subscription(&'a str),
    /// The cluster itself (members, tokens, rules).
    Cluster,
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Topic(name) => write!(f, "topic {name:?}"),
            Target::Subscription(name) => write!(f, "subscription {name:?}"),
            Target::Cluster => f.write_str("the cluster"),
        }
    }
}

impl Resource {
    /// Whether the rule's resource covers `target`.
    pub fn covers(&self, target: Target<'_>) -> bool {
        match (self, target) {
            (Resource::Cluster, _) => true,
            (Resource::Topic(name), Target::Topic(topic)) => name == topic,
            (Resource::TopicPrefix(prefix), Target::Topic(topic)) => {
                topic.starts_with(prefix.as_str())
            }
            (Resource::Subscription(name), Target::Subscription(sub)) => name == sub,
            (Resource::SubscriptionPrefix(prefix), Target::Subscription(sub)) => {
                sub.starts_with(prefix.as_str())
            }
            _ => false,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) => write!(f, "topic {name}"),
            Resource::TopicPrefix(prefix) => write!(f, "topic-prefix {prefix}"),
            Resource::Subscription(name) => write!(f, "subscription {name}"),
            Resource::SubscriptionPrefix(prefix) => write!(f, "subscription-prefix {prefix}"),
            Resource::Cluster => f.write_str("cluster"),
        }
    }
}

/// One allow rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    /// Who it applies to.
    pub principal: String,
    /// What it applies to.
    pub resource: Resource,
    /// What it allows.
    pub operation: Operation,
}

/// Why a rule, principal or token request is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The principal name breaks the rules.
    #[error(
        "principal name {0:?} is invalid: use 1 to 128 letters, digits, '.', '_', '-', '@' or ':'"
    )]
    Principal(String),
    /// The operation is not one of the four.
    #[error("unknown operation {0:?}; use produce, consume, admin or describe")]
    Operation(String),
    /// The resource is missing, or its name is empty or too long.
    #[error("{0}")]
    Resource(String),
}

/// Checks a principal name: 1 to 128 bytes of `[A-Za-z0-9._@:-]`.
pub fn validate_principal(name: &str) -> Result<(), RuleError> {
    let ok = !name.is_empty()
        && name.len() <= PRINCIPAL_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(RuleError::Principal(
            name.chars().take(PRINCIPAL_BYTES_MAX).collect(),
        ))
    }
}

/// True if any of `rules` (those of one principal, or all: the principal is checked)
/// allows `principal` to do `operation` on `target`.
pub fn allows<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
    principal: &str,
    operation: Operation,
    target: Target<'_>,
) -> bool {
    rules.into_iter().any(|rule| {
        rule.principal == principal
            && rule.operation.implies(operation)
            && rule.resource.covers(target)
    })
}

impl Rule {
    /// A rule from its wire form, validated.
    pub fn from_wire(rule: &v1::AclRule) -> Result<Rule, RuleError> {
        validate_principal(&rule.principal)?;
        let operation = match v1::Operation::try_from(rule.operation) {
            Ok(v1::Operation::Produce) => Operation::Produce,
            Ok(v1::Operation::Consume) => Operation::Consume,
            Ok(v1::Operation::Admin) => Operation::Admin,
            Ok(v1::Operation::Describe) => Operation::Describe,
            _ => return Err(RuleError::Operation(format!("#{}", rule.operation))),
        };
        let name = rule.resource_name.clone();
        let named = |make: fn(String) -> Resource| {
            if name.is_empty() || name.len() > RESOURCE_BYTES_MAX {
                Err(RuleError::Resource(format!(
                    "a rule's resource name must be 1 to {RESOURCE_BYTES_MAX} bytes"
                )))
            } else {
                Ok(make(name.clone()))
            }
        };
        let resource = match v1::ResourceType::try_from(rule.resource_type) {
            Ok(v1::ResourceType::Topic) => named(Resource::Topic)?,
            Ok(v1::ResourceType::TopicPrefix) => named(Resource::TopicPrefix)?,
            Ok(v1::ResourceType::Subscription) => named(Resource::Subscription)?,
            Ok(v1::ResourceType::SubscriptionPrefix) => named(Resource::SubscriptionPrefix)?,
            Ok(v1::ResourceType::Cluster) => Resource::Cluster,
            _ => {
                return Err(RuleError::Resource(
                    "a rule needs a resource: a topic, topic prefix, subscription, subscription prefix or the cluster".into(),
                ));
            }
        };
        Ok(Rule {
            principal: rule.principal.clone(),
            resource,
            operation,
        })
    }

    /// The rule's wire form.
    pub fn to_wire(&self) -> v1::AclRule {
        let (resource_type, resource_name) = match &self.resource {
            Resource::Topic(n) => (v1::ResourceType::Topic, n.clone()),
            Resource::TopicPrefix(n) => (v1::ResourceType::TopicPrefix, n.clone()),
            Resource::Subscription(n) => (v1::ResourceType::Subscription, n.clone()),
            Resource::SubscriptionPrefix(n) => (v1::ResourceType::SubscriptionPrefix, n.clone()),
            Resource::Cluster => (v1::ResourceType::Cluster, String::new()),
        };
        let operation = match self.operation {
            Operation::Produce => v1::Operation::Produce,
            Operation::Consume => v1::Operation::Consume,
            Operation::Admin => v1::Operation::Admin,
            Operation::Describe => v1::Operation::Describe,
        };
        v1::AclRule {
            principal: self.principal.clone(),
            resource_type: resource_type as i32,
            resource_name,
            operation: operation as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(principal: &str, resource: Resource, operation: Operation) -> Rule {
        Rule {
            principal: principal.into(),
            resource,
            operation,
        }
    }

    #[test]
    fn a_prefix_rule_covers_only_names_under_it() {
        let rules = [rule(
            "alice",
            Resource::TopicPrefix("orders.".into()),
            Operation::Consume,
        )];
        assert!(allows(
            &rules,
            "alice",
            Operation::Consume,
            Target::Topic("orders.eu")
        ));
        assert!(allows(
            &rules,
            "alice",
            Operation::Describe,
            Target::Topic("orders.eu")
        ));
        assert!(!allows(
            &rules,
            "alice",
            Operation::Consume,
            Target::Topic("payments")
        ));
        assert!(!allows(
            &rules,
            "alice",
            Operation::Produce,
            Target::Topic("orders.eu")
        ));
        assert!(!allows(
            &rules,
            "bob",
            Operation::Consume,
            Target::Topic("orders.eu")
        ));
        assert!(!allows(
            &rules,
            "alice",
            Operation::Consume,
            Target::Subscription("orders.eu")
        ));
    }

    #[test]
    fn admin_on_the_cluster_allows_everything() {
        let rules = [rule("root", Resource::Cluster, Operation::Admin)];
        for op in [
            Operation::Produce,
            Operation::Consume,
            Operation::Admin,
            Operation::Describe,
        ] {
            assert!(allows(&rules, "root", op, Target::Topic("t")));
            assert!(allows(&rules, "root", op, Target::Subscription("s")));
            assert!(allows(&rules, "root", op, Target::Cluster));
        }
    }

    #[test]
    fn wire_form_round_trips_and_bad_rules_are_refused() {
        let original = rule(
            "app-1",
            Resource::SubscriptionPrefix("jobs.".into()),
            Operation::Consume,
        );
        assert_eq!(Rule::from_wire(&original.to_wire()), Ok(original));
        let mut bad = rule("app", Resource::Topic("t".into()), Operation::Produce).to_wire();
        bad.resource_name.clear();
        assert!(matches!(Rule::from_wire(&bad), Err(RuleError::Resource(_))));
        bad.resource_type = 0;
        assert!(matches!(Rule::from_wire(&bad), Err(RuleError::Resource(_))));
        let mut bad = rule("a b", Resource::Cluster, Operation::Admin).to_wire();
        assert!(matches!(
            Rule::from_wire(&bad),
            Err(RuleError::Principal(_))
        ));
        bad.principal = "ok".into();
        bad.operation = 99;
        assert!(matches!(
            Rule::from_wire(&bad),
            Err(RuleError::Operation(_))
        ));
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Operation::Produce),
            Just(Operation::Consume),
            Just(Operation::Admin),
            Just(Operation::Describe)
        ]
    }

    fn resource() -> impl Strategy<Value = Resource> {
        let name = "[ab.]{1,4}";
        prop_oneof![
            name.prop_map(Resource::Topic),
            name.prop_map(Resource::TopicPrefix),
            name.prop_map(Resource::Subscription),
            name.prop_map(Resource::SubscriptionPrefix),
            Just(Resource::Cluster),
        ]
    }

    proptest! {
        /// Nothing is allowed without a rule of that principal; adding rules never
        /// takes a right away; and a right to a topic never reaches a subscription of
        /// the same name (or the other way) unless a cluster rule says so.
        #[test]
        fn rules_only_ever_grant(
            rules in proptest::collection::vec((prop_oneof![Just("a"), Just("b")], resource(), operation()), 0..6),
            extra in (resource(), operation()),
            op in operation(),
            name in "[ab.]{1,5}",
        ) {
            let rules: Vec<Rule> = rules.into_iter().map(|(p, r, o)| rule(p, r, o)).collect();
            prop_assert!(!allows(&rules, "c", op, Target::Topic(&name)));
            let before = allows(&rules, "a", op, Target::Topic(&name));
            let mut more = rules.clone();
            more.push(rule("a", extra.0, extra.1));
            prop_assert!(!before || allows(&more, "a", op, Target::Topic(&name)));
            let topic_only = rules.iter().filter(|r| matches!(r.resource, Resource::Topic(_) | Resource::TopicPrefix(_)));
            prop_assert!(!allows(topic_only, "a", op, Target::Subscription(&name)));
            if allows(&rules, "a", op, Target::Topic(&name)) {
                prop_assert!(allows(&rules, "a", Operation::Describe, Target::Topic(&name)));
            }
        }
    }
}

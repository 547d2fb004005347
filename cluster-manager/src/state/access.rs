//! Tokens (their hashes only) and access rules, as part of the replicated state.
//!
//! Like the rest of the state, changes here are deterministic: the token and its hash
//! are made by the node that proposes the command, the time is inside the command, and
//! `apply` only records them.

use std::collections::{BTreeMap, BTreeSet};

use pubsub_proto::auth::{Operation, Resource, Rule, TokenHash};
use pubsub_proto::v1;
use serde::{Deserialize, Serialize};

use crate::command::{CommandError, Response};

/// Most tokens the cluster keeps: bounds the state (and every node's copy).
pub(crate) const TOKENS_MAX: usize = 10_000;
/// Most access rules.
pub(crate) const RULES_MAX: usize = 10_000;
/// The principal of the token made at the first start with authentication on.
pub(crate) const BOOTSTRAP_PRINCIPAL: &str = "admin";

/// A stored token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredToken {
    principal: String,
    hash: TokenHash,
    created_ms: u64,
    expires_ms: Option<u64>,
}

/// Tokens by id, rules, and whether a token was ever issued (so the bootstrap token is
/// made once, not again after an admin revoked every token).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessState {
    tokens: BTreeMap<String, StoredToken>,
    rules: BTreeSet<Rule>,
    issued: u64,
}

impl AccessState {
    /// Whether no token was ever issued: the bootstrap token is still to be made.
    pub(crate) fn never_issued(&self) -> bool {
        self.issued == 0
    }

    /// Stores a token.
    pub(crate) fn create_token(
        &mut self,
        id: String,
        principal: String,
        hash: TokenHash,
        created_ms: u64,
        expires_ms: Option<u64>,
    ) -> Result<Response, CommandError> {
        if self.tokens.len() >= TOKENS_MAX {
            return Err(CommandError::LimitExceeded {
                what: "token".into(),
                limit: TOKENS_MAX as u64,
            });
        }
        if self.tokens.contains_key(&id) {
            return Err(CommandError::InvalidAccess {
                reason: format!("token id {id} exists; create the token again"),
            });
        }
        let token = StoredToken {
            principal,
            hash,
            created_ms,
            expires_ms,
        };
        self.tokens.insert(id, token);
        self.issued += 1;
        Ok(Response::AccessChanged { count: 1 })
    }

    /// The first admin token: a token for [`BOOTSTRAP_PRINCIPAL`] and a rule giving it
    /// admin on the cluster, only if no token was ever issued.
    pub(crate) fn bootstrap(
        &mut self,
        id: String,
        hash: TokenHash,
        now_ms: u64,
    ) -> Result<Response, CommandError> {
        if !self.never_issued() {
            return Ok(Response::AccessChanged { count: 0 });
        }
        self.create_token(id, BOOTSTRAP_PRINCIPAL.into(), hash, now_ms, None)?;
        self.rules.insert(Rule {
            principal: BOOTSTRAP_PRINCIPAL.into(),
            resource: Resource::Cluster,
            operation: Operation::Admin,
        });
        Ok(Response::AccessChanged { count: 1 })
    }

    /// Revokes every token of `principal`, or the token `id`.
    pub(crate) fn revoke(
        &mut self,
        principal: Option<&str>,
        id: Option<&str>,
    ) -> Result<Response, CommandError> {
        let before = self.tokens.len();
        self.tokens.retain(|token_id, token| {
            let by_principal = principal.is_some_and(|p| p == token.principal);
            let by_id = id.is_some_and(|i| i == token_id);
            !(by_principal || by_id)
        });
        let count = (before - self.tokens.len()) as u32;
        if count == 0 {
            return Err(CommandError::AccessNotFound {
                what: match (principal, id) {
                    (Some(p), _) => format!("no token of principal {p:?}"),
                    (None, Some(i)) => format!("no token with id {i}"),
                    (None, None) => "no token".into(),
                },
            });
        }
        Ok(Response::AccessChanged { count })
    }

    /// Adds a rule (a rule that exists is left as is).
    pub(crate) fn add_rule(&mut self, rule: Rule) -> Result<Response, CommandError> {
        if self.rules.len() >= RULES_MAX && !self.rules.contains(&rule) {
            return Err(CommandError::LimitExceeded {
                what: "access rule".into(),
                limit: RULES_MAX as u64,
            });
        }
        let count = u32::from(self.rules.insert(rule));
        Ok(Response::AccessChanged { count })
    }

    /// Removes a rule.
    pub(crate) fn remove_rule(&mut self, rule: &Rule) -> Result<Response, CommandError> {
        if !self.rules.remove(rule) {
            return Err(CommandError::AccessNotFound {
                what: format!(
                    "no rule lets {:?} {} on {}",
                    rule.principal, rule.operation, rule.resource
                ),
            });
        }
        Ok(Response::AccessChanged { count: 1 })
    }

    /// The tokens (without hashes), optionally of one principal, by principal then id.
    pub(crate) fn token_infos(&self, principal: Option<&str>) -> Vec<v1::TokenInfo> {
        let mut infos: Vec<v1::TokenInfo> = self
            .tokens
            .iter()
            .filter(|(_, t)| principal.is_none_or(|p| p == t.principal))
            .map(|(id, t)| token_info(id, t))
            .collect();
        infos.sort_by(|a, b| (&a.principal, &a.id).cmp(&(&b.principal, &b.id)));
        infos
    }

    /// The rules, optionally of one principal.
    pub(crate) fn rules(&self, principal: Option<&str>) -> Vec<v1::AclRule> {
        self.rules
            .iter()
            .filter(|r| principal.is_none_or(|p| p == r.principal))
            .map(Rule::to_wire)
            .collect()
    }

    /// Everything a node needs to check calls, as of metadata `version`.
    pub(crate) fn to_wire(&self, version: u64) -> v1::AccessControl {
        v1::AccessControl {
            version,
            tokens: self
                .tokens
                .iter()
                .map(|(id, t)| token_info(id, t))
                .collect(),
            token_hashes: self
                .tokens
                .values()
                .map(|t| t.hash.to_vec().into())
                .collect(),
            rules: self.rules.iter().map(Rule::to_wire).collect(),
        }
    }
}

fn token_info(id: &str, token: &StoredToken) -> v1::TokenInfo {
    v1::TokenInfo {
        id: id.to_string(),
        principal: token.principal.clone(),
        created_ms: token.created_ms,
        expires_ms: token.expires_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(principal: &str) -> Rule {
        Rule {
            principal: principal.into(),
            resource: Resource::TopicPrefix("orders.".into()),
            operation: Operation::Produce,
        }
    }

    #[test]
    fn the_bootstrap_token_is_made_once_only() {
        let mut state = AccessState::default();
        assert!(state.never_issued());
        state
            .bootstrap("aaaa".into(), [1; 32], 5)
            .expect("bootstrap");
        assert_eq!(state.token_infos(None).len(), 1);
        assert_eq!(state.rules(Some("admin")).len(), 1);
        state.revoke(Some("admin"), None).expect("revoked");
        assert_eq!(
            state.bootstrap("bbbb".into(), [2; 32], 6),
            Ok(Response::AccessChanged { count: 0 })
        );
        assert!(state.token_infos(None).is_empty());
    }

    #[test]
    fn tokens_and_rules_are_added_and_removed() {
        let mut state = AccessState::default();
        state
            .create_token("01".into(), "alice".into(), [1; 32], 1, None)
            .expect("created");
        state
            .create_token("02".into(), "alice".into(), [2; 32], 1, Some(9))
            .expect("created");
        state
            .create_token("03".into(), "bob".into(), [3; 32], 1, None)
            .expect("created");
        assert!(
            state
                .create_token("03".into(), "bob".into(), [3; 32], 1, None)
                .is_err()
        );
        assert_eq!(
            state.revoke(None, Some("02")),
            Ok(Response::AccessChanged { count: 1 })
        );
        assert_eq!(
            state.revoke(Some("alice"), None),
            Ok(Response::AccessChanged { count: 1 })
        );
        assert!(state.revoke(Some("alice"), None).is_err());
        assert_eq!(state.token_infos(None).len(), 1);
        assert_eq!(
            state.add_rule(rule("bob")),
            Ok(Response::AccessChanged { count: 1 })
        );
        assert_eq!(
            state.add_rule(rule("bob")),
            Ok(Response::AccessChanged { count: 0 })
        );
        assert_eq!(state.to_wire(7).rules.len(), 1);
        state.remove_rule(&rule("bob")).expect("removed");
        assert!(state.remove_rule(&rule("bob")).is_err());
        let wire = state.to_wire(8);
        assert_eq!(
            (wire.version, wire.tokens.len(), wire.token_hashes.len()),
            (8, 1, 1)
        );
    }
}

//! A node's view of who may do what: the token hashes and rules the cluster manager
//! replicates, kept current by the node's watch of the metadata, and the checks made
//! against it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::rules::{self, Operation, Rule, Target};
use super::token::{self, TokenHash};
use crate::v1;

/// Why a presented credential was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("authentication is required: send a bearer token (--token or PUBSUB_TOKEN)")]
    Missing,
    /// The header is not `Bearer <token>` or `Node <secret>`.
    #[error("the authorization header must be 'Bearer <token>'")]
    Malformed,
    /// No such token: never issued, or revoked.
    #[error("the token is not valid (unknown or revoked)")]
    Unknown,
    /// The token's lifetime is over.
    #[error("the token expired; create a new one with `pubsub token create`")]
    Expired,
    /// The node secret does not match this cluster's.
    #[error("the cluster secret does not match this node's")]
    WrongSecret,
    /// This node has not received the access rules yet.
    #[error("this node has not loaded the access rules yet; retry shortly")]
    NotLoaded,
}

/// A stored token, without its secret.
#[derive(Clone, Debug)]
struct StoredToken {
    principal: String,
    hash: TokenHash,
    expires_ms: Option<u64>,
}

/// One version of the token hashes and rules.
#[derive(Clone, Debug, Default)]
pub struct AccessSnapshot {
    version: u64,
    tokens: HashMap<String, StoredToken>,
    rules: HashMap<String, Vec<Rule>>,
}

impl AccessSnapshot {
    /// The snapshot of a wire `AccessControl`. Entries a reader cannot use (a hash of
    /// the wrong length, a malformed rule) are left out: they can grant nothing.
    pub fn from_wire(access: &v1::AccessControl) -> AccessSnapshot {
        let mut tokens = HashMap::new();
        for (info, hash) in access.tokens.iter().zip(&access.token_hashes) {
            let Ok(hash) = TokenHash::try_from(hash.as_ref()) else {
                continue;
            };
            let expires_ms = info.expires_ms;
            let principal = info.principal.clone();
            tokens.insert(
                info.id.clone(),
                StoredToken {
                    principal,
                    hash,
                    expires_ms,
                },
            );
        }
        let mut by_principal: HashMap<String, Vec<Rule>> = HashMap::new();
        for rule in access.rules.iter().filter_map(|r| Rule::from_wire(r).ok()) {
            by_principal
                .entry(rule.principal.clone())
                .or_default()
                .push(rule);
        }
        AccessSnapshot {
            version: access.version,
            tokens,
            rules: by_principal,
        }
    }

    /// The principal a bearer token stands for, and the token's id.
    pub fn authenticate(&self, bearer: &str, now_ms: u64) -> Result<(String, String), AuthError> {
        let (id, secret) = token::parse(bearer).ok_or(AuthError::Unknown)?;
        let stored = self.tokens.get(id).ok_or(AuthError::Unknown)?;
        if !token::matches(secret, &stored.hash) {
            return Err(AuthError::Unknown);
        }
        self.check_live(id, now_ms)?;
        Ok((stored.principal.clone(), id.to_string()))
    }

    /// Whether token `id` still exists and has not expired.
    fn check_live(&self, id: &str, now_ms: u64) -> Result<(), AuthError> {
        let stored = self.tokens.get(id).ok_or(AuthError::Unknown)?;
        match stored.expires_ms {
            Some(expires) if expires <= now_ms => Err(AuthError::Expired),
            _ => Ok(()),
        }
    }

    /// Whether `principal` may do `operation` on `target`.
    pub fn allows(&self, principal: &str, operation: Operation, target: Target<'_>) -> bool {
        self.rules
            .get(principal)
            .is_some_and(|rules| rules::allows(rules, principal, operation, target))
    }
}

/// Whether calls are checked, and the node secret when they are.
#[derive(Clone)]
enum Mode {
    Off,
    On { node_secret: TokenHash },
}

/// A node's access control: off (every call allowed, the embedded default on loopback)
/// or on, with the cluster secret nodes present to each other and the current snapshot.
pub struct Access {
    mode: Mode,
    snapshot: RwLock<Arc<AccessSnapshot>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("on", &self.is_on())
            .field("version", &self.snapshot().version)
            .finish()
    }
}

impl Access {
    /// No checks: every call is allowed.
    pub fn off() -> Arc<Access> {
        Arc::new(Access {
            mode: Mode::Off,
            snapshot: RwLock::default(),
        })
    }

    /// Checks on; `node_secret` is the cluster secret nodes present to each other.
    pub fn on(node_secret: &str) -> Arc<Access> {
        Arc::new(Access {
            mode: Mode::On {
                node_secret: Sha256::digest(node_secret.as_bytes()).into(),
            },
            snapshot: RwLock::default(),
        })
    }

    /// Whether calls are checked.
    pub fn is_on(&self) -> bool {
        matches!(self.mode, Mode::On { .. })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<AccessSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes a newer snapshot from the cluster manager; an older one is ignored.
    pub fn update(&self, access: &v1::AccessControl) {
        let mut current = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        if access.version >= current.version {
            *current = Arc::new(AccessSnapshot::from_wire(access));
        }
    }

    /// Whether `secret` is this cluster's node secret.
    pub(crate) fn is_node_secret(&self, secret: &str) -> bool {
        match &self.mode {
            Mode::Off => false,
            Mode::On { node_secret } => {
                let presented: TokenHash = Sha256::digest(secret.as_bytes()).into();
                presented.ct_eq(node_secret).into()
            }
        }
    }

    /// The principal and token id of a bearer token, checked against the snapshot
    /// (the gRPC layer's check, and the Kafka listener's SASL one).
    pub fn authenticate(&self, bearer: &str) -> Result<(String, String), AuthError> {
        let snapshot = self.snapshot();
        if snapshot.version == 0 {
            return Err(AuthError::NotLoaded);
        }
        snapshot.authenticate(bearer, now_ms())
    }

    /// Whether the token is still live and its principal may do `operation` on `target`.
    pub(crate) fn check(
        &self,
        principal: &str,
        token_id: &str,
        operation: Operation,
        target: Target<'_>,
    ) -> Result<bool, AuthError> {
        let snapshot = self.snapshot();
        snapshot.check_live(token_id, now_ms())?;
        Ok(snapshot.allows(principal, operation, target))
    }
}

/// Wall-clock ms since the Unix epoch (token expiry is wall-clock time).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rules::Resource;

    fn access_with(token: &token::NewToken, expires_ms: Option<u64>) -> v1::AccessControl {
        let rule = Rule {
            principal: "alice".into(),
            resource: Resource::TopicPrefix("orders.".into()),
            operation: Operation::Produce,
        };
        v1::AccessControl {
            version: 3,
            tokens: vec![v1::TokenInfo {
                id: token.id.clone(),
                principal: "alice".into(),
                created_ms: 1,
                expires_ms,
            }],
            token_hashes: vec![token.hash.to_vec().into()],
            rules: vec![rule.to_wire()],
        }
    }

    #[test]
    fn tokens_authenticate_until_they_expire_or_are_revoked() {
        let new = token::generate();
        let access = Access::on("secret");
        assert_eq!(access.authenticate(&new.token), Err(AuthError::NotLoaded));
        access.update(&access_with(&new, None));
        let (principal, id) = access.authenticate(&new.token).expect("valid");
        assert_eq!(
            (principal.as_str(), id.as_str()),
            ("alice", new.id.as_str())
        );
        assert_eq!(
            access.check("alice", &id, Operation::Produce, Target::Topic("orders.x")),
            Ok(true)
        );
        assert_eq!(
            access.check("alice", &id, Operation::Produce, Target::Topic("pay")),
            Ok(false)
        );
        // Change the secret's last character (to one it is not already).
        let last = if new.token.ends_with('A') { "B" } else { "A" };
        let forged = format!("{}{}", &new.token[..new.token.len() - 1], last);
        assert!(access.authenticate(&forged).is_err());
        access.update(&access_with(&new, Some(1)));
        assert_eq!(access.authenticate(&new.token), Err(AuthError::Expired));
        let mut revoked = access_with(&new, None);
        revoked.version = 4;
        revoked.tokens.clear();
        revoked.token_hashes.clear();
        access.update(&revoked);
        assert_eq!(access.authenticate(&new.token), Err(AuthError::Unknown));
        assert_eq!(
            access.check("alice", &id, Operation::Produce, Target::Topic("orders.x")),
            Err(AuthError::Unknown)
        );
        // An older snapshot does not bring it back.
        access.update(&access_with(&new, None));
        assert_eq!(access.authenticate(&new.token), Err(AuthError::Unknown));
    }

    #[test]
    fn only_the_cluster_secret_is_a_node_secret() {
        let access = Access::on("s3cret");
        assert!(access.is_node_secret("s3cret"));
        assert!(!access.is_node_secret("s3cret "));
        assert!(!Access::off().is_node_secret("s3cret"));
    }
}

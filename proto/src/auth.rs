//! Authentication and authorization, shared by every role: bearer tokens for
//! principals, the cluster secret for nodes, allow rules (ACLs), the tower layer that
//! identifies every caller, and the credentials clients send.
//!
//! The cluster manager owns tokens (only their hashes) and rules in its replicated
//! state; every node keeps a copy in an [`Access`] through its metadata watch and
//! checks calls locally, so a check costs a hash and a map lookup, not a round trip.

mod access;
mod credentials;
mod layer;
mod rules;
mod token;

pub use access::{Access, AccessSnapshot, AuthError};
pub use credentials::{BadCredentials, Credentials};
pub use layer::{AUTHORIZATION, AuthLayer, Authenticate, Caller, Identity, authorize, caller};
pub use rules::{
    Operation, PRINCIPAL_BYTES_MAX, Resource, Rule, RuleError, Target, allows, validate_principal,
};
pub use token::{
    NewToken, TOKEN_PREFIX, TokenHash, adopt as adopt_token, generate as generate_token,
    hash_secret, valid_id as valid_token_id,
};

use std::sync::Arc;

use crate::net::Link;
use crate::tls::ServerTls;

/// How a node takes part in security: the access it checks calls against, its
/// listener's TLS, and how its links to other nodes are secured. Off by default.
#[derive(Clone, Debug)]
pub struct NodeSecurity {
    /// What calls to this node are checked against.
    pub access: Arc<Access>,
    /// What this node's calls to other nodes carry, and their TLS.
    pub link: Link,
    /// The listener's TLS; `None`: plain TCP.
    pub server_tls: Option<Arc<ServerTls>>,
    /// Most connections the listener holds at once (0: no cap); see
    /// [`crate::serve::ConnectionLimit`].
    pub max_connections: usize,
}

impl Default for NodeSecurity {
    fn default() -> Self {
        NodeSecurity {
            access: Access::off(),
            link: Link::default(),
            server_tls: None,
            max_connections: 0,
        }
    }
}

impl NodeSecurity {
    /// Authentication on, nodes proving themselves to each other with `cluster_secret`.
    pub fn with_cluster_secret(cluster_secret: &str) -> Result<NodeSecurity, BadCredentials> {
        Ok(NodeSecurity {
            access: Access::on(cluster_secret),
            link: Link::with_credentials(Credentials::node(cluster_secret)?),
            server_tls: None,
            max_connections: 0,
        })
    }

    /// Whether calls are checked.
    pub fn is_on(&self) -> bool {
        self.access.is_on()
    }
}

//! Bearer tokens: `pst_<id>_<secret>`. The id (16 hex digits) is public and names the
//! token in listings and revocations; the secret (32 random bytes, base64url) is shown
//! once, at creation. The cluster keeps only the SHA-256 of the secret, so a copy of
//! its state or of a node's memory yields no usable token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every token starts with, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "pst_";
/// Hex digits of a token id.
pub const TOKEN_ID_LEN: usize = 16;
/// Characters of a token's secret.
const SECRET_LEN: usize = 43;
/// Longest string taken for a token: anything longer is not one.
pub const TOKEN_BYTES_MAX: usize = TOKEN_PREFIX.len() + TOKEN_ID_LEN + 1 + SECRET_LEN;

/// SHA-256 of a token's secret.
pub type TokenHash = [u8; 32];

/// A new token as issued: the string to hand to the user and what the cluster stores.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// The bearer token; shown once.
    pub token: String,
    /// Its public id.
    pub id: String,
    /// The hash of its secret.
    pub hash: TokenHash,
}

/// Issues a token from the operating system's random source.
pub fn generate() -> NewToken {
    let mut rng = rand::rng();
    let mut id = [0u8; TOKEN_ID_LEN / 2];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewToken {
        token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        hash: hash_secret(&secret),
        id,
    }
}

/// A token made elsewhere (`pubsub token generate`, kept in a Kubernetes Secret) as
/// the cluster stores it, or `None` if it is not shaped like one.
pub fn adopt(token: &str) -> Option<NewToken> {
    let token = token.trim();
    let (id, secret) = parse(token)?;
    Some(NewToken {
        id: id.to_string(),
        hash: hash_secret(secret),
        token: token.to_string(),
    })
}

/// The hash the cluster stores for `secret`.
pub fn hash_secret(secret: &str) -> TokenHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A presented token split into its id and secret, or `None` if it is not shaped like
/// one of ours.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    if token.len() != TOKEN_BYTES_MAX {
        return None;
    }
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_at_checked(TOKEN_ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (id_ok && secret.len() == SECRET_LEN).then_some((id, secret))
}

/// Whether `secret` hashes to `stored`, in time that does not depend on where they
/// differ.
pub fn matches(secret: &str, stored: &TokenHash) -> bool {
    hash_secret(secret).ct_eq(stored).into()
}

/// Whether a token id is shaped like one (for revocation by id).
pub fn valid_id(id: &str) -> bool {
    id.len() == TOKEN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_matches_only_its_hash() {
        let new = generate();
        let (id, secret) = parse(&new.token).expect("parses");
        assert_eq!(id, new.id);
        assert!(valid_id(id));
        assert!(matches(secret, &new.hash));
        let adopted = adopt(&format!("{}\n", new.token)).expect("adopted");
        assert_eq!((adopted.id, adopted.hash), (new.id.clone(), new.hash));
        assert!(adopt("pst_short").is_none());
        let other = generate();
        assert_ne!(other.id, new.id);
        assert!(!matches(secret, &other.hash));
    }

    #[test]
    fn strings_not_shaped_like_tokens_are_refused() {
        let token = generate().token;
        assert!(parse("").is_none());
        assert!(parse(&token[1..]).is_none());
        assert!(parse(&format!("{token}x")).is_none());
        assert!(parse(&token.replacen("pst_", "xst_", 1)).is_none());
        assert!(parse(&token.replacen('_', "-", 2)).is_none());
        let upper = format!("pst_{}{}", token[4..20].to_uppercase(), &token[20..]);
        assert!(upper == token || parse(&upper).is_none());
    }
}

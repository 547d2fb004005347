//! What a client or node sends to prove who it is: nothing, a principal's bearer
//! token, or the cluster secret. Added to every call by the channels of a
//! [`crate::net::ChannelPool`].

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::layer::AUTHORIZATION;

/// Why credentials cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the token or secret holds characters a header cannot carry")]
pub struct BadCredentials;

/// The `authorization` header every call carries, if any.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    header: Option<AsciiMetadataValue>,
}

impl Credentials {
    /// Sends nothing (authentication off).
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// A principal's bearer token.
    pub fn bearer(token: &str) -> Result<Credentials, BadCredentials> {
        Self::with(format!("Bearer {}", token.trim()))
    }

    /// The cluster secret, for calls between nodes.
    pub fn node(secret: &str) -> Result<Credentials, BadCredentials> {
        Self::with(format!("Node {secret}"))
    }

    fn with(value: String) -> Result<Credentials, BadCredentials> {
        let mut header: AsciiMetadataValue =
            MetadataValue::try_from(value).map_err(|_| BadCredentials)?;
        header.set_sensitive(true);
        Ok(Credentials {
            header: Some(header),
        })
    }

    /// Whether anything is sent.
    pub fn is_some(&self) -> bool {
        self.header.is_some()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_added_to_every_call() {
        let mut credentials = Credentials::bearer("pst_abc").expect("ascii");
        let request = credentials.call(Request::new(())).expect("ok");
        assert_eq!(
            request
                .metadata()
                .get(AUTHORIZATION)
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer pst_abc"))
        );
        let mut none = Credentials::none();
        assert!(
            none.call(Request::new(()))
                .expect("ok")
                .metadata()
                .is_empty()
        );
        assert_eq!(Credentials::node("bad\nsecret").err(), Some(BadCredentials));
    }
}

//! SASL/PLAIN on the Kafka listener: a client authenticates with a pubsub token as the
//! password (the user name is not checked; the token names the principal), and ACLs
//! then apply to its requests exactly as to gRPC calls. While authentication is off,
//! every request is allowed and a SASL exchange succeeds without checks.
//!
//! The token is checked again on every request, so a revoked or expired token stops
//! working on open connections too.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

const PLAIN: &str = "PLAIN";

/// One connection's authentication state.
#[derive(Default)]
pub(super) struct Session {
    /// The client asked for PLAIN.
    handshaken: bool,
    /// The token it authenticated with.
    token: Option<String>,
}

impl Session {
    /// The principal a request of `api_key` runs as: `None` while authentication is
    /// off or for the requests that come before it; an error (closing the connection)
    /// for any other request on a connection that has not authenticated.
    pub(super) fn principal(
        &self,
        broker: &Broker,
        api_key: ApiKey,
    ) -> Result<Option<String>, String> {
        let access = &broker.config().security.access;
        if !access.is_on()
            || matches!(
                api_key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
        {
            return Ok(None);
        }
        let Some(token) = &self.token else {
            return Err(format!(
                "{api_key:?} before authentication: this listener requires SASL/PLAIN with a token as the password"
            ));
        };
        access
            .authenticate(token)
            .map(|(principal, _)| Some(principal))
            .map_err(|e| format!("the connection's token is no longer valid: {e}"))
    }

    /// The token the connection authenticated with.
    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// SaslHandshake: only PLAIN is offered.
    pub(super) fn handshake(&mut self, request: SaslHandshakeRequest) -> SaslHandshakeResponse {
        let answer = SaslHandshakeResponse::default()
            .with_mechanisms(vec![StrBytes::from_static_str(PLAIN)]);
        if request.mechanism.as_str() == PLAIN {
            self.handshaken = true;
            answer
        } else {
            answer.with_error_code(ResponseError::UnsupportedSaslMechanism.code())
        }
    }

    /// SaslAuthenticate with PLAIN's `authzid NUL user NUL password`.
    pub(super) fn authenticate(
        &mut self,
        broker: &Broker,
        request: SaslAuthenticateRequest,
    ) -> SaslAuthenticateResponse {
        let failed = |error: ResponseError, message: &str| {
            SaslAuthenticateResponse::default()
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string())))
        };
        if !self.handshaken {
            return failed(
                ResponseError::IllegalSaslState,
                "SaslHandshake with PLAIN comes first",
            );
        }
        let mut parts = request.auth_bytes.split(|b| *b == 0);
        let (Some(_authzid), Some(_user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return failed(
                ResponseError::SaslAuthenticationFailed,
                "malformed PLAIN message: expected authzid, user and password separated by NUL",
            );
        };
        let Ok(token) = std::str::from_utf8(password) else {
            return failed(
                ResponseError::SaslAuthenticationFailed,
                "the password is not UTF-8",
            );
        };
        let access = &broker.config().security.access;
        if access.is_on()
            && let Err(e) = access.authenticate(token)
        {
            tracing::info!(reason = %e, "kafka SASL authentication failed");
            return failed(
                ResponseError::SaslAuthenticationFailed,
                "authentication failed: the password must be a valid pubsub token",
            );
        }
        self.token = Some(token.to_string());
        SaslAuthenticateResponse::default()
    }
}

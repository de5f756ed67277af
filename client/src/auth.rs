//! Bearer tokens: the secret a client sends as `authorization: Bearer
//! <token>` metadata on every call to a broker that authenticates tokens.
//!
//! Invariant: the token never appears in a `Debug` or `Display` output or
//! a log line; the metadata value is marked sensitive, so HTTP/2 does not
//! put it in its header compression table either.

use std::fmt;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The connection every service stub of a client sends through: the
/// channel with the bearer token (if any) added to each call.
pub(crate) type Transport = InterceptedService<Channel, Authorize>;

/// A bearer token for [`crate::ClientOptions::bearer_token`]. Its `Debug`
/// hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// `Bearer <token>`, ready to send.
    header: AsciiMetadataValue,
}

/// A token that cannot be sent in gRPC metadata (empty, or not visible
/// ASCII). The token itself is not in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a bearer token must be non-empty visible ASCII")]
pub struct InvalidBearerToken;

impl BearerToken {
    /// A token as the broker's token file or identity provider issued it;
    /// surrounding whitespace (a trailing newline from a file) is dropped.
    pub fn new(token: &str) -> Result<Self, InvalidBearerToken> {
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidBearerToken);
        }
        let mut header: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_invalid| InvalidBearerToken)?;
        header.set_sensitive(true);
        Ok(Self { header })
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl std::str::FromStr for BearerToken {
    type Err = InvalidBearerToken;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Self::new(token)
    }
}

/// Adds the bearer token to each call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authorize {
    token: Option<BearerToken>,
}

impl Authorize {
    pub(crate) fn new(token: Option<BearerToken>) -> Self {
        Self { token }
    }
}

impl Interceptor for Authorize {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_sent_as_bearer_metadata_and_never_shown() {
        let token = BearerToken::new("s3cret-token\n").expect("a valid token");
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        let options = crate::ClientOptions::default().with_bearer_token(token.clone());
        assert!(!format!("{options:?}").contains("s3cret"));

        let request = Authorize::new(Some(token))
            .call(tonic::Request::new(()))
            .expect("the interceptor adds metadata");
        let sent = request.metadata().get("authorization").expect("sent");
        assert_eq!(sent.to_str().ok(), Some("Bearer s3cret-token"));
        assert!(sent.is_sensitive());
    }

    #[test]
    fn tokens_that_metadata_cannot_carry_are_refused() {
        for bad in ["", "  ", "two words", "caf\u{e9}", "a\u{7f}"] {
            assert_eq!(BearerToken::new(bad), Err(InvalidBearerToken), "{bad:?}");
        }
    }
}

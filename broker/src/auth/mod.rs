//! Authentication of gRPC clients: who a request to a Brook service comes
//! from, established before any handler runs.
//!
//! - `none`: every request is served and names no one.
//! - `mtls`: the client certificate, verified in the TLS handshake, names
//!   the client ([`certificate`], as `mtls_principal` says); read once per
//!   connection.
//! - `token`: the request's `authorization: Bearer <token>` metadata. A
//!   token shaped like a JWT is checked against the JWKS file when one is
//!   configured ([`jwt`], [`jwks`]); any other token's SHA-256 is looked up
//!   in the file of hashed tokens ([`tokens`]).
//!
//! [`layer::AuthLayer`] applies this to every request under `/brook.v1.`;
//! `grpc.health.v1` and server reflection stay open, so probes and tools
//! need no credentials. A refused request ends with UNAUTHENTICATED and a
//! message saying what is missing or wrong, never the token itself.
//!
//! Invariant: a token never reaches a log line, a status message or a
//! `Debug` output; of a static token only its hash is kept, and of a JWT
//! nothing.

mod certificate;
mod jwks;
mod jwt;
pub(crate) mod layer;
mod tokens;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::grpc::connections::ConnectionInfo;
use brook_engine::ClientAuth;
use brook_engine::config::{Authentication, BrokerConfig, TokenAuth};

pub(crate) use certificate::certificate_principal;
use jwks::JwksStore;
use jwt::JwtVerifier;
use tokens::TokenStore;

/// Who a request comes from. Handlers find it in the request's
/// extensions when the broker authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: String,
    credential: Credential,
}

/// What established a [`Principal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// A client certificate verified in the TLS handshake.
    Certificate,
    /// A bearer token found in the token file.
    Token,
    /// A JWT signed by a key of the JWKS file.
    Jwt,
}

impl Principal {
    pub(crate) fn new(name: impl Into<String>, credential: Credential) -> Self {
        Self {
            name: name.into(),
            credential,
        }
    }

    /// The client's name: what of its certificate `mtls_principal` picks,
    /// the name a token has in the token file, or a JWT's `sub` claim.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn credential(&self) -> Credential {
        self.credential
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why authentication cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error(
        "auth = mtls needs TLS with client certificates required: set tls_cert, tls_key, \
         tls_client_ca and tls_client_auth = required (now: {client_auth})"
    )]
    MtlsNeedsRequiredClientCertificates { client_auth: String },
    #[error("auth = {mode} is not supported by this server")]
    Unsupported { mode: &'static str },
    #[error("auth = token needs token_file, jwks_file or both")]
    NoTokenSource,
    #[error("jwks_file needs jwt_issuer and jwt_audience: {0} is empty")]
    JwtSetting(&'static str),
    #[error("token file {}: {source}", path.display())]
    TokenFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {} line {line}: {reason}", path.display())]
    TokenFileLine {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("JWKS file {}: {source}", path.display())]
    JwksFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("JWKS file {}: {reason}", path.display())]
    JwksFile { path: PathBuf, reason: String },
}

/// Why a request was refused. Its text goes to the client and to the log,
/// so it never holds the token or anything read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no client certificate naming the client (as mtls_principal asks)")]
    NoCertificatePrincipal,
    #[error("missing `authorization: Bearer <token>` metadata")]
    NoToken,
    #[error("the `authorization` metadata is not `Bearer <token>`")]
    MalformedAuthorization,
    #[error("the bearer token is not known")]
    UnknownToken,
    #[error("the bearer token is not a JWT, and only JWTs are accepted")]
    NotAJwt,
    #[error("the JWT is malformed")]
    JwtMalformed,
    #[error(
        "the JWT's algorithm is not allowed (RS256/384/512, PS256/384/512, ES256/384 or EdDSA; \
         never none or HMAC)"
    )]
    JwtAlgorithm,
    #[error("the JWT names no key id (kid) and the JWKS has more than one key")]
    JwtNoKeyId,
    #[error("the JWT's key id (kid) is not in the JWKS")]
    JwtUnknownKey,
    #[error("the JWT's algorithm does not fit its key in the JWKS")]
    JwtKeyMismatch,
    #[error("the JWT's signature does not verify")]
    JwtBadSignature,
    #[error("the JWT has expired")]
    JwtExpired,
    #[error("the JWT is not valid yet (nbf)")]
    JwtNotYetValid,
    #[error("the JWT's issuer (iss) is not the one configured")]
    JwtWrongIssuer,
    #[error("the JWT's audience (aud) does not include the one configured")]
    JwtWrongAudience,
    #[error("the JWT has no `{0}` claim")]
    JwtMissingClaim(&'static str),
}

impl Refusal {
    /// One warning rate limit per reason, so a flood of one kind hides
    /// no other.
    pub(crate) const COUNT: usize = 16;

    pub(crate) fn index(self) -> usize {
        match self {
            Self::NoCertificatePrincipal => 0,
            Self::NoToken => 1,
            Self::MalformedAuthorization => 2,
            Self::UnknownToken => 3,
            Self::NotAJwt => 4,
            Self::JwtMalformed => 5,
            Self::JwtAlgorithm => 6,
            Self::JwtNoKeyId => 7,
            Self::JwtUnknownKey => 8,
            Self::JwtKeyMismatch => 9,
            Self::JwtBadSignature => 10,
            Self::JwtExpired => 11,
            Self::JwtNotYetValid => 12,
            Self::JwtWrongIssuer => 13,
            Self::JwtWrongAudience => 14,
            Self::JwtMissingClaim(_) => 15,
        }
    }
}

/// How the broker authenticates requests, built from its configuration.
#[derive(Debug)]
pub(crate) enum Authenticator {
    None,
    Mtls,
    Token(Box<BearerTokens>),
}

/// The bearer tokens a broker with `auth = token` takes: static ones, JWTs,
/// or both.
#[derive(Debug)]
pub(crate) struct BearerTokens {
    file: Option<Arc<TokenStore>>,
    jwt: Option<JwtVerifier>,
}

impl BearerTokens {
    fn load(settings: &TokenAuth) -> Result<Self, AuthError> {
        if settings.file.is_none() && settings.jwt.is_none() {
            return Err(AuthError::NoTokenSource);
        }
        let jwt = match &settings.jwt {
            Some(jwt) => {
                if jwt.issuer.is_empty() {
                    return Err(AuthError::JwtSetting("jwt_issuer"));
                }
                if jwt.audience.is_empty() {
                    return Err(AuthError::JwtSetting("jwt_audience"));
                }
                let keys = JwksStore::load(&jwt.jwks_file, settings.reload_interval)?;
                Some(JwtVerifier::new(jwt, keys))
            }
            None => None,
        };
        let file = match &settings.file {
            Some(file) => Some(TokenStore::load(file, settings.reload_interval)?),
            None => None,
        };
        Ok(Self { file, jwt })
    }

    /// The principal a token names: a JWT's when JWTs are taken and the
    /// token has a JWT's shape, else the token file's.
    fn principal(&self, token: &[u8]) -> Result<Principal, Refusal> {
        match (&self.jwt, &self.file) {
            (Some(jwt), _) if jwt::looks_like_jwt(token) => jwt.principal(token),
            (_, Some(file)) => file.principal(token),
            (_, None) => Err(Refusal::NotAJwt),
        }
    }

    fn spawn_reloaders(&self, stop: &CancellationToken) {
        if let Some(file) = &self.file {
            file.spawn_reloader(stop.clone());
        }
        if let Some(jwt) = &self.jwt {
            jwt.keys().spawn_reloader(stop.clone());
        }
    }
}

impl Authenticator {
    /// Checks the settings and reads the token and JWKS files; a broker
    /// that cannot authenticate as configured must not start.
    pub(crate) fn load(config: &BrokerConfig) -> Result<Self, AuthError> {
        match &config.auth {
            Authentication::Mtls => {
                let client_auth = config.tls.as_ref().map(|tls| tls.client_auth);
                if client_auth != Some(ClientAuth::Required) {
                    return Err(AuthError::MtlsNeedsRequiredClientCertificates {
                        client_auth: client_auth
                            .map_or_else(|| "no TLS".to_owned(), |c| c.to_string()),
                    });
                }
                Ok(Self::Mtls)
            }
            Authentication::Token(settings) => {
                Ok(Self::Token(Box::new(BearerTokens::load(settings)?)))
            }
            Authentication::None => Ok(Self::None),
            // A mode this server does not know must not serve everyone.
            other => Err(AuthError::Unsupported { mode: other.mode() }),
        }
    }

    /// Keeps the token and JWKS files current until `stop`.
    pub(crate) fn spawn_reloader(&self, stop: &CancellationToken) {
        if let Self::Token(tokens) = self {
            tokens.spawn_reloaders(stop);
        }
    }

    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mtls => "mtls",
            Self::Token(_) => "token",
        }
    }

    /// The principal of a request, `Ok(None)` when clients are not
    /// authenticated.
    pub(crate) fn authenticate(
        &self,
        connection: Option<&ConnectionInfo>,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, Refusal> {
        match self {
            Self::None => Ok(None),
            Self::Mtls => connection
                .and_then(ConnectionInfo::certificate_principal)
                .cloned()
                .map(Some)
                .ok_or(Refusal::NoCertificatePrincipal),
            Self::Token(tokens) => {
                let token = bearer_token(headers)?;
                tokens.principal(token).map(Some)
            }
        }
    }
}

/// The authentication scheme of bearer tokens, as compared (ignoring case).
const SCHEME: &[u8] = b"bearer ";

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&[u8], Refusal> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Refusal::NoToken)?
        .as_bytes();
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(Refusal::MalformedAuthorization);
    }
    let token = value[SCHEME.len()..].trim_ascii();
    if token.is_empty() {
        return Err(Refusal::MalformedAuthorization);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            authorization.parse().expect("a valid header value"),
        );
        headers
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(&HeaderMap::new()), Err(Refusal::NoToken));
        for malformed in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            assert_eq!(
                bearer_token(&headers(malformed)),
                Err(Refusal::MalformedAuthorization),
                "{malformed}"
            );
        }
    }
}

//! JWTs as bearer tokens, checked against the JWKS file ([`super::jwks`]).
//!
//! A token is taken for a JWT when it has JWT's shape (three base64url
//! parts separated by dots), so static tokens and JWTs can be used side by
//! side. Its header's `alg` must be an asymmetric signature algorithm the
//! broker allows (RS256/384/512, PS256/384/512, ES256/384, EdDSA): `none`
//! and HMAC are refused before any key is looked at, so a public key can
//! never be used as an HMAC secret. The key is the JWKS key with the
//! header's `kid` (without a `kid`, the set's only key), and it must be
//! one for that algorithm. Then the signature, and the claims: `exp`
//! (required), `nbf` (when present), `iss`, `aud` (a string or a list,
//! which must hold the configured audience) and `sub` (required; the
//! principal's name), with the configured leeway on the times.
//!
//! Each refusal says which check failed, never what the token holds.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use std::sync::Arc;

use super::jwks::JwksStore;
use super::{Credential, Principal, Refusal};
use brook_engine::config::JwtAuth;

/// The algorithms a token may be signed with, by their JOSE names.
const ALLOWED: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Claims a token must carry.
const REQUIRED_CLAIMS: [&str; 4] = ["exp", "iss", "aud", "sub"];

/// Whether a bearer token has a JWT's shape: three parts of base64url
/// characters separated by dots, the first two non-empty (the third, the
/// signature, is empty in an unsigned token, which is then refused for
/// its algorithm rather than taken for a static token).
pub(crate) fn looks_like_jwt(token: &[u8]) -> bool {
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let base64url = |part: &[u8]| {
        part.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !claims.is_empty()
        && [header, claims, signature].into_iter().all(base64url)
}

/// Checks JWTs against the JWKS and the configured issuer and audience.
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    keys: Arc<JwksStore>,
    /// Everything but the algorithm, which each token's header sets.
    validation: Validation,
}

/// What of a JWT's header is read before its signature is checked.
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the token says must be understood; the broker
    /// understands none.
    crit: Option<serde_json::Value>,
}

/// The claims read once the token is verified; the others are checked by
/// `Validation`.
#[derive(serde::Deserialize)]
struct Claims {
    /// Defaulted so that a token without one is refused by `Validation`
    /// as missing it, not as malformed.
    #[serde(default)]
    sub: String,
}

impl JwtVerifier {
    pub(crate) fn new(settings: &JwtAuth, keys: Arc<JwksStore>) -> Self {
        // Placeholder algorithm: `principal` sets the header's.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&REQUIRED_CLAIMS);
        Self { keys, validation }
    }

    pub(crate) fn keys(&self) -> &Arc<JwksStore> {
        &self.keys
    }

    /// The principal a JWT names, once every check passed.
    pub(crate) fn principal(&self, token: &[u8]) -> Result<Principal, Refusal> {
        let token = std::str::from_utf8(token).map_err(|_not_utf8| Refusal::JwtMalformed)?;
        let header = header(token)?;
        if header.crit.is_some() {
            return Err(Refusal::JwtMalformed);
        }
        let algorithm = ALLOWED
            .iter()
            .find_map(|(name, algorithm)| (*name == header.alg).then_some(*algorithm))
            .ok_or(Refusal::JwtAlgorithm)?;
        let keys = self.keys.current();
        let key = keys.key(header.kid.as_deref())?;
        if !key.verifies(algorithm) {
            return Err(Refusal::JwtKeyMismatch);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        if claims.sub.is_empty() {
            return Err(Refusal::JwtMissingClaim("sub"));
        }
        Ok(Principal::new(claims.sub, Credential::Jwt))
    }
}

/// The header of a token that has a JWT's shape.
fn header(token: &str) -> Result<Header, Refusal> {
    let encoded = token.split('.').next().unwrap_or_default();
    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_not_base64| Refusal::JwtMalformed)?;
    serde_json::from_slice(&json).map_err(|_not_a_header| Refusal::JwtMalformed)
}

/// The refusal for what `jsonwebtoken` found wrong.
fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::JwtExpired,
        ErrorKind::ImmatureSignature => Refusal::JwtNotYetValid,
        ErrorKind::InvalidIssuer => Refusal::JwtWrongIssuer,
        ErrorKind::InvalidAudience => Refusal::JwtWrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => Refusal::JwtMissingClaim(
            REQUIRED_CLAIMS
                .into_iter()
                .find(|c| c == claim)
                .unwrap_or("required"),
        ),
        ErrorKind::InvalidAlgorithm => Refusal::JwtKeyMismatch,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::Crypto(_) => Refusal::JwtBadSignature,
        _ => Refusal::JwtMalformed,
    }
}

#[cfg(test)]
mod tests;

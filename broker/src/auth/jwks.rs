//! The JWKS file: the public keys JWTs are checked against, and its reload.
//!
//! The file is a JSON Web Key Set (RFC 7517), `{"keys": [...]}`, as a
//! Kubernetes API server serves it at `/openid/v1/jwks` or an identity
//! provider at its `jwks_uri`. Each key is read on its own: RSA keys
//! (RS256/384/512, PS256/384/512), EC keys on P-256 (ES256) and P-384
//! (ES384), and Ed25519 keys (EdDSA). A key the broker cannot use (another
//! curve, an encryption key, a symmetric `oct` key: HMAC-signed tokens are
//! never accepted) is skipped with a WARN, so one odd key in an identity
//! provider's set does not lock every client out; a file with no usable key
//! is an error. A key's `alg`, when given, narrows what it verifies to that
//! algorithm.
//!
//! The file is checked for changes (size, modification time) every
//! `reload_interval`, like the token file: a changed file replaces the keys
//! for the requests that follow, and one that cannot be read or parsed
//! keeps the previous keys and is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use super::{AuthError, Refusal};
use crate::file_watch::{Stamp, spawn_periodic_check, stamp};

/// Most keys a JWKS file may hold: a key set holds a few keys (the current
/// ones and those being rotated in or out), never thousands.
const KEYS_MAX: usize = 64;

/// The algorithms an RSA key verifies.
const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The usable keys of one JWKS file.
#[derive(Debug)]
pub(crate) struct Jwks {
    keys: Vec<Key>,
}

/// One public key and the algorithms it may verify.
pub(crate) struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub(crate) fn verifies(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

/// A key of the file that is not used, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub(crate) kid: Option<String>,
    pub(crate) reason: String,
}

impl Jwks {
    /// The key a token's `kid` names; without a `kid`, the only key.
    pub(crate) fn key(&self, kid: Option<&str>) -> Result<&Key, Refusal> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or(Refusal::JwtUnknownKey),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                _ => Err(Refusal::JwtNoKeyId),
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The usable keys of a JWKS document and the ones skipped, or why the
    /// document cannot be used at all.
    pub(crate) fn parse(text: &str) -> Result<(Self, Vec<Skipped>), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_str(text)
            .map_err(|e| format!("not a JWKS (a JSON object with a `keys` list): {e}"))?;
        if document.keys.len() > KEYS_MAX {
            return Err(format!(
                "{} keys; at most {KEYS_MAX} are taken",
                document.keys.len()
            ));
        }
        let mut keys: Vec<Key> = Vec::new();
        let mut skipped = Vec::new();
        for value in document.keys {
            let kid = value
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            match key(value) {
                Ok(key) => {
                    if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                        return Err(format!(
                            "two keys have the key id {:?}",
                            key.kid.unwrap_or_default()
                        ));
                    }
                    keys.push(key);
                }
                Err(reason) => skipped.push(Skipped { kid, reason }),
            }
        }
        if keys.is_empty() {
            return Err(
                "no usable key (RSA, EC P-256 or P-384, or Ed25519, for signatures)".into(),
            );
        }
        Ok((Self { keys }, skipped))
    }
}

/// A usable key from one JWK, or why it is skipped.
fn key(value: serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk =
        serde_json::from_value(value).map_err(|e| format!("not a key this broker reads: {e}"))?;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("not a signing key (`use` is not `sig`)".into());
    }
    let mut algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("the curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            ref other => return Err(format!("the curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (oct) key: HMAC-signed tokens are never accepted".into());
        }
    };
    if let Some(named) = jwk.common.key_algorithm {
        let named = signing_algorithm(named)
            .ok_or_else(|| format!("its `alg` {named} is not a signature algorithm"))?;
        if !algorithms.contains(&named) {
            return Err(format!("its `alg` {named:?} does not fit the key"));
        }
        algorithms = vec![named];
    }
    let decoding =
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("the key does not decode: {e}"))?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        decoding,
    })
}

fn signing_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        // HMAC and the encryption algorithms.
        _ => return None,
    })
}

/// The keys of the JWKS file, kept current.
#[derive(Debug)]
pub(crate) struct JwksStore {
    file: PathBuf,
    reload_interval: Duration,
    keys: RwLock<Arc<Jwks>>,
    /// The file's size and modification time when `keys` were read.
    loaded: Mutex<Stamp>,
}

impl JwksStore {
    pub(crate) fn load(file: &Path, reload_interval: Duration) -> Result<Arc<Self>, AuthError> {
        let stamp = stamp(file);
        let keys = read(file)?;
        tracing::info!(file = %file.display(), keys = keys.len(), "JWKS loaded");
        Ok(Arc::new(Self {
            file: file.to_owned(),
            reload_interval,
            keys: RwLock::new(Arc::new(keys)),
            loaded: Mutex::new(stamp),
        }))
    }

    /// The keys as they are now.
    pub(crate) fn current(&self) -> Arc<Jwks> {
        self.keys.read().clone()
    }

    /// Rereads the file if it changed since it was read. Returns whether
    /// it did; on an error the previous keys stay.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, AuthError> {
        let now = stamp(&self.file);
        if *self.loaded.lock() == now {
            return Ok(false);
        }
        let keys = read(&self.file)?;
        *self.keys.write() = Arc::new(keys);
        *self.loaded.lock() = now;
        Ok(true)
    }

    /// Checks the file every `reload_interval` until `stop`.
    pub(crate) fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        spawn_periodic_check(self, self.reload_interval, stop, |store| {
            match store.reload_if_changed() {
                Ok(true) => tracing::info!(
                    file = %store.file.display(),
                    keys = store.keys.read().len(),
                    "JWKS reloaded"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "JWKS file changed but cannot be loaded; the previous keys stay in use"
                ),
            }
        });
    }
}

fn read(path: &Path) -> Result<Jwks, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::JwksFileRead {
        path: path.to_owned(),
        source,
    })?;
    let (keys, skipped) = Jwks::parse(&text).map_err(|reason| AuthError::JwksFile {
        path: path.to_owned(),
        reason,
    })?;
    for key in skipped {
        tracing::warn!(
            file = %path.display(),
            kid = key.kid.as_deref().unwrap_or("none"),
            reason = %key.reason,
            "JWKS key skipped"
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The P-256 example key of RFC 7517 appendix A.1.
    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256",
        "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"sig","kid":"ec"}"#;
    /// The RSA example key of RFC 7517 appendix A.1.
    const RSA_KEY: &str = r#"{"kty":"RSA",
        "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e":"AQAB","alg":"RS256","kid":"rsa"}"#;

    fn set(keys: &[&str]) -> String {
        format!("{{\"keys\":[{}]}}", keys.join(","))
    }

    #[test]
    fn keys_are_chosen_by_kid_and_a_single_key_serves_tokens_without_one() {
        let (jwks, skipped) = Jwks::parse(&set(&[EC_KEY, RSA_KEY])).expect("a valid JWKS");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(jwks.key(Some("ec")).expect("ec").verifies(Algorithm::ES256));
        let rsa = jwks.key(Some("rsa")).expect("rsa");
        // `alg` narrows the RSA key to RS256.
        assert!(rsa.verifies(Algorithm::RS256) && !rsa.verifies(Algorithm::PS256));
        assert_eq!(jwks.key(Some("other")).err(), Some(Refusal::JwtUnknownKey));
        assert_eq!(jwks.key(None).err(), Some(Refusal::JwtNoKeyId));

        let (single, _) = Jwks::parse(&set(&[EC_KEY])).expect("a valid JWKS");
        assert!(single.key(None).is_ok());
    }

    #[test]
    fn keys_the_broker_cannot_use_are_skipped_and_named() {
        let hmac = r#"{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}"#;
        let encryption = RSA_KEY
            .replace("\"alg\":\"RS256\"", "\"use\":\"enc\"")
            .replace("\"rsa\"", "\"enc\"");
        let hmac_alg = EC_KEY
            .replace("\"use\":\"sig\"", "\"alg\":\"HS256\"")
            .replace("\"ec\"", "\"ec-hs\"");
        let wrong_alg = EC_KEY
            .replace("\"use\":\"sig\"", "\"alg\":\"ES384\"")
            .replace("\"ec\"", "\"ec-384\"");
        let unknown = r#"{"kty":"ML-DSA","kid":"pq"}"#;
        let (jwks, skipped) = Jwks::parse(&set(&[
            hmac,
            &encryption,
            &hmac_alg,
            &wrong_alg,
            unknown,
            EC_KEY,
        ]))
        .expect("one usable key");
        assert_eq!(jwks.len(), 1);
        let named: Vec<_> = skipped
            .iter()
            .map(|s| (s.kid.as_deref().unwrap_or(""), s.reason.as_str()))
            .collect();
        for (kid, says) in [
            ("hmac", "symmetric"),
            ("enc", "not a signing key"),
            ("ec-hs", "not a signature algorithm"),
            ("ec-384", "does not fit"),
            ("pq", "not a key"),
        ] {
            assert!(
                named.iter().any(|(k, why)| *k == kid && why.contains(says)),
                "{kid}: {named:?}"
            );
        }
    }

    #[test]
    fn unusable_documents_are_errors_that_say_why() {
        for (text, says) in [
            ("", "not a JWKS"),
            ("[]", "not a JWKS"),
            ("{\"keys\": 3}", "not a JWKS"),
            ("{\"keys\": []}", "no usable key"),
            (&set(&[r#"{"kty":"oct","k":"c2VjcmV0"}"#]), "no usable key"),
            (&set(&[EC_KEY, EC_KEY]), "two keys have the key id \"ec\""),
            (&set(&[EC_KEY; KEYS_MAX + 1]), "at most"),
        ] {
            let error = Jwks::parse(text).err().unwrap_or_default();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}

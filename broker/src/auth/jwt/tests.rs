use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
use serde_json::{Value, json};

use super::*;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "brook";
const SUBJECT: &str = "system:serviceaccount:shop:orders";

/// A signing key and its public half as a JWK.
struct TestKey {
    pair: KeyPair,
    kid: Option<&'static str>,
}

impl TestKey {
    fn new(algorithm: &'static rcgen::SignatureAlgorithm, kid: Option<&'static str>) -> Self {
        Self {
            pair: KeyPair::generate_for(algorithm).expect("a key"),
            kid,
        }
    }

    fn p256(kid: &'static str) -> Self {
        Self::new(&PKCS_ECDSA_P256_SHA256, Some(kid))
    }

    fn jwk(&self) -> Value {
        let raw = self.pair.public_key_raw();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = if self.pair.algorithm() == &PKCS_ED25519 {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)})
        } else {
            // 0x04 || x || y
            let half = (raw.len() - 1) / 2;
            let crv = if half == 32 { "P-256" } else { "P-384" };
            json!({"kty": "EC", "crv": crv, "x": b64(&raw[1..=half]), "y": b64(&raw[1 + half..])})
        };
        if let Some(kid) = self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    fn algorithm(&self) -> Algorithm {
        if self.pair.algorithm() == &PKCS_ED25519 {
            Algorithm::EdDSA
        } else if self.pair.algorithm() == &PKCS_ECDSA_P384_SHA384 {
            Algorithm::ES384
        } else {
            Algorithm::ES256
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.algorithm(), self.kid, claims)
    }

    fn sign_as(&self, algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let der = self.pair.serialize_der();
        let key = if algorithm == Algorithm::EdDSA {
            EncodingKey::from_ed_der(&der)
        } else {
            EncodingKey::from_ec_der(&der)
        };
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).expect("a signed token")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// What a Kubernetes ServiceAccount token carries.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "https://kubernetes.default.svc"],
        "sub": SUBJECT,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 3600,
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "orders"}},
    })
}

/// A verifier over a JWKS of `keys`, and the directory its file is in.
fn verifier_of(keys: &[&TestKey]) -> (JwtVerifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("jwks.json");
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    std::fs::write(&file, jwks.to_string()).expect("write the JWKS");
    let store = JwksStore::load(&file, Duration::from_secs(10)).expect("a valid JWKS");
    let settings = JwtAuth::new(&file, ISSUER, AUDIENCE);
    (JwtVerifier::new(&settings, store), dir)
}

fn check(verifier: &JwtVerifier, token: &str) -> Result<String, Refusal> {
    assert!(looks_like_jwt(token.as_bytes()), "{token}");
    verifier
        .principal(token.as_bytes())
        .map(|p| p.name().to_owned())
}

fn with(changes: &[(&str, Value)]) -> Value {
    let mut claims = claims();
    for (name, value) in changes {
        if value.is_null() {
            claims.as_object_mut().expect("an object").remove(*name);
        } else {
            claims[*name] = value.clone();
        }
    }
    claims
}

#[test]
fn a_valid_token_names_its_subject() {
    for key in [
        TestKey::p256("a"),
        TestKey::new(&PKCS_ECDSA_P384_SHA384, Some("b")),
        TestKey::new(&PKCS_ED25519, Some("c")),
    ] {
        let (verifier, _dir) = verifier_of(&[&key]);
        let principal = verifier
            .principal(key.sign(&claims()).as_bytes())
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.algorithm()));
        assert_eq!(principal.name(), SUBJECT);
        assert_eq!(principal.credential(), Credential::Jwt);
    }
}

#[test]
fn the_audience_may_be_a_string_or_a_list_and_must_hold_ours() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    for (aud, expected) in [
        (json!(AUDIENCE), Ok(SUBJECT.to_owned())),
        (json!(["other", AUDIENCE]), Ok(SUBJECT.to_owned())),
        (json!("other"), Err(Refusal::JwtWrongAudience)),
        (json!(["other", "more"]), Err(Refusal::JwtWrongAudience)),
        (Value::Null, Err(Refusal::JwtMissingClaim("aud"))),
    ] {
        let token = key.sign(&with(&[("aud", aud.clone())]));
        assert_eq!(check(&verifier, &token), expected, "aud {aud}");
    }
}

#[test]
fn times_are_checked_with_the_leeway() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    let leeway = leeway();
    for (changes, expected) in [
        (vec![("exp", json!(now() - 3600))], Err(Refusal::JwtExpired)),
        (
            vec![("exp", json!(now() - leeway / 2))],
            Ok(SUBJECT.to_owned()),
        ),
        (
            vec![("nbf", json!(now() + 3600))],
            Err(Refusal::JwtNotYetValid),
        ),
        (
            vec![("nbf", json!(now() + leeway / 2))],
            Ok(SUBJECT.to_owned()),
        ),
        (vec![("nbf", Value::Null)], Ok(SUBJECT.to_owned())),
        (
            vec![("exp", Value::Null)],
            Err(Refusal::JwtMissingClaim("exp")),
        ),
    ] {
        let token = key.sign(&with(&changes));
        assert_eq!(check(&verifier, &token), expected, "{changes:?}");
    }
}

fn leeway() -> u64 {
    brook_engine::config::DEFAULT_JWT_LEEWAY.as_secs()
}

#[test]
fn the_issuer_and_the_subject_are_required() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    for (changes, expected) in [
        (
            vec![("iss", json!("https://evil.example"))],
            Refusal::JwtWrongIssuer,
        ),
        (vec![("iss", Value::Null)], Refusal::JwtMissingClaim("iss")),
        (vec![("sub", Value::Null)], Refusal::JwtMissingClaim("sub")),
        (vec![("sub", json!(""))], Refusal::JwtMissingClaim("sub")),
    ] {
        let token = key.sign(&with(&changes));
        assert_eq!(check(&verifier, &token), Err(expected), "{changes:?}");
    }
}

#[test]
fn the_key_is_chosen_by_kid_and_must_have_signed_the_token() {
    let a = TestKey::p256("a");
    let b = TestKey::p256("b");
    let (verifier, _dir) = verifier_of(&[&a, &b]);
    assert_eq!(check(&verifier, &a.sign(&claims())).as_deref(), Ok(SUBJECT));
    assert_eq!(check(&verifier, &b.sign(&claims())).as_deref(), Ok(SUBJECT));
    // Another key claiming to be `a`.
    let impostor = TestKey::p256("a");
    assert_eq!(
        check(&verifier, &impostor.sign(&claims())),
        Err(Refusal::JwtBadSignature)
    );
    let unknown = TestKey::p256("c");
    assert_eq!(
        check(&verifier, &unknown.sign(&claims())),
        Err(Refusal::JwtUnknownKey)
    );
    // Without a kid, a set of two keys has no key for it.
    let no_kid = a.sign_as(Algorithm::ES256, None, &claims());
    assert_eq!(check(&verifier, &no_kid), Err(Refusal::JwtNoKeyId));
    // A set of one key serves a token without a kid.
    let (single, _dir) = verifier_of(&[&a]);
    assert_eq!(check(&single, &no_kid).as_deref(), Ok(SUBJECT));
}

#[test]
fn changed_claims_break_the_signature() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    let token = key.sign(&claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = with(&[("sub", json!("system:serviceaccount:kube-system:admin"))]);
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    assert_eq!(
        check(&verifier, &parts.join(".")),
        Err(Refusal::JwtBadSignature)
    );
}

#[test]
fn none_and_hmac_are_refused_even_with_the_public_key_as_secret() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "kid": "k"})),
        encode(&claims())
    );
    assert_eq!(check(&verifier, &unsigned), Err(Refusal::JwtAlgorithm));
    // The classic confusion: HS256 keyed with the public key's bytes.
    for secret in [
        key.pair.public_key_raw().to_vec(),
        key.pair.public_key_pem().into_bytes(),
        key.jwk().to_string().into_bytes(),
    ] {
        for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(algorithm);
            header.kid = Some("k".to_owned());
            let token =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret))
                    .expect("an HMAC token");
            assert_eq!(check(&verifier, &token), Err(Refusal::JwtAlgorithm));
        }
    }
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    let p384 = TestKey::new(&PKCS_ECDSA_P384_SHA384, Some("k"));
    let token = p384.sign(&claims());
    assert_eq!(check(&verifier, &token), Err(Refusal::JwtKeyMismatch));
}

#[test]
fn malformed_tokens_are_refused_as_malformed() {
    let key = TestKey::p256("k");
    let (verifier, _dir) = verifier_of(&[&key]);
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let good = key.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    for token in [
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("not json"),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", encode(&json!({"kid": "k"})), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            encode(&json!({"alg": "ES256", "kid": "k", "crit": ["exp"]})),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode("not json"),
            parts[2]
        ),
        format!("A{}.{}.{}", parts[0], parts[1], parts[2]),
    ] {
        assert!(
            matches!(
                check(&verifier, &token),
                Err(Refusal::JwtMalformed | Refusal::JwtBadSignature)
            ),
            "{token}"
        );
    }
    assert_eq!(
        check(
            &verifier,
            &format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("not json"),
                parts[1],
                parts[2]
            )
        ),
        Err(Refusal::JwtMalformed)
    );
}

#[test]
fn only_tokens_of_jwt_shape_are_taken_for_jwts() {
    for jwt in ["a.b.c", "eyJh-_.eyJz.", "A.B.sig_-nature"] {
        assert!(looks_like_jwt(jwt.as_bytes()), "{jwt}");
    }
    for other in [
        "alice-secret-token-4f1b",
        "a.b",
        "a.b.c.d",
        ".b.c",
        "a..c",
        "a.b+.c",
        "a.b.c=",
        "a b.c.d",
    ] {
        assert!(!looks_like_jwt(other.as_bytes()), "{other}");
    }
}

//! JWTs as bearer tokens: with `auth = token` and a JWKS file, a JWT signed
//! by one of its keys for the configured issuer and audience names its
//! `sub`; one that fails a check is UNAUTHENTICATED with a message naming
//! the check (and never the token); static tokens keep working beside
//! JWTs; a rewritten JWKS file is picked up without a restart; settings or
//! files the broker cannot use stop it at start.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use brook_broker::config::{Authentication, JwtAuth, TokenAuth};
use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_proto::CreateTopicRequest;
use brook_proto::admin_service_client::AdminServiceClient;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::{Value, json};
use tonic::Code;

use crate::auth::{CapturedLogs, channel, list_topics, with_token, write_token_file};
use crate::common::{WAIT, within};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "brook";
const ORDERS: &str = "system:serviceaccount:shop:orders";
const ALICE_TOKEN: &str = "alice-secret-token-4f1b";

/// A P-256 signing key with its key id.
struct SigningKey {
    pair: KeyPair,
    kid: &'static str,
}

impl SigningKey {
    fn new(kid: &'static str) -> anyhow::Result<Self> {
        Ok(Self {
            pair: KeyPair::generate()?,
            kid,
        })
    }

    /// The public key as a JWK: `0x04 || x || y` split into x and y.
    fn jwk(&self) -> Value {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let raw = self.pair.public_key_raw();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        })
    }

    fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.to_owned());
        let key = EncodingKey::from_ec_der(&self.pair.serialize_der());
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claims of a Kubernetes ServiceAccount token projected with
/// audience `brook`, with `changes` applied.
fn claims(changes: &[(&str, Value)]) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": ORDERS,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 3600,
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "orders"}},
    });
    for (name, value) in changes {
        claims[*name] = value.clone();
    }
    claims
}

fn write_jwks(path: &Path, keys: &[&SigningKey]) -> anyhow::Result<()> {
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    std::fs::write(path, jwks.to_string())?;
    Ok(())
}

/// A broker taking JWTs checked against `jwks` and, if given, the static
/// tokens of `tokens`; both files are checked for changes every 50 ms.
async fn start(jwks: &Path, tokens: Option<&Path>) -> anyhow::Result<EmbeddedBroker> {
    let jwt = JwtAuth::new(jwks, ISSUER, AUDIENCE);
    let mut auth = match tokens {
        Some(file) => TokenAuth::new(file).with_jwt(jwt),
        None => TokenAuth::jwt(jwt),
    };
    auth.reload_interval = Duration::from_millis(50);
    let mut config = BrokerConfig::default();
    config.auth = Authentication::Token(auth);
    Ok(EmbeddedBroker::builder().config(config).start().await?)
}

#[tokio::test]
async fn a_valid_jwt_names_its_subject_and_static_tokens_still_work() -> anyhow::Result<()> {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir()?;
    let key = SigningKey::new("cluster-key-1")?;
    write_jwks(&dir.path().join("jwks.json"), &[&key])?;
    write_token_file(&dir.path().join("tokens"), &[("alice", ALICE_TOKEN)])?;
    let broker = start(
        &dir.path().join("jwks.json"),
        Some(&dir.path().join("tokens")),
    )
    .await?;
    let channel = channel(&broker).await?;

    let token = key.sign(&claims(&[]))?;
    let create = CreateTopicRequest {
        name: "orders".to_owned(),
        partitions: 1,
        config: None,
        replication_factor: None,
    };
    within(
        "create a topic with a JWT",
        AdminServiceClient::new(channel.clone()).create_topic(with_token(create, Some(&token))?),
    )
    .await??;
    within(
        "list with a static token",
        list_topics(&channel, Some(ALICE_TOKEN)),
    )
    .await??;
    let unknown = within(
        "list with an unknown token",
        list_topics(&channel, Some("nope")),
    )
    .await?
    .err()
    .context("an unknown static token was served")?;
    ensure!(unknown.message().contains("not known"), "{unknown:?}");

    let logged = logs.text();
    ensure!(
        logged
            .lines()
            .any(|l| l.contains("authenticated request") && l.contains(ORDERS)),
        "the JWT's request was not logged as its subject's:\n{logged}"
    );
    ensure!(
        logged
            .lines()
            .any(|l| l.contains("authenticated request") && l.contains("principal=\"alice\"")),
        "the static token's request was not logged as alice's:\n{logged}"
    );
    ensure!(
        !logged.contains(&token) && !logged.contains(ALICE_TOKEN),
        "a token reached the log"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn jwts_failing_a_check_are_unauthenticated_and_say_which() -> anyhow::Result<()> {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir()?;
    let key = SigningKey::new("cluster-key-1")?;
    write_jwks(&dir.path().join("jwks.json"), &[&key])?;
    let broker = start(&dir.path().join("jwks.json"), None).await?;
    let channel = channel(&broker).await?;

    // Another key that claims the cluster key's id.
    let impostor = SigningKey::new("cluster-key-1")?;
    let cases = [
        (impostor.sign(&claims(&[]))?, "signature does not verify"),
        (
            key.sign(&claims(&[("exp", json!(now() - 3600))]))?,
            "has expired",
        ),
        (
            key.sign(&claims(&[(
                "aud",
                json!(["https://kubernetes.default.svc"]),
            )]))?,
            "audience (aud)",
        ),
        (
            key.sign(&claims(&[("iss", json!("https://other.example"))]))?,
            "issuer (iss)",
        ),
        (
            SigningKey::new("other-key")?.sign(&claims(&[]))?,
            "key id (kid) is not in the JWKS",
        ),
        ("not-a-jwt-but-a-static-token".to_owned(), "only JWTs"),
    ];
    for (token, says) in &cases {
        let status = within("list topics", list_topics(&channel, Some(token)))
            .await?
            .err()
            .with_context(|| format!("served a token that should say {says}"))?;
        ensure!(status.code() == Code::Unauthenticated, "{status:?}");
        ensure!(status.message().contains(says), "{says}: {status:?}");
        ensure!(!status.message().contains(token.as_str()), "{status:?}");
    }
    let logged = logs.text();
    for (token, says) in &cases {
        ensure!(
            logged.contains(says),
            "the refusal `{says}` was not logged:\n{logged}"
        );
        ensure!(!logged.contains(token.as_str()), "a token reached the log");
    }
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_rewritten_jwks_file_takes_effect_without_a_restart() -> anyhow::Result<()> {
    let _guard = CapturedLogs::default().install();
    let dir = tempfile::tempdir()?;
    let jwks = dir.path().join("jwks.json");
    let old = SigningKey::new("key-2024")?;
    let new = SigningKey::new("key-2025")?;
    write_jwks(&jwks, &[&old])?;
    let broker = start(&jwks, None).await?;
    let channel = channel(&broker).await?;
    let old_token = old.sign(&claims(&[]))?;
    let new_token = new.sign(&claims(&[]))?;
    within(
        "list with the old key",
        list_topics(&channel, Some(&old_token)),
    )
    .await??;
    let refused = list_topics(&channel, Some(&new_token)).await;
    ensure!(
        refused.as_ref().err().map(tonic::Status::code) == Some(Code::Unauthenticated),
        "{refused:?}"
    );

    // The cluster rotates its signing key: the new key in, the old one out.
    write_jwks(&jwks, &[&new])?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while list_topics(&channel, Some(&new_token)).await.is_err() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the rewritten JWKS file was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = list_topics(&channel, Some(&old_token)).await;
    ensure!(
        old.as_ref()
            .err()
            .is_some_and(|s| s.message().contains("key id")),
        "{old:?}"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn token_settings_the_broker_cannot_use_stop_it_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[&SigningKey::new("k")?])?;
    let start_with = |auth: TokenAuth| async move {
        let mut config = BrokerConfig::default();
        config.auth = Authentication::Token(auth);
        EmbeddedBroker::builder()
            .config(config)
            .start()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut neither = TokenAuth::new("unused");
    neither.file = None;
    let mut no_issuer = JwtAuth::new(&jwks, ISSUER, AUDIENCE);
    no_issuer.issuer = String::new();
    let mut no_audience = JwtAuth::new(&jwks, ISSUER, AUDIENCE);
    no_audience.audience = String::new();
    let hmac_only = dir.path().join("hmac.json");
    std::fs::write(&hmac_only, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)?;
    let not_json = dir.path().join("garbage.json");
    std::fs::write(&not_json, "-----BEGIN PUBLIC KEY-----")?;
    for (auth, says) in [
        (neither, "token_file, jwks_file or both"),
        (TokenAuth::jwt(no_issuer), "jwt_issuer"),
        (TokenAuth::jwt(no_audience), "jwt_audience"),
        (
            TokenAuth::jwt(JwtAuth::new(dir.path().join("missing"), ISSUER, AUDIENCE)),
            "missing",
        ),
        (
            TokenAuth::jwt(JwtAuth::new(&hmac_only, ISSUER, AUDIENCE)),
            "no usable key",
        ),
        (
            TokenAuth::jwt(JwtAuth::new(&not_json, ISSUER, AUDIENCE)),
            "not a JWKS",
        ),
    ] {
        let error = start_with(auth).await;
        ensure!(error.contains(says), "expected {says:?}, got {error:?}");
    }
    Ok(())
}

//! Bearer tokens: against a broker with `auth = token`, a client with a
//! known token creates topics, produces (unary, and streamed by `Producer`),
//! fetches and reads groups; one without a token, or with another, is
//! refused with an error that is not retryable; a client reading its token
//! from a file sends the new token once the file is rotated.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_broker::config::{Authentication, TokenAuth};
use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_client::{
    BearerToken, Client, ClientOptions, ErrorKind, FetchOptions, GroupClient, NewRecord, Producer,
    ProducerConfig, ProducerRecord, StatusCode, TopicConfig,
};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "orders-service-token-3b8d";

/// The broker's token file, naming `token` orders.
fn write_tokens(file: &std::path::Path, token: &str) -> anyhow::Result<()> {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex = digest.as_ref().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    std::fs::write(file, format!("orders sha256:{hex}\n"))?;
    Ok(())
}

/// A broker taking `TOKEN`, its token file checked every 50 ms.
async fn start(dir: &std::path::Path) -> anyhow::Result<EmbeddedBroker> {
    let file = dir.join("tokens");
    write_tokens(&file, TOKEN)?;
    let mut tokens = TokenAuth::new(file);
    tokens.reload_interval = Duration::from_millis(50);
    let mut config = BrokerConfig::default();
    config.auth = Authentication::Token(tokens);
    Ok(EmbeddedBroker::builder().config(config).start().await?)
}

async fn connect(broker: &EmbeddedBroker, token: Option<&str>) -> anyhow::Result<Client> {
    let mut options = ClientOptions::default();
    if let Some(token) = token {
        options = options.with_bearer_token(BearerToken::new(token)?);
    }
    Ok(timeout(LIMIT, Client::connect_with(broker.endpoint(), options)).await??)
}

fn record(value: &str) -> NewRecord {
    NewRecord {
        value: Some(value.to_owned().into()),
        ..NewRecord::default()
    }
}

#[tokio::test]
async fn a_client_with_its_token_is_served_on_every_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let client = connect(&broker, Some(TOKEN)).await?;

    client
        .create_topic("orders", 1, TopicConfig::default())
        .await?;
    client.produce("orders", 0, &[record("unary")]).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    timeout(
        LIMIT,
        producer.send(ProducerRecord::new("orders", "producer").partition(0)),
    )
    .await??;
    let fetched = client
        .fetch("orders", 0, 0, FetchOptions::default())
        .await?;
    ensure!(fetched.records.len() == 2, "{:?}", fetched.records);
    let groups = GroupClient::from_client(client.clone());
    groups.list_groups().await?;
    Ok(())
}

#[tokio::test]
async fn a_client_without_a_known_token_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    for token in [None, Some("not-the-token")] {
        let client = connect(&broker, token).await?;
        let error = client
            .create_topic("orders", 1, TopicConfig::default())
            .await
            .err()
            .with_context(|| format!("served with token {token:?}"))?;
        ensure!(
            error.code() == Some(StatusCode::Unauthenticated),
            "{error:?}"
        );
        ensure!(error.kind() == ErrorKind::PermissionDenied, "{error:?}");
        ensure!(!error.is_retryable(), "{error:?}");
        ensure!(!format!("{error:?}").contains("not-the-token"), "{error:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_client_rereads_its_token_file_when_the_token_is_rotated() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let token_file = dir.path().join("client-token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let token = BearerToken::from_file_checked_every(&token_file, Duration::from_millis(50))?;
    let client = timeout(
        LIMIT,
        Client::connect_with(
            broker.endpoint(),
            ClientOptions::default().with_bearer_token(token),
        ),
    )
    .await??;
    client
        .create_topic("orders", 1, TopicConfig::default())
        .await?;

    // Both sides rotate: the broker takes only the new token, the file
    // holds it (written aside and renamed over, as the kubelet does).
    let rotated = "orders-service-token-rotated-91c4";
    write_tokens(&dir.path().join("tokens"), rotated)?;
    let next = dir.path().join("client-token.next");
    std::fs::write(&next, rotated)?;
    std::fs::rename(&next, &token_file)?;
    // Once the broker refuses the old token, the client gets in only with
    // the new one.
    let old = connect(&broker, Some(TOKEN)).await?;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while old.list_topics().await.is_ok() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the broker never reloaded its token file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        match client.list_topics().await {
            Ok(topics) => {
                ensure!(topics.iter().any(|t| t.name == "orders"), "{topics:?}");
                return Ok(());
            }
            Err(e) if e.code() == Some(StatusCode::Unauthenticated) => {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the rotated token was never sent: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

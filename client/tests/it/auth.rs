//! Bearer tokens: against a broker with `auth = token`, a client with a
//! known token creates topics, produces (unary, and streamed by `Producer`),
//! fetches and reads groups; one without a token, or with another, is
//! refused with an error that is not retryable.

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

async fn start(dir: &std::path::Path) -> anyhow::Result<EmbeddedBroker> {
    let digest = ring::digest::digest(&ring::digest::SHA256, TOKEN.as_bytes());
    let hex = digest.as_ref().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let file = dir.join("tokens");
    std::fs::write(&file, format!("orders sha256:{hex}\n"))?;
    let mut config = BrokerConfig::default();
    config.auth = Authentication::Token(TokenAuth::new(file));
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

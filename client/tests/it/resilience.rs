//! The client while its broker goes away and comes back: calls fail fast and
//! retryable, the circuit breaker opens, and the same `Client` works again
//! once a broker listens on the address again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_broker::server::{ServeError, serve};
use brook_broker::{Broker, BrokerConfig, EmbeddedBroker};
use brook_client::StatusCode as Code;
use brook_client::resilience::Backoff;
use brook_client::{
    CircuitBreakerConfig, CircuitState, Client, ClientError, ClientOptions, Producer,
    ProducerConfig, ProducerRecord, TopicConfig,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);
const FAILURE_THRESHOLD: u32 = 3;
const OPEN_DURATION: Duration = Duration::from_millis(200);

/// A data directory that outlives one broker and is removed with the test.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("brook-resilience-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create the data directory");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker served on a chosen address: `EmbeddedBroker` always binds port 0.
struct BrokerAt {
    stop: Arc<Notify>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl BrokerAt {
    async fn start(data_dir: &Path, addr: SocketAddr) -> anyhow::Result<Self> {
        let mut config = BrokerConfig::default();
        config.data_dir = data_dir.to_owned();
        config.listen = addr;
        let broker = Broker::open(config).await?;
        let listener = TcpListener::bind(addr).await?;
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(serve(broker, listener, None, {
            let stop = stop.clone();
            async move { stop.notified().await }
        }));
        Ok(Self { stop, task })
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.notify_one();
        timeout(LIMIT, self.task).await???;
        Ok(())
    }
}

fn options() -> ClientOptions {
    ClientOptions::default()
        .with_connect_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(5))
        .with_circuit_breaker(
            CircuitBreakerConfig::default()
                .with_failure_threshold(FAILURE_THRESHOLD)
                .with_open_duration(OPEN_DURATION),
        )
}

/// Calls `list_topics` until it succeeds, waiting as the errors say; panics
/// on a non-retryable error or after `LIMIT`.
async fn until_it_answers(client: &Client) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    let backoff = Backoff::default()
        .with_initial(Duration::from_millis(10))
        .with_max(Duration::from_millis(100))
        .with_multiplier(2.0);
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "no answer within {LIMIT:?}");
        match client.list_topics().await {
            Ok(topics) => return topics.into_iter().map(|t| t.name).collect(),
            Err(ClientError::CircuitOpen { retry_after }) => {
                assert!(retry_after <= OPEN_DURATION, "{retry_after:?}");
                tokio::time::sleep(retry_after).await;
            }
            Err(error) => {
                assert!(error.is_retryable(), "{error:?}");
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
        }
    }
    unreachable!("the loop returns or panics")
}

#[tokio::test]
async fn the_breaker_opens_while_the_broker_is_down_and_the_client_recovers_on_restart()
-> anyhow::Result<()> {
    let dir = DataDir::new();
    let first = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let addr = first.addr();
    let client = timeout(LIMIT, Client::connect_with(first.endpoint(), options())).await??;

    client
        .create_topic("events", 1, TopicConfig::default())
        .await?;
    // An error the broker answers with is not a failure to reach it.
    for _ in 0..=FAILURE_THRESHOLD {
        let error = client.describe_topic("missing").await.unwrap_err();
        assert_eq!(error.code(), Some(Code::NotFound), "{error:?}");
    }
    assert_eq!(client.circuit_state(), CircuitState::Closed);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer
        .send(ProducerRecord::new("events", &b"before"[..]))
        .await?;

    first.shutdown().await?;

    // Nothing listens: each call reconnects, is refused, and says "retry".
    for _ in 0..FAILURE_THRESHOLD {
        let started = Instant::now();
        let error = timeout(LIMIT, client.list_topics()).await?.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert!(
            !matches!(error, ClientError::CircuitOpen { .. }),
            "{error:?}"
        );
        assert!(
            started.elapsed() < options().connect_timeout,
            "a refused connection fails fast, took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(client.circuit_state(), CircuitState::Open);

    // Open: the call fails before anything is sent, and clones agree.
    let started = Instant::now();
    let error = client.clone().list_topics().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    let ClientError::CircuitOpen { retry_after } = &error else {
        panic!("expected CircuitOpen, got {error:?}");
    };
    assert!(*retry_after <= OPEN_DURATION);
    assert!(error.is_retryable());

    // A new broker on the same address and data: the same client comes back.
    let second = BrokerAt::start(dir.path(), addr).await?;
    let topics = timeout(LIMIT, until_it_answers(&client)).await?;
    assert_eq!(topics, ["events"]);
    assert_eq!(client.circuit_state(), CircuitState::Closed);
    client.describe_topic("events").await?;
    // The producer made before the outage sends again, unchanged.
    let after = timeout(
        LIMIT,
        producer.send(ProducerRecord::new("events", &b"after"[..])),
    )
    .await??;
    assert_eq!(after.offset, 1);
    producer.close().await;

    second.shutdown().await
}

#[tokio::test]
async fn a_failed_probe_keeps_the_breaker_open() -> anyhow::Result<()> {
    let broker = EmbeddedBroker::start().await?;
    let client = timeout(LIMIT, Client::connect_with(broker.endpoint(), options())).await??;
    client.list_topics().await?;
    broker.shutdown().await?;

    for _ in 0..FAILURE_THRESHOLD {
        assert!(client.list_topics().await.unwrap_err().is_retryable());
    }
    assert_eq!(client.circuit_state(), CircuitState::Open);
    tokio::time::sleep(OPEN_DURATION).await;

    // The probe goes to the broker, is refused, and opens the breaker again.
    let error = timeout(LIMIT, client.list_topics()).await?.unwrap_err();
    assert!(
        !matches!(error, ClientError::CircuitOpen { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(client.circuit_state(), CircuitState::Open);
    let error = client.list_topics().await.unwrap_err();
    assert!(
        matches!(error, ClientError::CircuitOpen { .. }),
        "{error:?}"
    );
    Ok(())
}

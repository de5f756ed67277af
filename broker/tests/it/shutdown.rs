//! Graceful shutdown: it drains, and it does not wait forever for streams a
//! client keeps open.

use crate::common;

use std::time::{Duration, Instant};

use brook_broker::{BrokerConfig, EmbeddedBroker};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn shutdown_closes_streams_left_open_after_the_grace_period() -> anyhow::Result<()> {
    let grace = Duration::from_millis(300);
    let mut config = BrokerConfig::default();
    config.shutdown_grace = grace;
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let channel = tonic::transport::Channel::from_shared(embedded.endpoint())?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    // A health watch never ends on its own: only the grace period ends it.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    let first = common::within("first health status", watch.message()).await??;
    assert!(first.is_some());

    let started = Instant::now();
    common::within("shutdown", embedded.shutdown()).await??;
    let took = started.elapsed();
    assert!(
        took >= grace,
        "shutdown took {took:?}, before the grace period"
    );
    assert!(
        took < grace + Duration::from_secs(5),
        "shutdown took {took:?}"
    );
    drop(watch);
    Ok(())
}

#[tokio::test]
async fn shutdown_without_open_streams_is_quick() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut clients = common::Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("quick", 1, brook_proto::TopicConfig::default())
        .await?;
    drop(clients);
    let started = Instant::now();
    common::within("shutdown", embedded.shutdown()).await??;
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

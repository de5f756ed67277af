//! How long-lived streams end when the broker stops or their topic goes:
//! never with OK, which a client would take as a normal end and not
//! reconnect.

use crate::common;

use brook_broker::EmbeddedBroker;
use brook_proto::{DeleteTopicRequest, SubscribeRequest, SubscribeResponse, TopicConfig};
use common::{Clients, batch, within};
use tonic::Code;
use tonic::codec::Streaming;

async fn subscribe(
    clients: &mut Clients,
    topic: &str,
) -> anyhow::Result<Streaming<SubscribeResponse>> {
    let request = SubscribeRequest {
        topic: topic.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    let mut stream = within("subscribe", clients.fetch.subscribe(request))
        .await??
        .into_inner();
    // The first chunk: the subscription is running.
    within("first chunk", stream.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the subscription ended at once"))?;
    Ok(stream)
}

/// Reads until the stream ends; returns the status it ended with, or
/// `None` if it ended with OK.
async fn ending(
    stream: &mut Streaming<SubscribeResponse>,
) -> anyhow::Result<Option<tonic::Status>> {
    within("the stream's end", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_with_unavailable_when_the_broker_shuts_down() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("tail", 1, TopicConfig::default())
        .await?;
    clients.produce("tail", 0, batch("r", 3)?).await?;
    let mut stream = subscribe(&mut clients, "tail").await?;

    let shutdown = tokio::spawn(embedded.shutdown());
    let status = ending(&mut stream).await?;
    let status = status.ok_or_else(|| anyhow::anyhow!("the subscription ended with OK"))?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    within("shutdown", shutdown).await???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_with_not_found_when_its_topic_is_deleted() -> anyhow::Result<()> {
    let embedded = EmbeddedBroker::start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("doomed", 1, TopicConfig::default())
        .await?;
    clients.produce("doomed", 0, batch("r", 3)?).await?;
    let mut stream = subscribe(&mut clients, "doomed").await?;

    let request = DeleteTopicRequest {
        name: "doomed".to_owned(),
    };
    within("delete", clients.admin.delete_topic(request)).await??;
    let status = ending(&mut stream).await?;
    let status = status.ok_or_else(|| anyhow::anyhow!("the subscription ended with OK"))?;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("doomed"), "{status:?}");
    Ok(())
}

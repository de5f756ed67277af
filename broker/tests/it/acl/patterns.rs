//! How ACLs match: deny beats allow, a prefix matches only names starting
//! with it, `*` names every principal, and a stream refuses request by
//! request.

use super::*;

use brook_proto::ProduceRequest;
use futures::StreamExt;

#[tokio::test]
async fn deny_beats_allow_and_prefixes_match_only_their_prefix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    for topic in [
        "orders.eu",
        "orders.secret",
        "orders",
        "ordersx",
        "payments.orders.eu",
        "public.news",
    ] {
        admin.create_topic(topic).await?;
    }
    admin.produce("public.news").await?;
    admin
        .grant(prefixed(acl(
            "alice",
            AclOperation::Produce,
            AclResourceType::Topic,
            "orders.",
        )))
        .await?;
    admin
        .grant(denying(acl(
            "alice",
            AclOperation::Produce,
            AclResourceType::Topic,
            "orders.secret",
        )))
        .await?;
    admin
        .grant(prefixed(acl(
            "*",
            AclOperation::Consume,
            AclResourceType::Topic,
            "public.",
        )))
        .await?;

    let mut alice = As::connect(&broker, "alice").await?;
    alice.produce("orders.eu").await?;
    for topic in ["orders", "ordersx", "payments.orders.eu"] {
        ensure_denied(
            alice.produce(topic).await,
            "produce",
            &format!("topic:{topic}"),
        )?;
    }
    ensure_denied(
        alice.produce("orders.secret").await,
        "produce",
        "topic:orders.secret",
    )?;
    ensure!(
        alice
            .produce("orders.secret")
            .await
            .err()
            .is_some_and(|s| s.message().contains("an ACL denies it")),
        "the refusal does not say an ACL denies it"
    );

    // `*` is every principal.
    let mut bob = As::connect(&broker, "bob").await?;
    ensure!(bob.fetch("public.news").await? > 0);
    ensure_denied(bob.fetch("orders.eu").await, "consume", "topic:orders.eu")?;
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_produce_stream_refuses_each_request_it_may_not_make_and_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    admin.create_topic("allowed").await?;
    admin.create_topic("forbidden").await?;
    admin
        .grant(acl(
            "alice",
            AclOperation::Produce,
            AclResourceType::Topic,
            "allowed",
        ))
        .await?;
    let mut alice = As::connect(&broker, "alice").await?;
    let requests: Vec<ProduceRequest> = ["allowed", "forbidden", "allowed"]
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            Ok(produce_request(
                i as u64,
                vec![partition_batch(topic, 0, batch("stream", 1)?)],
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let responses: Vec<_> = within(
        "the stream's acknowledgements",
        alice
            .produce
            .produce_stream(futures::stream::iter(requests))
            .await?
            .into_inner()
            .collect::<Vec<_>>(),
    )
    .await?;
    let responses = responses.into_iter().collect::<Result<Vec<_>, _>>()?;
    ensure!(responses.len() == 3, "{responses:?}");
    let refused = responses[1]
        .error
        .as_ref()
        .map(|e| (Code::from(e.code), e.message.clone()));
    ensure!(
        matches!(&refused, Some((Code::PermissionDenied, message)) if message.contains("topic:forbidden")),
        "{refused:?}"
    );
    ensure!(
        responses[0].error.is_none() && responses[2].error.is_none(),
        "{responses:?}"
    );
    ensure!(
        admin.end_offset("forbidden").await? == 0,
        "a refused request appended"
    );
    ensure!(admin.end_offset("allowed").await? == 2);
    broker.shutdown().await?;
    Ok(())
}

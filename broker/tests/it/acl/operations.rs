//! Each operation, refused without its ACL (and nothing changed), then
//! allowed with it.

use super::*;

use brook_proto::group_request::Kind;
use brook_proto::group_response;
use brook_proto::reset_offsets_request::To;
use brook_proto::{
    AlterTopicConfigRequest, CommitOffsetsRequest, DeleteGroupRequest, DeleteTopicRequest,
    FetchOffsetsRequest, GroupRequest, InitProducerIdRequest, JoinGroup, LeaveGroup,
    ListAclsRequest, ListGroupsRequest, ListQuotasRequest, ListTopicsRequest, PartitionOffset,
    Quota, ResetOffsetsRequest, SetQuotaRequest, SubscribeRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TOPIC: &str = "orders";
const GROUP: &str = "billing";

#[tokio::test]
async fn topic_operations_need_their_acls_and_change_nothing_without_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    let mut alice = As::connect(&broker, "alice").await?;
    admin.create_topic(TOPIC).await?;
    admin.produce(TOPIC).await?;

    // create
    ensure_denied(alice.create_topic("alices").await, "create", "topic:alices")?;
    ensure!(admin.describe("alices").await.err().map(|s| s.code()) == Some(Code::NotFound));
    admin
        .grant(acl(
            "alice",
            AclOperation::Create,
            AclResourceType::Topic,
            "alices",
        ))
        .await?;
    alice.create_topic("alices").await?;

    // describe and listing
    ensure_denied(alice.describe(TOPIC).await, "describe", "topic:orders")?;
    let listed = alice
        .admin
        .list_topics(ListTopicsRequest {})
        .await?
        .into_inner();
    ensure!(
        listed.topics.iter().all(|t| t.name != TOPIC),
        "listed a topic alice may not describe: {listed:?}"
    );

    // produce
    ensure_denied(alice.produce(TOPIC).await, "produce", "topic:orders")?;
    ensure!(
        admin.end_offset(TOPIC).await? == 1,
        "a refused produce appended"
    );
    admin
        .grant(acl(
            "alice",
            AclOperation::Produce,
            AclResourceType::Topic,
            TOPIC,
        ))
        .await?;
    ensure!(alice.produce(TOPIC).await? == 1);

    // consume: fetch and subscribe (describe follows from produce and
    // consume alike)
    ensure_denied(alice.fetch(TOPIC).await, "consume", "topic:orders")?;
    let subscribe = SubscribeRequest {
        topic: TOPIC.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
    };
    ensure_denied(
        alice.fetch.subscribe(subscribe.clone()).await.map(|_| ()),
        "consume",
        "topic:orders",
    )?;
    admin
        .grant(acl(
            "alice",
            AclOperation::Consume,
            AclResourceType::Topic,
            TOPIC,
        ))
        .await?;
    ensure!(alice.fetch(TOPIC).await? > 0, "fetched nothing");
    let mut pushed = alice.fetch.subscribe(subscribe).await?.into_inner();
    ensure!(within("a push", pushed.message()).await??.is_some());
    ensure!(alice.describe(TOPIC).await?.name == TOPIC);
    let listed = alice
        .admin
        .list_topics(ListTopicsRequest {})
        .await?
        .into_inner();
    ensure!(listed.topics.iter().any(|t| t.name == TOPIC), "{listed:?}");

    // alter
    let alter = AlterTopicConfigRequest {
        name: TOPIC.to_owned(),
        config: Some(TopicConfig {
            retention_ms: Some(0),
            ..TopicConfig::default()
        }),
    };
    ensure_denied(
        alice
            .admin
            .alter_topic_config(alter.clone())
            .await
            .map(|_| ()),
        "alter",
        "topic:orders",
    )?;
    let config = admin.describe(TOPIC).await?.config.unwrap_or_default();
    ensure!(
        config.retention_ms != Some(0),
        "a refused alter changed the topic"
    );
    admin
        .grant(acl(
            "alice",
            AclOperation::Alter,
            AclResourceType::Topic,
            TOPIC,
        ))
        .await?;
    alice.admin.alter_topic_config(alter).await?;

    // delete
    let delete = DeleteTopicRequest {
        name: TOPIC.to_owned(),
    };
    ensure_denied(
        alice.admin.delete_topic(delete.clone()).await.map(|_| ()),
        "delete",
        "topic:orders",
    )?;
    ensure!(
        admin.describe(TOPIC).await.is_ok(),
        "a refused delete deleted"
    );
    admin
        .grant(acl(
            "alice",
            AclOperation::Delete,
            AclResourceType::Topic,
            TOPIC,
        ))
        .await?;
    alice.admin.delete_topic(delete).await?;
    ensure!(
        admin.describe(TOPIC).await.is_err(),
        "the topic is still there"
    );

    broker.shutdown().await?;
    Ok(())
}

/// Joins `GROUP` on `TOPIC` and waits for the first assignment: the member
/// id and generation, and the sender that keeps the session open.
async fn join(member: &mut As) -> Result<(String, u64, mpsc::Sender<GroupRequest>), Status> {
    let (requests, outbound) = mpsc::channel(4);
    let join = GroupRequest {
        kind: Some(Kind::Join(JoinGroup {
            group: GROUP.to_owned(),
            topics: vec![TOPIC.to_owned()],
            session_timeout_ms: 10_000,
            client_id: "acl-test".to_owned(),
        })),
    };
    requests
        .send(join)
        .await
        .map_err(|_| Status::internal("session closed"))?;
    let mut responses = member
        .groups
        .session(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let mut joined = None;
    while let Some(response) = responses.message().await? {
        match response.kind {
            Some(group_response::Kind::Joined(j)) => joined = Some(j),
            Some(group_response::Kind::Assignment(assignment)) => {
                let joined = joined.ok_or_else(|| Status::internal("assigned before joined"))?;
                let generation = assignment.generation;
                // Keep reading so the session stays served.
                tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
                return Ok((joined.member_id, generation, requests));
            }
            None => {}
        }
    }
    Err(Status::internal("the session ended before an assignment"))
}

async fn committed(admin: &mut As) -> anyhow::Result<Vec<PartitionOffset>> {
    let request = FetchOffsetsRequest {
        group: GROUP.to_owned(),
        partitions: Vec::new(),
    };
    Ok(admin
        .groups
        .fetch_offsets(request)
        .await?
        .into_inner()
        .offsets)
}

#[tokio::test]
async fn group_operations_need_their_acls_and_change_nothing_without_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    let mut alice = As::connect(&broker, "alice").await?;
    admin.create_topic(TOPIC).await?;
    admin.produce(TOPIC).await?;
    admin
        .grant(acl(
            "alice",
            AclOperation::Consume,
            AclResourceType::Topic,
            TOPIC,
        ))
        .await?;

    // consume on the group, to join it
    ensure_denied(
        within("join", join(&mut alice)).await?.map(|_| ()),
        "consume",
        "group:billing",
    )?;
    admin
        .grant(acl(
            "alice",
            AclOperation::Consume,
            AclResourceType::Group,
            GROUP,
        ))
        .await?;
    let (member_id, generation, session) = within("join", join(&mut alice)).await??;

    // commit
    let commit = CommitOffsetsRequest {
        group: GROUP.to_owned(),
        member_id,
        generation,
        offsets: vec![PartitionOffset {
            topic: TOPIC.to_owned(),
            partition: 0,
            offset: 1,
        }],
    };
    ensure_denied(
        alice
            .groups
            .commit_offsets(commit.clone())
            .await
            .map(|_| ()),
        "commit",
        "group:billing",
    )?;
    ensure!(
        committed(&mut admin).await?.is_empty(),
        "a refused commit committed"
    );
    admin
        .grant(acl(
            "alice",
            AclOperation::Commit,
            AclResourceType::Group,
            GROUP,
        ))
        .await?;
    alice.groups.commit_offsets(commit).await?;
    ensure!(committed(&mut admin).await?.len() == 1);

    // describe follows from consume: offsets, listing
    let groups = alice
        .groups
        .list_groups(ListGroupsRequest {})
        .await?
        .into_inner();
    ensure!(groups.groups.iter().any(|g| g.group == GROUP), "{groups:?}");
    let bob_groups = As::connect(&broker, "bob")
        .await?
        .groups
        .list_groups(ListGroupsRequest {})
        .await?
        .into_inner();
    ensure!(bob_groups.groups.is_empty(), "bob sees {bob_groups:?}");

    // leave, so the group has no members
    session
        .send(GroupRequest {
            kind: Some(Kind::Leave(LeaveGroup {})),
        })
        .await?;
    drop(session);

    // alter: resetting offsets
    let reset = ResetOffsetsRequest {
        group: GROUP.to_owned(),
        topic: TOPIC.to_owned(),
        partitions: Vec::new(),
        to: Some(To::Offset(0)),
    };
    ensure_denied(
        alice.groups.reset_offsets(reset.clone()).await.map(|_| ()),
        "alter",
        "group:billing",
    )?;
    ensure!(
        committed(&mut admin).await?[0].offset == 1,
        "a refused reset reset"
    );
    admin
        .grant(acl(
            "alice",
            AclOperation::Alter,
            AclResourceType::Group,
            GROUP,
        ))
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    // The leave is processed asynchronously: retry while the group has members.
    loop {
        match alice.groups.reset_offsets(reset.clone()).await {
            Ok(_) => break,
            Err(status)
                if status.code() == Code::FailedPrecondition
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    ensure!(committed(&mut admin).await?[0].offset == 0);

    // delete
    let delete = DeleteGroupRequest {
        group: GROUP.to_owned(),
    };
    ensure_denied(
        alice.groups.delete_group(delete.clone()).await.map(|_| ()),
        "delete",
        "group:billing",
    )?;
    ensure!(
        !committed(&mut admin).await?.is_empty(),
        "a refused delete deleted"
    );
    admin
        .grant(acl(
            "alice",
            AclOperation::Delete,
            AclResourceType::Group,
            GROUP,
        ))
        .await?;
    alice.groups.delete_group(delete).await?;
    ensure!(committed(&mut admin).await?.is_empty());

    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn acls_are_changed_only_by_who_may_alter_the_cluster_and_survive_a_restart()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let mut alice = As::connect(&broker, "alice").await?;
    let grant = acl("alice", AclOperation::Create, AclResourceType::Topic, TOPIC);
    ensure_denied(
        alice
            .acls
            .create_acl(CreateAclRequest {
                acl: Some(grant.clone()),
            })
            .await
            .map(|_| ()),
        "alter",
        "cluster",
    )?;
    ensure_denied(
        alice
            .acls
            .list_acls(ListAclsRequest::default())
            .await
            .map(|_| ()),
        "describe",
        "cluster",
    )?;
    let quota = SetQuotaRequest {
        quota: Some(Quota {
            principal: "alice".to_owned(),
            default: false,
            produce_bytes_per_second: None,
            fetch_bytes_per_second: Some(1_000_000_000),
        }),
    };
    ensure_denied(
        alice.quotas.set_quota(quota.clone()).await.map(|_| ()),
        "alter",
        "cluster",
    )?;
    ensure_denied(
        alice
            .quotas
            .list_quotas(ListQuotasRequest {})
            .await
            .map(|_| ()),
        "describe",
        "cluster",
    )?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    let listed = admin
        .acls
        .list_acls(ListAclsRequest::default())
        .await?
        .into_inner();
    ensure!(
        listed.acls.is_empty(),
        "a refused grant was stored: {listed:?}"
    );
    let quotas = admin
        .quotas
        .list_quotas(ListQuotasRequest {})
        .await?
        .into_inner();
    ensure!(
        quotas.quotas.is_empty(),
        "a refused quota was stored: {quotas:?}"
    );
    admin.quotas.set_quota(quota).await?;
    admin
        .grant(acl(
            "alice",
            AclOperation::Alter,
            AclResourceType::Cluster,
            "",
        ))
        .await?;
    alice.grant(grant.clone()).await?;
    broker.shutdown().await?;

    let broker = start(dir.path()).await?;
    let mut alice = As::connect(&broker, "alice").await?;
    alice.create_topic(TOPIC).await?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    let listed = admin
        .acls
        .list_acls(ListAclsRequest::default())
        .await?
        .into_inner();
    ensure!(
        listed.acls.len() == 2 && listed.acls.contains(&grant),
        "{listed:?}"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_producer_id_is_taken_over_only_by_the_principal_holding_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path()).await?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    let mut carol = As::connect(&broker, "carol").await?;
    let new_id = InitProducerIdRequest { producer_id: -1 };
    ensure_denied(
        carol.produce.init_producer_id(new_id).await.map(|_| ()),
        "producer id",
        "carol",
    )?;
    for principal in ["alice", "bob"] {
        admin
            .grant(acl(
                principal,
                AclOperation::Produce,
                AclResourceType::Topic,
                TOPIC,
            ))
            .await?;
    }
    let mut alice = As::connect(&broker, "alice").await?;
    let mut bob = As::connect(&broker, "bob").await?;
    let held = alice.produce.init_producer_id(new_id).await?.into_inner();
    let take_over = InitProducerIdRequest {
        producer_id: held.producer_id,
    };
    ensure_denied(
        bob.produce.init_producer_id(take_over).await.map(|_| ()),
        "take over",
        &format!("producer_id {}", held.producer_id),
    )?;
    let bumped = alice
        .produce
        .init_producer_id(take_over)
        .await?
        .into_inner();
    ensure!(
        bumped.producer_epoch == held.producer_epoch + 1,
        "{bumped:?}"
    );
    broker.shutdown().await?;

    // The holder is remembered across a restart; a superuser may take over.
    let broker = start(dir.path()).await?;
    let mut bob = As::connect(&broker, "bob").await?;
    ensure_denied(
        bob.produce.init_producer_id(take_over).await.map(|_| ()),
        "take over",
        &format!("producer_id {}", held.producer_id),
    )?;
    let mut admin = As::connect(&broker, ADMIN).await?;
    admin.produce.init_producer_id(take_over).await?;
    broker.shutdown().await?;
    Ok(())
}

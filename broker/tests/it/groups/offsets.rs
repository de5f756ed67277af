//! Offsets: fenced commits, describe and lag, delete and reset, and
//! committed offsets across a restart.

use super::*;

#[tokio::test]
async fn commits_with_an_old_generation_or_from_a_removed_member_are_fenced() -> anyhow::Result<()>
{
    let (embedded, mut clients, mut groups) = setup("orders", 2).await?;
    clients.produce("orders", 0, batch("r", 10)?).await?;
    clients.produce("orders", 1, batch("r", 10)?).await?;
    let (mut a, a_joined, a_first) = member(&mut groups, "g", &["orders"], 0).await?;
    let commit = |generation: u64, partition: u32, offset: i64| CommitOffsetsRequest {
        group: "g".into(),
        member_id: a_joined.member_id.clone(),
        generation,
        offsets: vec![PartitionOffset {
            topic: "orders".into(),
            partition,
            offset,
        }],
    };
    within(
        "commit",
        groups.commit_offsets(commit(a_first.generation, 0, 3)),
    )
    .await??;
    within(
        "commit",
        groups.commit_offsets(commit(a_first.generation, 1, 4)),
    )
    .await??;

    // `b` joins: `a` moves to a new generation; the old one is fenced.
    let (_b, _, _) = member(&mut groups, "g", &["orders"], 0).await?;
    let a_second = a.assignment().await?;
    assert!(a_second.generation > a_first.generation);
    let status = within(
        "stale commit",
        groups.commit_offsets(commit(a_first.generation, 0, 9)),
    )
    .await?
    .expect_err("a stale generation is fenced");
    assert_status(
        &status,
        Code::FailedPrecondition,
        &[
            &a_joined.member_id,
            &format!("generation {}", a_first.generation),
            &format!("is {}", a_second.generation),
        ],
    );
    // Not owning a partition is fenced too.
    let foreign = a_second.revoke[0].partition;
    let kept = a_second.assigned[0].partition;
    a.revoked(&a_second).await?;
    eventually("the group settles", || is_stable(&embedded, "g", 2)).await?;
    let status = within(
        "foreign commit",
        groups.commit_offsets(commit(a_second.generation, foreign, 9)),
    )
    .await?
    .expect_err("a partition it does not own is fenced");
    assert_status(
        &status,
        Code::FailedPrecondition,
        &["does not own", "orders"],
    );

    // `a` leaves: its commits are fenced, whatever the generation.
    a.send(Kind::Leave(LeaveGroup {})).await?;
    assert!(
        a.next()
            .await?
            .expect("a leave ends the stream normally")
            .is_none()
    );
    eventually("a is gone", || is_stable(&embedded, "g", 1)).await?;
    let status = within(
        "commit after leaving",
        groups.commit_offsets(commit(a_second.generation, kept, 9)),
    )
    .await?
    .expect_err("a removed member is fenced");
    assert_status(
        &status,
        Code::FailedPrecondition,
        &[&a_joined.member_id, "not a member"],
    );

    let fetched = within(
        "fetch offsets",
        groups.fetch_offsets(FetchOffsetsRequest {
            group: "g".into(),
            partitions: Vec::new(),
        }),
    )
    .await??
    .into_inner();
    let offsets: Vec<(u32, i64)> = fetched
        .offsets
        .iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    assert_eq!(
        offsets,
        vec![(0, 3), (1, 4)],
        "fenced commits changed nothing"
    );
    Ok(())
}

#[tokio::test]
async fn describe_shows_members_owners_and_lag() -> anyhow::Result<()> {
    let (embedded, mut clients, mut groups) = setup("orders", 2).await?;
    clients.produce("orders", 0, batch("r", 10)?).await?;
    let (_session, joined, first) = member(&mut groups, "g", &["orders"], 0).await?;
    within(
        "commit",
        groups.commit_offsets(CommitOffsetsRequest {
            group: "g".into(),
            member_id: joined.member_id.clone(),
            generation: first.generation,
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 4,
            }],
        }),
    )
    .await??;
    let described = within(
        "describe",
        groups.describe_group(DescribeGroupRequest { group: "g".into() }),
    )
    .await??
    .into_inner();
    assert_eq!(described.state, "stable");
    assert_eq!(described.generation, first.generation);
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].client_id, "groups-test");
    assert_eq!(described.members[0].topics, vec!["orders".to_owned()]);
    let lag: Vec<(u32, i64, i64, i64, &str)> = described
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition,
                p.committed_offset,
                p.end_offset,
                p.lag,
                p.owner.as_str(),
            )
        })
        .collect();
    let id = joined.member_id.as_str();
    assert_eq!(lag, vec![(0, 4, 10, 6, id), (1, -1, 0, 0, id)]);

    let listed = within("list", groups.list_groups(ListGroupsRequest {}))
        .await??
        .into_inner();
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(
        (listed.groups[0].state.as_str(), listed.groups[0].members),
        ("stable", 1)
    );
    let metrics = embedded.broker().metrics().render(embedded.broker())?;
    assert!(
        metrics.contains(r#"brook_group_lag{group="g",topic="orders",partition="0"} 6"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"brook_group_members{group="g"} 1"#));
    assert!(metrics.contains(r#"brook_group_rebalances_total{group="g"} 1"#));
    let status = within(
        "describe a missing group",
        groups.describe_group(DescribeGroupRequest {
            group: "nope".into(),
        }),
    )
    .await?
    .expect_err("unknown group");
    assert_status(&status, Code::NotFound, &["nope"]);
    Ok(())
}

#[tokio::test]
async fn delete_and_reset_are_refused_with_members_and_allowed_without() -> anyhow::Result<()> {
    let (_embedded, mut clients, mut groups) = setup("orders", 2).await?;
    let started_ms = common::now_ms();
    clients.produce("orders", 0, batch("old", 5)?).await?;
    let (session, _, _) = member(&mut groups, "g", &["orders"], 0).await?;
    let reset = |to: To, partitions: Vec<u32>| ResetOffsetsRequest {
        group: "g".into(),
        topic: "orders".into(),
        partitions,
        to: Some(to),
    };
    let status = within(
        "delete",
        groups.delete_group(DeleteGroupRequest { group: "g".into() }),
    )
    .await?
    .expect_err("a group with members is kept");
    assert_status(&status, Code::FailedPrecondition, &["`g`", "1 members"]);
    let status = within(
        "reset",
        groups.reset_offsets(reset(To::Latest(true), vec![])),
    )
    .await?
    .expect_err("offsets of a group with members are kept");
    assert_status(&status, Code::FailedPrecondition, &["`g`", "resetting"]);

    session.send(Kind::Leave(LeaveGroup {})).await?;
    drop(session);
    let offsets =
        |response: tonic::Response<brook_proto::ResetOffsetsResponse>| -> Vec<(u32, i64)> {
            response
                .into_inner()
                .offsets
                .iter()
                .map(|o| (o.partition, o.offset))
                .collect()
        };
    // The leave is processed asynchronously: retry until the group is empty.
    let started = Instant::now();
    let latest = loop {
        match within(
            "reset to latest",
            groups.reset_offsets(reset(To::Latest(true), vec![])),
        )
        .await?
        {
            Ok(response) => break offsets(response),
            Err(status)
                if status.code() == Code::FailedPrecondition && started.elapsed() < WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    assert_eq!(latest, vec![(0, 5), (1, 0)]);
    let earliest = offsets(
        within(
            "reset",
            groups.reset_offsets(reset(To::Earliest(true), vec![0])),
        )
        .await??,
    );
    assert_eq!(earliest, vec![(0, 0)]);
    let exact =
        offsets(within("reset", groups.reset_offsets(reset(To::Offset(2), vec![0]))).await??);
    assert_eq!(exact, vec![(0, 2)]);
    let by_time = offsets(
        within(
            "reset",
            groups.reset_offsets(reset(To::TimestampMs(started_ms - 60_000), vec![0])),
        )
        .await??,
    );
    assert_eq!(by_time, vec![(0, 0)]);
    let status = within(
        "reset",
        groups.reset_offsets(reset(To::Offset(99), vec![0])),
    )
    .await?
    .expect_err("beyond the end");
    assert_eq!(status.code(), Code::OutOfRange);
    let fetched = within(
        "fetch",
        groups.fetch_offsets(FetchOffsetsRequest {
            group: "g".into(),
            partitions: vec![tp("orders", 0)],
        }),
    )
    .await??
    .into_inner();
    assert_eq!(fetched.offsets.len(), 1);
    assert_eq!(fetched.offsets[0].offset, 0);

    let listed = within("list", groups.list_groups(ListGroupsRequest {}))
        .await??
        .into_inner();
    assert_eq!(
        (listed.groups[0].state.as_str(), listed.groups[0].members),
        ("empty", 0)
    );
    within(
        "delete",
        groups.delete_group(DeleteGroupRequest { group: "g".into() }),
    )
    .await??;
    let status = within(
        "delete again",
        groups.delete_group(DeleteGroupRequest { group: "g".into() }),
    )
    .await?
    .expect_err("gone");
    assert_status(&status, Code::NotFound, &["`g`"]);
    let listed = within("list", groups.list_groups(ListGroupsRequest {}))
        .await??
        .into_inner();
    assert!(listed.groups.is_empty());
    Ok(())
}

#[tokio::test]
async fn committed_offsets_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let embedded = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .config(BrokerConfig::default())
        .start()
        .await?;
    let (mut clients, mut groups) = connect(&embedded, "orders", 2).await?;
    clients.produce("orders", 1, batch("r", 8)?).await?;
    let (session, joined, first) = member(&mut groups, "g", &["orders"], 0).await?;
    within(
        "commit",
        groups.commit_offsets(CommitOffsetsRequest {
            group: "g".into(),
            member_id: joined.member_id,
            generation: first.generation,
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 1,
                offset: 7,
            }],
        }),
    )
    .await??;
    drop(session);
    within("shutdown", embedded.shutdown()).await??;

    let embedded = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let (_, mut groups) = connect(&embedded, "orders", 0).await?;
    let fetched = within(
        "fetch",
        groups.fetch_offsets(FetchOffsetsRequest {
            group: "g".into(),
            partitions: vec![],
        }),
    )
    .await??
    .into_inner();
    let offsets: Vec<(String, u32, i64)> = fetched
        .offsets
        .into_iter()
        .map(|o| (o.topic, o.partition, o.offset))
        .collect();
    assert_eq!(offsets, vec![("orders".to_owned(), 1, 7)]);
    let described = embedded
        .broker()
        .describe_group("g")
        .context("described after a restart")?;
    assert_eq!(described.state, brook_broker::group::GroupState::Empty);
    assert_eq!(described.partitions[0].lag, 1);
    Ok(())
}

/// Groups made by `ResetOffsets` alone, with no member ever, must not be
/// kept forever: they expire once inactive for the offsets' retention, as
/// does a group whose last member left; a group with a member is kept.
#[tokio::test]
async fn groups_without_members_expire_after_the_offsets_retention() -> anyhow::Result<()> {
    let mut config = BrokerConfig::default();
    config.groups.offsets_retention = Some(Duration::from_millis(400));
    config.groups.expiry_grace = Duration::ZERO;
    config.retention_check_interval = Duration::from_millis(50);
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let (mut clients, mut groups) = connect(&embedded, "orders", 2).await?;
    clients.produce("orders", 0, batch("r", 3)?).await?;
    let reset = |group: &str| ResetOffsetsRequest {
        group: group.into(),
        topic: "orders".into(),
        partitions: vec![],
        to: Some(To::Latest(true)),
    };
    for i in 0..50 {
        within("reset", groups.reset_offsets(reset(&format!("spam-{i}")))).await??;
    }
    // A member that commits and stays.
    let (session, joined, _) = member(&mut groups, "kept", &["orders"], 0).await?;
    within(
        "commit",
        groups.commit_offsets(CommitOffsetsRequest {
            group: "kept".into(),
            member_id: joined.member_id.clone(),
            generation: joined.generation,
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 3,
            }],
        }),
    )
    .await??;
    let listed = |groups: &mut GroupServiceClient<Channel>| {
        let mut groups = groups.clone();
        async move {
            let response = within("list", groups.list_groups(ListGroupsRequest {})).await??;
            anyhow::Ok(
                response
                    .into_inner()
                    .groups
                    .into_iter()
                    .map(|g| g.group)
                    .collect::<BTreeSet<String>>(),
            )
        }
    };
    ensure!(listed(&mut groups).await?.len() == 51);
    let deadline = Instant::now() + WAIT;
    loop {
        let names = listed(&mut groups).await?;
        if names.len() == 1 {
            ensure!(names.contains("kept"), "{names:?}");
            break;
        }
        ensure!(Instant::now() < deadline, "groups never expired: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = embedded.broker().metrics().render(embedded.broker())?;
    ensure!(
        !metrics.contains("spam-"),
        "expired groups remain in /metrics"
    );
    // Well past the retention, the group with a member keeps its offsets.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let fetched = within(
        "fetch offsets",
        groups.fetch_offsets(FetchOffsetsRequest {
            group: "kept".into(),
            partitions: vec![tp("orders", 0)],
        }),
    )
    .await??
    .into_inner();
    ensure!(
        fetched.offsets.len() == 1 && fetched.offsets[0].offset == 3,
        "{fetched:?}"
    );
    // The member leaves: its group expires a retention period later.
    session.send(Kind::Leave(LeaveGroup {})).await?;
    drop(session);
    let deadline = Instant::now() + WAIT;
    while !listed(&mut groups).await?.is_empty() {
        ensure!(Instant::now() < deadline, "the left group never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

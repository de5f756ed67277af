//! Membership: joining, the incremental rebalance and its revocation
//! handshake, session timeouts, dropped streams, bad sessions, shutdown.

use super::*;

#[tokio::test]
async fn a_member_joins_gets_every_partition_and_heartbeats_keep_it() -> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 4).await?;
    let (session, joined, first) = member(&mut groups, "g", &["orders"], SHORT_SESSION_MS).await?;
    assert!(!joined.member_id.is_empty());
    assert_eq!(joined.session_timeout_ms, SHORT_SESSION_MS);
    assert_eq!(joined.heartbeat_interval_ms, SHORT_SESSION_MS / 3);
    assert_eq!(
        set(&first.assigned),
        (0..4).map(|p| ("orders".to_owned(), p)).collect()
    );
    assert!(first.revoke.is_empty());
    // Three session timeouts of heartbeats: still a member.
    for _ in 0..9 {
        session.send(Kind::Heartbeat(Heartbeat {})).await?;
        tokio::time::sleep(Duration::from_millis(u64::from(
            joined.heartbeat_interval_ms,
        )))
        .await;
    }
    let described = embedded.broker().describe_group("g").context("described")?;
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].member_id, joined.member_id);
    assert_eq!(described.members[0].assigned.len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_fourth_member_moves_exactly_three_partitions_and_none_is_held_twice()
-> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 12).await?;
    let (stop, watcher) = watch_ownership(&embedded, "g");
    let mut members = Vec::new();
    for count in 1..=3 {
        members.push(AutoMember::join(&mut groups, "g", &["orders"]).await?);
        eventually("the group settles", || is_stable(&embedded, "g", count)).await?;
    }
    assert!(members.iter().all(|m| m.assigned().len() == 4));
    let before: Vec<usize> = members.iter().map(|m| m.log.lock().len()).collect();
    let owned_before: Vec<_> = members.iter().map(AutoMember::assigned).collect();

    let fourth = AutoMember::join(&mut groups, "g", &["orders"]).await?;
    eventually("the fourth member gets three partitions", || {
        is_stable(&embedded, "g", 4) && fourth.assigned().len() == 3
    })
    .await?;
    for (i, m) in members.iter().enumerate() {
        assert_eq!(
            m.revoked_since(before[i]),
            1,
            "member {i} gave up one partition"
        );
        assert_eq!(m.assigned().len(), 3);
        assert!(
            m.assigned().is_subset(&owned_before[i]),
            "member {i} only lost"
        );
    }
    // The newcomer never had to give anything back.
    assert_eq!(fourth.revoked_since(0), 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polls = within("the ownership watcher", watcher).await???;
    assert!(polls > 0);
    let ids: BTreeSet<_> = members
        .iter()
        .chain([&fourth])
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(ids.len(), 4);
    Ok(())
}

#[tokio::test]
async fn the_new_owner_gets_a_partition_only_after_the_old_one_revoked_it() -> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 2).await?;
    let (mut a, a_joined, a_first) = member(&mut groups, "g", &["orders"], 0).await?;
    assert_eq!(a_first.assigned.len(), 2);
    let (mut b, b_joined, b_first) = member(&mut groups, "g", &["orders"], 0).await?;
    assert!(b_first.assigned.is_empty(), "held by `a` until it lets go");

    let a_revoke = a.assignment().await?;
    assert_eq!(a_revoke.revoke.len(), 1);
    assert_eq!(a_revoke.assigned.len(), 1);
    let moving = a_revoke.revoke[0].clone();
    let (generation, owners) = embedded.broker().group_ownership("g");
    assert_eq!(generation, a_revoke.generation);
    let holder = owners
        .iter()
        .find(|(p, _, _)| p.topic == moving.topic && p.partition == moving.partition)
        .context("the moving partition is held")?;
    assert_eq!(
        (holder.1.as_str(), holder.2),
        (a_joined.member_id.as_str(), true)
    );
    let described = embedded.broker().describe_group("g").context("described")?;
    assert_eq!(
        described.state,
        brook_broker::group::GroupState::Rebalancing
    );

    // While revoking, `a` may still commit what it finished.
    let commit = CommitOffsetsRequest {
        group: "g".into(),
        member_id: a_joined.member_id.clone(),
        generation: a_revoke.generation,
        offsets: vec![PartitionOffset {
            topic: moving.topic.clone(),
            partition: moving.partition,
            offset: 0,
        }],
    };
    within("commit while revoking", groups.commit_offsets(commit)).await??;
    // Nothing reaches `b` before `a` acknowledges.
    let early = tokio::time::timeout(Duration::from_millis(200), b.responses.message()).await;
    assert!(early.is_err(), "b heard something early: {early:?}");

    a.revoked(&a_revoke).await?;
    let b_second = b.assignment().await?;
    assert_eq!(set(&b_second.assigned), set(&[moving]));
    assert!(b_second.generation >= b_first.generation);
    eventually("the group settles", || is_stable(&embedded, "g", 2)).await?;
    assert_ne!(a_joined.member_id, b_joined.member_id);
    Ok(())
}

#[tokio::test]
async fn a_member_that_stops_heartbeating_is_removed_after_its_timeout() -> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 4).await?;
    let (mut silent, silent_joined, _) =
        member(&mut groups, "g", &["orders"], SHORT_SESSION_MS).await?;
    let joined_at = Instant::now();
    let steady = AutoMember::join(&mut groups, "g", &["orders"]).await?;
    // `silent` neither heartbeats nor acknowledges its revocation.
    let status = silent.end_status().await?;
    let waited = joined_at.elapsed();
    assert_status(
        &status,
        Code::Aborted,
        &[
            &silent_joined.member_id,
            "session timeout",
            "300 ms",
            "join again",
        ],
    );
    assert!(
        waited >= Duration::from_millis(u64::from(SHORT_SESSION_MS - 20)),
        "removed after {waited:?}"
    );
    eventually("the steady member gets every partition", || {
        steady.assigned().len() == 4 && is_stable(&embedded, "g", 1)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_member_whose_stream_is_dropped_is_removed_at_once() -> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 4).await?;
    let (gone, _, _) = member(&mut groups, "g", &["orders"], 0).await?;
    let steady = AutoMember::join(&mut groups, "g", &["orders"]).await?;
    let started = Instant::now();
    drop(gone);
    eventually("the steady member gets every partition", || {
        steady.assigned().len() == 4 && is_stable(&embedded, "g", 1)
    })
    .await?;
    // Far sooner than the default 10 s session timeout.
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn bad_sessions_get_clear_errors_and_the_group_goes_on() -> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 2).await?;
    let steady = AutoMember::join(&mut groups, "g", &["orders"]).await?;

    let mut s = Session::open(
        &mut groups,
        GroupRequest {
            kind: Some(Kind::Heartbeat(Heartbeat {})),
        },
    )
    .await?;
    assert_status(
        &s.end_status().await?,
        Code::InvalidArgument,
        &["first message", "join", "heartbeat"],
    );
    let mut s = Session::open(&mut groups, GroupRequest { kind: None }).await?;
    assert_status(&s.end_status().await?, Code::InvalidArgument, &["join"]);
    let mut s = Session::open(&mut groups, join("g", &["orders", "missing"], 0)).await?;
    assert_status(&s.end_status().await?, Code::NotFound, &["missing"]);
    let mut s = Session::open(&mut groups, join("g", &["orders"], 5)).await?;
    assert_status(
        &s.end_status().await?,
        Code::InvalidArgument,
        &["session_timeout_ms", "100"],
    );
    let mut s = Session::open(&mut groups, join("", &["orders"], 0)).await?;
    assert_status(&s.end_status().await?, Code::InvalidArgument, &["group"]);
    let mut s = Session::open(&mut groups, join("g", &[], 0)).await?;
    assert_status(&s.end_status().await?, Code::InvalidArgument, &["topics"]);

    // Joined, then a second join: removed with a clear status.
    let (mut twice, _, _) = member(&mut groups, "g", &["orders"], 0).await?;
    twice.send(Kind::Join(JoinGroup::default())).await?;
    assert_status(
        &twice.end_status().await?,
        Code::InvalidArgument,
        &["joins once"],
    );

    // Garbage bytes instead of a request.
    let status = raw::send_garbage(embedded.endpoint()).await?;
    assert_status(&status, Code::InvalidArgument, &["cannot read"]);

    // A member that never heartbeats is removed; the steady one keeps all.
    let (mut idle, _, _) = member(&mut groups, "g", &["orders"], SHORT_SESSION_MS).await?;
    assert_status(
        &idle.end_status().await?,
        Code::Aborted,
        &["session timeout"],
    );
    eventually("the group goes on with its steady member", || {
        is_stable(&embedded, "g", 1) && steady.assigned().len() == 2
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn sessions_end_with_unavailable_when_the_broker_shuts_down() -> anyhow::Result<()> {
    let (embedded, _clients, mut groups) = setup("orders", 1).await?;
    let (mut session, _, _) = member(&mut groups, "g", &["orders"], 0).await?;
    let stopping = tokio::spawn(embedded.shutdown());
    let status = session.end_status().await?;
    assert_status(&status, Code::Unavailable, &["shutting down"]);
    within("shutdown", stopping).await???;
    Ok(())
}

//! Consumer groups in a cluster: one coordinator for every member of a
//! group, wherever it connected; groups spread over the brokers; committed
//! offsets that outlive their coordinator.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use brook_broker::EmbeddedCluster;
use brook_client::{
    Client, ConsumedRecord, GroupClient, GroupConfig, GroupConsumer, OffsetReset, TopicConfig,
};

use super::{STEP_LIMIT, send_numbered};

/// Records a group's member consumed, as numbers.
type Seen = Arc<Mutex<Vec<u64>>>;

/// Starts a member of `group` on `endpoint` that notes what it consumes.
async fn numbered_member(
    endpoint: &str,
    group: &str,
    topic: &str,
    seen: Seen,
) -> (
    brook_client::GroupHandle,
    tokio::task::JoinHandle<Result<(), brook_client::GroupError>>,
) {
    let groups = GroupClient::connect(endpoint.to_owned())
        .await
        .expect("connect");
    let config = GroupConfig::new(group, [topic])
        .with_session_timeout(Duration::from_secs(1))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_commit_interval(Duration::from_millis(100))
        .with_max_wait(Duration::from_millis(100));
    let member = GroupConsumer::join(groups, config).await.expect("join");
    let handle = member.handle();
    let task = tokio::spawn(member.run(move |consumed: ConsumedRecord| {
        let seen = seen.clone();
        async move {
            let value = consumed.record.value.clone().expect("a value");
            let seq: u64 = std::str::from_utf8(&value)
                .expect("text")
                .parse()
                .expect("a number");
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(seq);
            Ok::<(), std::io::Error>(())
        }
    }));
    (handle, task)
}

/// A cluster of three with `topic` created on it, and a client of its
/// first broker.
async fn cluster_with_topic(
    topic: &str,
    partitions: u32,
    replication_factor: u32,
) -> (EmbeddedCluster, Vec<String>, Client) {
    let cluster = EmbeddedCluster::start().await.expect("a cluster");
    let endpoints = cluster.endpoints();
    let client = Client::connect(endpoints[0].clone())
        .await
        .expect("connect");
    client
        .create_replicated_topic(
            topic,
            partitions,
            Some(replication_factor),
            TopicConfig::default(),
        )
        .await
        .expect("create the topic");
    (cluster, endpoints, client)
}

/// A group named `prefix-N` whose coordinator is none of `avoid`, with its
/// coordinator, once the slots are given out.
async fn group_coordinated_off(client: &Client, prefix: &str, avoid: &[u64]) -> (String, u64) {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        for index in 0..64 {
            let group = format!("{prefix}-{index}");
            if let Ok(found) = client.find_coordinator(&group).await
                && !avoid.contains(&found.node_id)
            {
                return (group, found.node_id);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no group coordinated off brokers {avoid:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A consumer group in a cluster: members connected to different brokers
/// form one group at the broker that coordinates it; its
/// committed offsets outlive that broker, and the members go on at the
/// next one from where they had committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_spans_the_cluster_and_its_offsets_outlive_its_coordinator() {
    const EVENTS: &str = "events";
    const GROUP: &str = "billing";
    let (mut cluster, endpoints, client) = cluster_with_topic(EVENTS, 4, 3).await;
    send_numbered(&client, EVENTS, 0..200, 4).await;

    // Two members, each connected to another broker.
    let seen = Seen::default();
    let mut members = Vec::new();
    for endpoint in &endpoints[1..] {
        members.push(numbered_member(endpoint, GROUP, EVENTS, seen.clone()).await);
    }
    let seen_now = || seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let deadline = Instant::now() + STEP_LIMIT;
    while seen_now()
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < 200
    {
        assert!(
            Instant::now() < deadline,
            "the group consumed {} of 200",
            seen_now().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One group: two groups would each have consumed everything.
    assert!(
        seen_now().len() < 300,
        "{} records handed out for 200",
        seen_now().len()
    );

    // Everything committed, as the coordinator says.
    let groups = GroupClient::connect(endpoints[0].clone())
        .await
        .expect("connect");
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let described = groups
            .describe_group(GROUP)
            .await
            .expect("describe the group");
        if described.partitions.len() == 4 && described.partitions.iter().all(|p| p.lag == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all committed: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let coordinator = client
        .find_coordinator(GROUP)
        .await
        .expect("find the group's coordinator")
        .node_id;
    let handed_out_before = seen_now().len();
    cluster
        .stop(coordinator)
        .await
        .expect("stop the coordinator");

    let survivor = endpoints
        .iter()
        .enumerate()
        .find(|(index, _)| *index as u64 + 1 != coordinator)
        .map(|(_, endpoint)| endpoint.clone())
        .expect("a broker left");
    let client = Client::connect(survivor).await.expect("connect");
    send_numbered(&client, EVENTS, 200..300, 4).await;
    let deadline = Instant::now() + STEP_LIMIT;
    while !(200..300).all(|seq| seen_now().contains(&seq)) {
        assert!(
            Instant::now() < deadline,
            "the group did not go on after broker {coordinator} (its coordinator) stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new coordinator had the committed offsets: nothing before them
    // was handed out again.
    let again = seen_now()[handed_out_before..]
        .iter()
        .filter(|seq| **seq < 200)
        .count();
    assert_eq!(
        again, 0,
        "records committed before the coordinator stopped were handed out again"
    );
    for (handle, task) in members {
        handle.shutdown();
        let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    }
    cluster.shutdown().await.expect("a clean shutdown");
}

/// Partitions with one replica each, on different brokers: the
/// coordinator holds at most one of them, and takes the commits of all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_commits_partitions_its_coordinator_does_not_hold() {
    const SPREAD: &str = "spread-out";
    const GROUP: &str = "spread";
    let (cluster, endpoints, client) = cluster_with_topic(SPREAD, 3, 1).await;
    send_numbered(&client, SPREAD, 0..30, 3).await;

    let groups = GroupClient::connect(endpoints[1].clone())
        .await
        .expect("connect");
    let config = GroupConfig::new(GROUP, [SPREAD])
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_commit_interval(Duration::from_millis(100))
        .with_max_wait(Duration::from_millis(100));
    let member = GroupConsumer::join(groups.clone(), config)
        .await
        .expect("join");
    let handle = member.handle();
    let task = tokio::spawn(member.run(|_: ConsumedRecord| async { Ok::<(), std::io::Error>(()) }));
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let committed = groups
            .fetch_offsets(GROUP, &[])
            .await
            .expect("fetch offsets");
        if committed.len() == 3 && committed.iter().all(|p| p.offset == 10) {
            break;
        }
        assert!(Instant::now() < deadline, "committed: {committed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown();
    let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    cluster.shutdown().await.expect("a clean shutdown");
}

/// Consumer groups are shared out among the brokers: three groups with
/// three different coordinators. When one of them stops, its groups move
/// to the others by themselves and go on from their last commit, and the
/// other groups go on too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_spread_over_the_brokers_and_move_when_one_stops() {
    const EVENTS: &str = "spread-events";
    let (mut cluster, endpoints, client) = cluster_with_topic(EVENTS, 2, 3).await;
    send_numbered(&client, EVENTS, 0..100, 2).await;

    // One group coordinated by each broker.
    let mut by_broker = std::collections::BTreeMap::<u64, String>::new();
    let deadline = Instant::now() + STEP_LIMIT;
    while by_broker.len() < 3 {
        for index in 0..64 {
            let group = format!("spread-{index}");
            // Err: no broker has the slot yet.
            if let Ok(found) = client.find_coordinator(&group).await {
                assert!(found.clustered);
                by_broker.entry(found.node_id).or_insert(group);
            }
        }
        assert!(
            Instant::now() < deadline,
            "groups' coordinators found: {by_broker:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = client
        .describe_cluster()
        .await
        .expect("describe the cluster")
        .metadata_leader
        .expect("a metadata leader");
    let victim = *by_broker
        .keys()
        .find(|id| **id != leader)
        .expect("a broker that does not lead the metadata");
    let survivor = endpoints
        .iter()
        .enumerate()
        .find(|(index, _)| *index as u64 + 1 != victim)
        .map(|(_, endpoint)| endpoint.clone())
        .expect("a broker left");

    let mut members = Vec::new();
    for group in by_broker.values() {
        let seen = Seen::default();
        let (handle, task) = numbered_member(&survivor, group, EVENTS, seen.clone()).await;
        members.push((group.clone(), seen, handle, task));
    }
    let seen_now = |seen: &Seen| seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let groups = GroupClient::connect(survivor.clone())
        .await
        .expect("connect");
    for (group, seen, _, _) in &members {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let committed = groups
                .fetch_offsets(group, &[])
                .await
                .expect("fetch offsets");
            if committed.len() == 2 && committed.iter().all(|p| p.offset == 50) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "group {group} committed {committed:?}, consumed {}",
                seen_now(seen).len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let handed_out_before: Vec<usize> = members
        .iter()
        .map(|(_, seen, _, _)| seen_now(seen).len())
        .collect();
    cluster.stop(victim).await.expect("stop a coordinator");
    let stopped_at = Instant::now();

    let client = Client::connect(survivor.clone()).await.expect("connect");
    send_numbered(&client, EVENTS, 100..200, 2).await;
    for (group, seen, _, _) in &members {
        let deadline = Instant::now() + STEP_LIMIT;
        while !(100..200).all(|seq| seen_now(seen).contains(&seq)) {
            assert!(
                Instant::now() < deadline,
                "group {group} did not go on after broker {victim} stopped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for ((group, seen, _, _), before) in members.iter().zip(handed_out_before) {
        let again = seen_now(seen)[before..]
            .iter()
            .filter(|seq| **seq < 100)
            .count();
        assert_eq!(
            again, 0,
            "group {group}: records committed before broker {victim} stopped were handed out again"
        );
    }
    eprintln!(
        "broker {victim} stopped: every group went on within {:?}",
        stopped_at.elapsed()
    );
    let moved = client
        .find_coordinator(&by_broker[&victim])
        .await
        .expect("find the moved group's coordinator");
    assert_ne!(
        moved.node_id, victim,
        "the stopped broker's group did not move"
    );
    let listed: Vec<String> = groups
        .list_groups()
        .await
        .expect("list the groups")
        .into_iter()
        .map(|summary| summary.group)
        .collect();
    for group in by_broker.values() {
        assert!(listed.contains(group), "{group} not in {listed:?}");
    }
    for (_, _, handle, task) in members {
        handle.shutdown();
        let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    }
    cluster.shutdown().await.expect("a clean shutdown");
}

/// A coordinator cut off from the other brokers (it still takes clients'
/// calls) stops coordinating its groups within about a second, so it hands
/// out nothing the next coordinator hands out too; the metadata leader
/// gives its slot to another broker, where the group's member joins again
/// by itself and goes on from its commits. Healed, the broker takes group
/// calls again only for slots it is given anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_cut_off_from_the_cluster_stops_and_its_group_moves() {
    const EVENTS: &str = "cut-events";
    let (cluster, endpoints, client) = cluster_with_topic(EVENTS, 1, 3).await;
    send_numbered(&client, EVENTS, 0..50, 1).await;

    // A group coordinated by a broker that leads neither the metadata nor
    // the partition: what is cut off is the coordinator alone.
    let described = client
        .describe_cluster()
        .await
        .expect("describe the cluster");
    let leaders = [
        described.metadata_leader.expect("a metadata leader"),
        described.partitions[0].leader,
    ];
    let (group, cut) = group_coordinated_off(&client, "cut", &leaders).await;
    let cut_endpoint = endpoints[usize::try_from(cut - 1).expect("an index")].clone();
    let majority = endpoints
        .iter()
        .enumerate()
        .find(|(index, _)| *index as u64 + 1 != cut)
        .map(|(_, endpoint)| endpoint.clone())
        .expect("another broker");

    let seen = Seen::default();
    let (handle, task) = numbered_member(&majority, &group, EVENTS, seen.clone()).await;
    let groups = GroupClient::connect(majority.clone())
        .await
        .expect("connect");
    let committed_all = |expected: i64| {
        let groups = groups.clone();
        let group = group.clone();
        async move {
            let deadline = Instant::now() + STEP_LIMIT;
            loop {
                let committed = groups.fetch_offsets(&group, &[]).await;
                if let Ok(committed) = &committed
                    && committed.len() == 1
                    && committed.iter().all(|p| p.offset == expected)
                {
                    return;
                }
                assert!(Instant::now() < deadline, "committed: {committed:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    committed_all(50).await;

    // Asked of a broker of the majority from now on.
    let client = Client::connect(majority.clone()).await.expect("connect");
    cluster.isolate(cut);
    let isolated_at = Instant::now();
    // The cut-off broker refuses the group's calls once its leases lapse.
    let mut at_cut = brook_proto::group_service_client::GroupServiceClient::connect(cut_endpoint)
        .await
        .expect("connect to the cut-off broker");
    loop {
        let answer = at_cut
            .fetch_offsets(brook_proto::FetchOffsetsRequest {
                group: group.clone(),
                partitions: Vec::new(),
            })
            .await;
        match answer {
            Err(status)
                if status
                    .message()
                    .contains("does not coordinate consumer groups") =>
            {
                break;
            }
            other => assert!(
                isolated_at.elapsed() < Duration::from_secs(3),
                "broker {cut} still coordinates {group} {:?} after it was cut off: {other:?}",
                isolated_at.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_after = isolated_at.elapsed();
    // Another broker coordinates it, and the member goes on there.
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        if let Ok(found) = client.find_coordinator(&group).await
            && found.node_id != cut
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{group} never moved off broker {cut}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved_after = isolated_at.elapsed();
    eprintln!(
        "broker {cut} cut off: stopped coordinating {group} after {stopped_after:?}, another broker had it after {moved_after:?}"
    );
    assert!(
        stopped_after < moved_after,
        "the group moved ({moved_after:?}) before broker {cut} stopped coordinating it ({stopped_after:?})"
    );
    let before = seen.lock().unwrap_or_else(PoisonError::into_inner).len();
    send_numbered(&client, EVENTS, 50..100, 1).await;
    committed_all(100).await;
    let again = seen.lock().unwrap_or_else(PoisonError::into_inner)[before..]
        .iter()
        .filter(|seq| **seq < 50)
        .count();
    assert_eq!(
        again, 0,
        "records committed before the cut were handed out again"
    );
    cluster.heal(cut);
    handle.shutdown();
    let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    cluster.shutdown().await.expect("a clean shutdown");
}

/// A group coordinated by a broker that does not lead the metadata keeps
/// its member and generation while it commits steadily: the brokers'
/// coordination does not end sessions when nothing failed (a follower a
/// little behind the metadata leader goes on coordinating).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_steady_group_keeps_its_session_under_commits() {
    const EVENTS: &str = "steady-events";
    let (cluster, endpoints, client) = cluster_with_topic(EVENTS, 2, 3).await;
    let leader = client
        .describe_cluster()
        .await
        .expect("describe the cluster")
        .metadata_leader
        .expect("a metadata leader");
    let (group, _) = group_coordinated_off(&client, "steady", &[leader]).await;
    let seen = Seen::default();
    let (handle, task) = numbered_member(&endpoints[0], &group, EVENTS, seen.clone()).await;
    let groups = GroupClient::connect(endpoints[0].clone())
        .await
        .expect("connect");
    send_numbered(&client, EVENTS, 0..20, 2).await;
    let deadline = Instant::now() + STEP_LIMIT;
    let before = loop {
        let described = groups.describe_group(&group).await.expect("describe");
        if described.members.len() == 1 && described.partitions.iter().all(|p| p.lag == 0) {
            break described;
        }
        assert!(
            Instant::now() < deadline,
            "the member never caught up: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Records, and so commits, through the metadata group for a while.
    send_numbered(&client, EVENTS, 20..400, 2).await;
    let after = groups.describe_group(&group).await.expect("describe");
    assert_eq!(
        (after.generation, &after.members[0].member_id),
        (before.generation, &before.members[0].member_id),
        "the group's session ended or rebalanced while nothing failed"
    );
    handle.shutdown();
    let _ = tokio::time::timeout(STEP_LIMIT, task).await;
    cluster.shutdown().await.expect("a clean shutdown");
}

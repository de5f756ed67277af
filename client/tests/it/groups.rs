//! Group members against a real in-process broker: members joining and
//! dying while records flow (every record handled, duplicates only where a
//! dead member had not committed, never two owners), incremental moves,
//! fenced commits, handler failure policies, manual mode, and re-joining
//! after a broken session. Short session timeouts (500 ms) keep it quick.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brook_broker::EmbeddedBroker;
use brook_client::StatusCode as Code;
use brook_client::{
    ClientError, ConsumedRecord, FailurePolicy, FetchOptions, GroupClient, GroupConfig,
    GroupConsumer, GroupError, GroupHandle, NewRecord, OffsetReset, PartitionOffset, TopicConfig,
    TopicPartition,
};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);
const SESSION: Duration = Duration::from_millis(500);

async fn start(topic: &str, partitions: u32) -> (EmbeddedBroker, GroupClient) {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let client = GroupClient::connect(broker.endpoint())
        .await
        .expect("connect");
    client
        .client()
        .create_topic(topic, partitions, TopicConfig::default())
        .await
        .expect("create topic");
    (broker, client)
}

fn config(group: &str, topic: &str, name: &str) -> GroupConfig {
    GroupConfig::new(group, [topic])
        .with_client_id(name.to_owned())
        .with_session_timeout(SESSION)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_commit_interval(Duration::from_millis(100))
        .with_max_wait(Duration::from_millis(100))
}

async fn produce(client: &GroupClient, topic: &str, partition: u32, from: usize, to: usize) {
    let records: Vec<NewRecord> = (from..to)
        .map(|i| NewRecord {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(format!("p{partition}-{i}"))),
            headers: vec![],
        })
        .collect();
    for batch in records.chunks(500) {
        client
            .client()
            .produce(topic, partition, batch)
            .await
            .expect("produce");
    }
}

/// Polls `condition` every 10 ms until it holds; panics after `LIMIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What every member did, for the checks at the end.
#[derive(Default)]
struct Log {
    /// (member, partition, offset, when the handler finished).
    handled: Mutex<Vec<(String, u32, i64, Instant)>>,
    /// The last offset each member committed per partition.
    committed: Mutex<HashMap<(String, u32), i64>>,
    /// Partitions each member had revoked (or lost), in total.
    revoked: Mutex<HashMap<String, usize>>,
    /// (member, when, partitions) per assignment callback.
    assigned: Mutex<Vec<(String, Instant, Vec<TopicPartition>)>>,
}

impl Log {
    fn distinct(&self) -> usize {
        self.handled
            .lock()
            .iter()
            .map(|(_, p, o, _)| (*p, *o))
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn first_record_of(&self, member: &str) -> Option<Instant> {
        self.handled
            .lock()
            .iter()
            .filter(|(m, ..)| m == member)
            .map(|(.., at)| *at)
            .min()
    }
}

/// A member running its handler loop in a task.
struct Running {
    name: String,
    handle: GroupHandle,
    task: JoinHandle<Result<(), GroupError>>,
    joined_at: Instant,
}

impl Running {
    async fn stop(self) {
        self.handle.shutdown();
        timeout(LIMIT, self.task)
            .await
            .expect("the member stops in time")
            .expect("the member task")
            .unwrap_or_else(|e| panic!("member {} failed: {e}", self.name));
    }
}

/// Joins `name` and runs it with a handler that logs what it handled.
async fn run_member(client: &GroupClient, config: GroupConfig, log: &Arc<Log>) -> Running {
    let name = config.client_id.clone();
    let joined_at = Instant::now();
    let member = GroupConsumer::join(client.clone(), config)
        .await
        .expect("join");
    let (committed, revoked, assigned) = (log.clone(), log.clone(), log.clone());
    let (c_name, r_name, a_name) = (name.clone(), name.clone(), name.clone());
    let member = member
        .on_committed(move |offsets| {
            let mut committed = committed.committed.lock();
            for o in offsets {
                committed.insert((c_name.clone(), o.partition), o.offset);
            }
        })
        .on_revoked(move |partitions| {
            *revoked.revoked.lock().entry(r_name.clone()).or_default() += partitions.len();
        })
        .on_assigned(move |partitions| {
            assigned
                .assigned
                .lock()
                .push((a_name.clone(), Instant::now(), partitions.to_vec()));
        });
    let handle = member.handle();
    let handled = log.clone();
    let h_name = name.clone();
    let task = tokio::spawn(member.run(move |consumed: ConsumedRecord| {
        let handled = handled.clone();
        let name = h_name.clone();
        async move {
            tokio::task::yield_now().await;
            handled.handled.lock().push((
                name,
                consumed.partition,
                consumed.record.offset,
                Instant::now(),
            ));
            Ok::<(), std::io::Error>(())
        }
    }));
    Running {
        name,
        handle,
        task,
        joined_at,
    }
}

/// Checks, every millisecond until stopped, that no partition is held by
/// two members at once; returns how many snapshots it checked.
fn watch_ownership(
    broker: &EmbeddedBroker,
    group: &str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<usize> {
    let broker = broker.broker().clone();
    let group = group.to_owned();
    tokio::spawn(async move {
        let mut snapshots = 0;
        while !stop.load(Ordering::Acquire) {
            let (generation, held) = broker.group_ownership(&group);
            let mut holders: BTreeMap<(String, u32), &str> = BTreeMap::new();
            for (partition, member, _revoking) in &held {
                let key = (partition.topic.clone(), partition.partition);
                if let Some(other) = holders.insert(key, member) {
                    panic!(
                        "generation {generation}: {}/{} held by {other} and {member}",
                        partition.topic, partition.partition
                    );
                }
            }
            snapshots += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        snapshots
    })
}

/// The longest pause, in a window, of each member on the partitions it
/// kept across a rebalance: `(longest gap in the window, longest gap in a
/// window as long just before)`.
fn pauses(log: &Log, member: &str, from: Instant, to: Instant) -> Option<(Duration, Duration)> {
    let handled = log.handled.lock();
    let before = from.checked_sub(to - from).unwrap_or(from);
    let mut times: BTreeMap<u32, Vec<Instant>> = BTreeMap::new();
    for (m, partition, _, at) in handled.iter() {
        if m == member && *at >= before && *at <= to {
            times.entry(*partition).or_default().push(*at);
        }
    }
    let mut during = Duration::ZERO;
    let mut baseline = Duration::ZERO;
    let mut kept = false;
    for at in times.values_mut() {
        at.sort();
        // Kept: handled both before the window and at its end.
        let early = at.iter().any(|t| *t < from);
        let late_from = to.checked_sub((to - from) / 4).unwrap_or(from);
        let late = at.iter().any(|t| *t > late_from);
        if !(early && late) {
            continue;
        }
        kept = true;
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            if pair[1] >= from {
                during = during.max(gap);
            } else {
                baseline = baseline.max(gap);
            }
        }
    }
    kept.then_some((during, baseline))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(
    clippy::many_single_char_names,
    reason = "members a to d, as in the scenario"
)]
async fn members_join_and_die_while_records_flow_and_every_record_is_handled() {
    const PARTITIONS: u32 = 6;
    const ROUNDS: usize = 100;
    const PER_PARTITION_PER_ROUND: usize = 100;
    const TOTAL: usize = ROUNDS * PER_PARTITION_PER_ROUND * PARTITIONS as usize;
    assert_eq!(TOTAL, 60_000);
    let (broker, client) = start("flow", PARTITIONS).await;
    let group = "flowing";
    let log = Arc::new(Log::default());
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = watch_ownership(&broker, group, stop_watching.clone());

    let rounds_done = Arc::new(AtomicUsize::new(0));
    let producer = {
        let client = client.clone();
        let rounds_done = rounds_done.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                let from = round * PER_PARTITION_PER_ROUND;
                for partition in 0..PARTITIONS {
                    produce(
                        &client,
                        "flow",
                        partition,
                        from,
                        from + PER_PARTITION_PER_ROUND,
                    )
                    .await;
                }
                rounds_done.store(round + 1, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let round_reached = |n: usize| {
        let rounds_done = rounds_done.clone();
        move || rounds_done.load(Ordering::Acquire) >= n
    };

    let a = run_member(&client, config(group, "flow", "a"), &log).await;
    eventually("round 15", round_reached(15)).await;
    let b = run_member(&client, config(group, "flow", "b"), &log).await;
    eventually("round 30", round_reached(30)).await;
    let c = run_member(&client, config(group, "flow", "c"), &log).await;
    eventually("b handles records", || log.first_record_of("b").is_some()).await;
    eventually("c handles records", || log.first_record_of("c").is_some()).await;
    eventually("round 50", round_reached(50)).await;

    // b dies without a word: its stream is dropped, nothing more is committed.
    b.handle.abort();
    timeout(LIMIT, b.task)
        .await
        .expect("b stops at once")
        .expect("b's task")
        .expect("an aborted member returns Ok");
    let died_at = Instant::now();
    let b_committed: HashMap<u32, i64> = log
        .committed
        .lock()
        .iter()
        .filter(|((m, _), _)| m == "b")
        .map(|((_, p), o)| (*p, *o))
        .collect();
    let b_handled_before_death = log.handled.lock().iter().filter(|(m, ..)| m == "b").count();

    eventually("round 65", round_reached(65)).await;
    let d = run_member(&client, config(group, "flow", "d"), &log).await;
    eventually("d handles records", || log.first_record_of("d").is_some()).await;

    timeout(LIMIT, producer)
        .await
        .expect("the producer finishes")
        .expect("the producer task");
    eventually("every record handled", || log.distinct() == TOTAL).await;
    let joins = [("b", b.joined_at), ("c", c.joined_at), ("d", d.joined_at)];
    let survivors = [a, c, d];
    for member in survivors {
        member.stop().await;
    }
    stop_watching.store(true, Ordering::Release);
    let snapshots = watcher.await.expect("no partition was held twice");
    assert!(snapshots > 100, "the ownership was checked throughout");

    // Every record at least once; a record handled twice was one b had
    // handled at or after its last commit of that partition.
    let handled = log.handled.lock().clone();
    assert!(b_handled_before_death > 0, "b worked before it died");
    let mut by_record: BTreeMap<(u32, i64), Vec<&str>> = BTreeMap::new();
    for (member, partition, offset, _) in &handled {
        by_record
            .entry((*partition, *offset))
            .or_default()
            .push(member);
    }
    assert_eq!(by_record.len(), TOTAL);
    let mut duplicates = 0;
    for ((partition, offset), members) in &by_record {
        if members.len() == 1 {
            continue;
        }
        duplicates += members.len() - 1;
        let others = members.iter().filter(|m| **m != "b").count();
        assert!(
            members.contains(&"b") && others == 1 && members.len() == 2,
            "{partition}@{offset} handled by {members:?}: only a record the dead member \
             handled may be handled again, once"
        );
        let last_commit = b_committed.get(partition).copied().unwrap_or(0);
        assert!(
            *offset >= last_commit,
            "{partition}@{offset} was handled again although b committed up to {last_commit}"
        );
    }
    println!(
        "records: {TOTAL} handled, {duplicates} handled twice, all by b and again by its \
         successor (b handled {b_handled_before_death}, its last commits were {b_committed:?}, \
         it died {:?} before the end)",
        died_at.elapsed()
    );

    // The rebalance figures.
    for (name, joined_at) in joins {
        let first = log.first_record_of(name).expect("a first record");
        let to_first = first - joined_at;
        let window_end = first + Duration::from_millis(100);
        let mut paused = Vec::new();
        for other in ["a", "b", "c", "d"] {
            if other == name {
                continue;
            }
            if let Some((during, baseline)) = pauses(&log, other, joined_at, window_end) {
                paused.push(format!(
                    "{other}: longest pause {during:?} (baseline {baseline:?})"
                ));
            }
        }
        println!(
            "join of {name}: first record after {to_first:?}; kept partitions of the others: {}",
            paused.join(", ")
        );
    }
    {
        let revoked = log.revoked.lock();
        println!("partitions revoked per member: {revoked:?}");
    }

    // Everything is committed: lag 0 everywhere.
    let description = client.describe_group(group).await.expect("describe");
    assert_eq!(description.state, "empty");
    assert_eq!(description.partitions.len(), PARTITIONS as usize);
    for partition in &description.partitions {
        assert_eq!(partition.lag, 0, "{partition:?}");
        assert_eq!(
            partition.committed_offset,
            Some((ROUNDS * PER_PARTITION_PER_ROUND) as i64)
        );
    }

    // A second run of the group handles nothing again.
    let second = Arc::new(Log::default());
    let e = run_member(&client, config(group, "flow", "e"), &second).await;
    eventually("e is assigned every partition", || {
        second
            .assigned
            .lock()
            .iter()
            .map(|(_, _, p)| p.len())
            .sum::<usize>()
            == PARTITIONS as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.stop().await;
    assert_eq!(second.handled.lock().len(), 0, "nothing is handled twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_member_takes_three_of_twelve_partitions_and_only_those_move() {
    let (_broker, client) = start("twelve", 12).await;
    let group = "incremental";
    let log = Arc::new(Log::default());
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(run_member(&client, config(group, "twelve", name), &log).await);
    }
    let stable_with = |count: usize, each: &'static [usize]| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + LIMIT;
            loop {
                let d = client.describe_group(group).await.expect("describe");
                let mut sizes: Vec<usize> = d
                    .members
                    .iter()
                    .map(|m| m.assigned.len() + m.revoking.len())
                    .collect();
                sizes.sort_unstable();
                if d.state == "stable" && d.members.len() == count && sizes == each {
                    return;
                }
                assert!(Instant::now() < deadline, "never stable: {d:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    stable_with(3, &[4, 4, 4]).await;
    // Moves while the group formed are not counted.
    let revoked_before: usize = log.revoked.lock().values().sum();

    members.push(run_member(&client, config(group, "twelve", "d"), &log).await);
    stable_with(4, &[3, 3, 3, 3]).await;
    eventually("d's partitions assigned on the client", || {
        log.assigned
            .lock()
            .iter()
            .filter(|(m, ..)| m == "d")
            .map(|(.., p)| p.len())
            .sum::<usize>()
            == 3
    })
    .await;
    let revoked_after: usize = log.revoked.lock().values().sum();
    assert_eq!(
        revoked_after - revoked_before,
        3,
        "only the partitions d gets move"
    );
    for member in members {
        member.stop().await;
    }
}

#[tokio::test]
async fn commits_from_an_old_generation_or_a_removed_member_are_refused_and_change_nothing() {
    let (_broker, client) = start("fenced", 1).await;
    produce(&client, "fenced", 0, 0, 10).await;
    let mut member = GroupConsumer::join(client.clone(), config("g", "fenced", "a"))
        .await
        .expect("join");
    let first = timeout(LIMIT, member.next())
        .await
        .expect("a record in time")
        .expect("the stream goes on")
        .expect("a record");
    member.commit(&first).await.expect("a current commit");
    let member_id = member.member_id().expect("a member id");
    let generation = member.generation();
    let committed = || async {
        client
            .fetch_offsets("g", &[TopicPartition::new("fenced", 0)])
            .await
            .expect("fetch offsets")
    };
    let expected = vec![PartitionOffset {
        topic: "fenced".into(),
        partition: 0,
        offset: 1,
    }];
    assert_eq!(committed().await, expected);

    let offsets = [PartitionOffset {
        topic: "fenced".into(),
        partition: 0,
        offset: 7,
    }];
    let refused = |result: Result<(), ClientError>, what: &str| {
        let error = result.expect_err(what);
        assert_eq!(
            error.code(),
            Some(Code::FailedPrecondition),
            "{what}: {error}"
        );
        assert!(!error.is_retryable(), "{what}");
        println!("{what}: {error}");
    };
    for stale in [generation.saturating_sub(1), generation + 1] {
        refused(
            client
                .commit_offsets("g", &member_id, stale, &offsets)
                .await,
            "another generation",
        );
    }
    refused(
        client
            .commit_offsets("g", "nobody", generation, &offsets)
            .await,
        "an unknown member",
    );
    assert_eq!(
        committed().await,
        expected,
        "refused commits change nothing"
    );

    member.abort();
    let deadline = Instant::now() + LIMIT;
    while !client
        .describe_group("g")
        .await
        .expect("describe")
        .members
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the aborted member is removed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    refused(
        client
            .commit_offsets("g", &member_id, generation, &offsets)
            .await,
        "a removed member",
    );
    assert_eq!(committed().await, expected);
}

/// Runs a one-partition group over records 0..10 whose handler fails on
/// offset 3 (`always`) or only on its first two attempts.
async fn run_failing(
    policy: FailurePolicy,
    always: bool,
) -> (
    EmbeddedBroker,
    GroupClient,
    Result<(), GroupError>,
    Vec<i64>,
    u32,
) {
    let (broker, client) = start("work", 1).await;
    client
        .client()
        .create_topic("work.dlq", 1, TopicConfig::default())
        .await
        .expect("create the dead-letter topic");
    produce(&client, "work", 0, 0, 10).await;
    let config = config("workers", "work", "w")
        .with_handler_retries(2)
        .with_failure_policy(policy);
    let member = GroupConsumer::join(client.clone(), config)
        .await
        .expect("join");
    let handle = member.handle();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicU32::new(0));
    let task = {
        let (handled, attempts) = (handled.clone(), attempts.clone());
        tokio::spawn(member.run(move |consumed: ConsumedRecord| {
            let (handled, attempts) = (handled.clone(), attempts.clone());
            async move {
                let offset = consumed.record.offset;
                if offset == 3 {
                    let attempt = attempts.fetch_add(1, Ordering::AcqRel);
                    if always || attempt < 2 {
                        return Err(format!("cannot handle offset 3 (attempt {attempt})"));
                    }
                }
                handled.lock().push(offset);
                Ok(())
            }
        }))
    };
    let deadline = Instant::now() + LIMIT;
    while !task.is_finished() && handled.lock().len() < 9 {
        assert!(Instant::now() < deadline, "the member got stuck");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown();
    let result = timeout(LIMIT, task)
        .await
        .expect("run returns")
        .expect("the run task");
    let handled = handled.lock().clone();
    (
        broker,
        client,
        result,
        handled,
        attempts.load(Ordering::Acquire),
    )
}

async fn committed(client: &GroupClient) -> Option<i64> {
    client
        .fetch_offsets("workers", &[TopicPartition::new("work", 0)])
        .await
        .expect("fetch offsets")
        .first()
        .map(|o| o.offset)
}

#[tokio::test]
async fn a_handler_that_fails_twice_then_succeeds_is_retried() {
    let (_broker, client, result, handled, attempts) =
        run_failing(FailurePolicy::Fail, false).await;
    result.expect("no failure reaches the policy");
    assert_eq!(attempts, 3);
    assert_eq!(handled, (0..10).collect::<Vec<_>>());
    assert_eq!(committed(&client).await, Some(10));
}

#[tokio::test]
async fn a_record_whose_handler_keeps_failing_is_skipped_under_skip() {
    let (_broker, client, result, handled, attempts) = run_failing(FailurePolicy::Skip, true).await;
    result.expect("skipping is not a failure");
    assert_eq!(attempts, 3, "one attempt and two retries");
    assert_eq!(handled, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(committed(&client).await, Some(10));
}

#[tokio::test]
async fn run_returns_the_error_under_fail_after_committing_what_was_done() {
    let (_broker, client, result, handled, attempts) = run_failing(FailurePolicy::Fail, true).await;
    let error = result.expect_err("the handler's error");
    match &error {
        GroupError::Handler {
            topic,
            partition,
            offset,
            attempts,
            source,
        } => {
            assert_eq!((topic.as_str(), *partition, *offset), ("work", 0, 3));
            assert_eq!(*attempts, 3);
            assert_eq!(source.to_string(), "cannot handle offset 3 (attempt 2)");
        }
        other => panic!("not a handler error: {other:?}"),
    }
    assert_eq!(attempts, 3);
    assert_eq!(
        handled,
        [0, 1, 2],
        "a partition's records are handled in order"
    );
    assert_eq!(
        committed(&client).await,
        Some(3),
        "committed up to the failure"
    );
    // The member left: the group is empty.
    assert_eq!(
        client
            .describe_group("workers")
            .await
            .expect("describe")
            .state,
        "empty"
    );
}

#[tokio::test]
async fn a_record_whose_handler_keeps_failing_is_dead_lettered_with_the_reason() {
    let policy = FailurePolicy::DeadLetter {
        topic: "work.dlq".into(),
    };
    let (_broker, client, result, handled, _) = run_failing(policy, true).await;
    result.expect("dead-lettering is not a failure");
    assert_eq!(handled, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(committed(&client).await, Some(10));
    let letters = client
        .client()
        .fetch("work.dlq", 0, 0, FetchOptions::default())
        .await
        .expect("fetch the dead letters")
        .records;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.value.as_deref(), Some(&b"p0-3"[..]));
    let header = |key: &str| {
        letter
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    assert_eq!(
        header("deadLetterReason").as_deref(),
        Some("cannot handle offset 3 (attempt 2)")
    );
    assert_eq!(header("originalTopic").as_deref(), Some("work"));
    assert_eq!(header("originalOffset").as_deref(), Some("3"));
}

#[tokio::test]
async fn manual_mode_hands_out_records_and_commits_what_the_application_says() {
    let (_broker, client) = start("manual", 2).await;
    produce(&client, "manual", 0, 0, 5).await;
    produce(&client, "manual", 1, 0, 5).await;
    let assigned = Arc::new(Mutex::new(Vec::new()));
    let seen = assigned.clone();
    let mut member = GroupConsumer::join(client.clone(), config("m", "manual", "a"))
        .await
        .expect("join")
        .on_assigned(move |p| seen.lock().extend_from_slice(p));
    let mut values = BTreeSet::new();
    while values.len() < 10 {
        let record = timeout(LIMIT, member.next())
            .await
            .expect("a record in time")
            .expect("the stream goes on")
            .expect("a record");
        values.insert(
            String::from_utf8_lossy(record.record.value.as_deref().unwrap_or_default())
                .into_owned(),
        );
        if record.record.offset == 2 {
            member.commit(&record).await.expect("commit");
        }
    }
    assert_eq!(assigned.lock().len(), 2);
    assert_eq!(member.assignment().len(), 2);
    member.close().await.expect("close");
    let description = client.describe_group("m").await.expect("describe");
    assert_eq!(description.state, "empty", "close left the group");
    let committed: Vec<Option<i64>> = description
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(committed, [Some(3), Some(3)]);
    assert!(description.partitions.iter().all(|p| p.lag == 2));

    // The next member starts at the commits.
    let mut next = GroupConsumer::join(client.clone(), config("m", "manual", "b"))
        .await
        .expect("join again");
    let record = timeout(LIMIT, next.next())
        .await
        .expect("a record in time")
        .expect("the stream goes on")
        .expect("a record");
    assert_eq!(record.record.offset, 3);
    next.close().await.expect("close");
}

#[tokio::test]
async fn joining_a_missing_topic_fails_clearly() {
    let (_broker, client) = start("present", 1).await;
    let error = GroupConsumer::join(client.clone(), config("g", "absent", "a"))
        .await
        .expect_err("a missing topic");
    let GroupError::Client(error) = &error else {
        panic!("not a broker error: {error:?}");
    };
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_session_breaks_joins_again_and_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .start()
        .await
        .expect("broker starts");
    let addr = broker.addr();
    let client = GroupClient::connect(broker.endpoint())
        .await
        .expect("connect");
    client
        .client()
        .create_topic("restarted", 1, TopicConfig::default())
        .await
        .expect("create topic");
    produce(&client, "restarted", 0, 0, 5).await;
    let log = Arc::new(Log::default());
    let member = run_member(&client, config("r", "restarted", "a"), &log).await;
    eventually("the first records", || log.distinct() == 5).await;
    eventually("a commit", || {
        log.committed.lock().get(&("a".to_owned(), 0)) == Some(&5)
    })
    .await;

    broker.shutdown().await.expect("the broker stops");
    let broker = EmbeddedBroker::builder()
        .data_dir(dir.path())
        .listen(addr)
        .start()
        .await
        .expect("the broker starts again");
    // The client's connection broke with the old broker: wait until a call
    // goes through again (each failure is retryable) before producing.
    let deadline = Instant::now() + LIMIT;
    while let Err(error) = client.client().list_topics().await {
        assert!(error.is_retryable(), "{error:?}");
        assert!(Instant::now() < deadline, "the client never reconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    produce(&client, "restarted", 0, 5, 10).await;
    eventually("records after the restart", || log.distinct() == 10).await;
    assert_eq!(log.assigned.lock().len(), 2, "assigned once per session");
    assert!(
        log.revoked.lock().get("a").is_some(),
        "the lost partition was reported"
    );
    member.stop().await;
    let committed = client
        .fetch_offsets("r", &[TopicPartition::new("restarted", 0)])
        .await
        .expect("fetch offsets");
    assert_eq!(committed[0].offset, 10);
    drop(broker);
}

//! Consumer groups over raw gRPC: joining and assignment, the incremental
//! rebalance with its revocation handshake, session timeouts, fenced
//! commits, group administration, bad sessions, and offsets across a
//! restart. Short session timeouts (300 ms) stand in for time travel, since
//! the broker runs on real sockets.

use crate::common;
mod membership;
mod offsets;
mod raw;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_proto::group_request::Kind;
use brook_proto::group_response;
use brook_proto::group_service_client::GroupServiceClient;
use brook_proto::reset_offsets_request::To;
use brook_proto::{
    Assignment, CommitOffsetsRequest, DeleteGroupRequest, DescribeGroupRequest,
    FetchOffsetsRequest, GroupRequest, GroupResponse, Heartbeat, JoinGroup, Joined, LeaveGroup,
    ListGroupsRequest, PartitionOffset, ResetOffsetsRequest, RevocationDone, TopicConfig,
};
use common::{Clients, WAIT, batch, within};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

const SHORT_SESSION_MS: u32 = 300;

async fn setup(
    topic: &str,
    partitions: u32,
) -> anyhow::Result<(EmbeddedBroker, Clients, GroupServiceClient<Channel>)> {
    let embedded = EmbeddedBroker::start().await?;
    let (clients, groups) = connect(&embedded, topic, partitions).await?;
    Ok((embedded, clients, groups))
}

async fn connect(
    embedded: &EmbeddedBroker,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<(Clients, GroupServiceClient<Channel>)> {
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    if partitions > 0 {
        clients
            .create_topic(topic, partitions, TopicConfig::default())
            .await?;
    }
    let channel = Channel::from_shared(embedded.endpoint())?.connect().await?;
    Ok((clients, GroupServiceClient::new(channel)))
}

fn join(group: &str, topics: &[&str], session_timeout_ms: u32) -> GroupRequest {
    GroupRequest {
        kind: Some(Kind::Join(JoinGroup {
            group: group.to_owned(),
            topics: topics.iter().map(|&t| t.to_owned()).collect(),
            session_timeout_ms,
            client_id: "groups-test".to_owned(),
        })),
    }
}

fn tp(topic: &str, partition: u32) -> brook_proto::TopicPartition {
    brook_proto::TopicPartition {
        topic: topic.to_owned(),
        partition,
    }
}

fn set(partitions: &[brook_proto::TopicPartition]) -> BTreeSet<(String, u32)> {
    partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition))
        .collect()
}

fn assert_status(status: &Status, code: Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "`{}` does not mention `{needle}`",
            status.message()
        );
    }
}

/// Polls `condition` every 5 ms, failing after `WAIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !condition() {
        ensure!(
            started.elapsed() < WAIT,
            "{what} did not happen within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A member's session driven by the test.
struct Session {
    requests: mpsc::Sender<GroupRequest>,
    responses: Streaming<GroupResponse>,
}

impl Session {
    async fn open(
        client: &mut GroupServiceClient<Channel>,
        first: GroupRequest,
    ) -> anyhow::Result<Self> {
        let (requests, outbound) = mpsc::channel(16);
        requests.send(first).await?;
        let responses = within(
            "open a session",
            client.session(ReceiverStream::new(outbound)),
        )
        .await??
        .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    async fn next(&mut self) -> anyhow::Result<Result<Option<GroupResponse>, Status>> {
        within("the next session message", self.responses.message()).await
    }

    async fn joined(&mut self) -> anyhow::Result<Joined> {
        match self.next().await?? {
            Some(GroupResponse {
                kind: Some(group_response::Kind::Joined(joined)),
            }) => Ok(joined),
            other => bail!("expected `joined`, got {other:?}"),
        }
    }

    async fn assignment(&mut self) -> anyhow::Result<Assignment> {
        match self.next().await?? {
            Some(GroupResponse {
                kind: Some(group_response::Kind::Assignment(assignment)),
            }) => Ok(assignment),
            other => bail!("expected an assignment, got {other:?}"),
        }
    }

    /// Reads until the stream ends with an error status.
    async fn end_status(&mut self) -> anyhow::Result<Status> {
        loop {
            match self.next().await? {
                Ok(Some(_)) => {}
                Ok(None) => bail!("the session ended without an error"),
                Err(status) => return Ok(status),
            }
        }
    }

    async fn send(&self, kind: Kind) -> anyhow::Result<()> {
        self.requests
            .send(GroupRequest { kind: Some(kind) })
            .await
            .context("the session's request stream is closed")
    }

    async fn revoked(&self, assignment: &Assignment) -> anyhow::Result<()> {
        self.send(Kind::Revoked(RevocationDone {
            generation: assignment.generation,
            partitions: assignment.revoke.clone(),
        }))
        .await
    }
}

/// Joins and returns the session with its id and first assignment.
async fn member(
    client: &mut GroupServiceClient<Channel>,
    group: &str,
    topics: &[&str],
    session_timeout_ms: u32,
) -> anyhow::Result<(Session, Joined, Assignment)> {
    let mut session = Session::open(client, join(group, topics, session_timeout_ms)).await?;
    let joined = session.joined().await?;
    let first = session.assignment().await?;
    assert_eq!(first.generation, joined.generation);
    Ok((session, joined, first))
}

/// A member that acknowledges every revocation at once and logs its
/// assignments.
struct AutoMember {
    id: String,
    log: Arc<Mutex<Vec<Assignment>>>,
    task: JoinHandle<()>,
    _requests: mpsc::Sender<GroupRequest>,
}

impl AutoMember {
    async fn join(
        client: &mut GroupServiceClient<Channel>,
        group: &str,
        topics: &[&str],
    ) -> anyhow::Result<Self> {
        let (mut session, joined, first) = member(client, group, topics, 0).await?;
        let log = Arc::new(Mutex::new(vec![first.clone()]));
        if !first.revoke.is_empty() {
            session.revoked(&first).await?;
        }
        let requests = session.requests.clone();
        let logged = log.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = session.responses.message().await {
                if let Some(group_response::Kind::Assignment(a)) = response.kind {
                    logged.lock().push(a.clone());
                    if !a.revoke.is_empty() && session.revoked(&a).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            id: joined.member_id,
            log,
            task,
            _requests: requests,
        })
    }

    fn assigned(&self) -> BTreeSet<(String, u32)> {
        self.log
            .lock()
            .last()
            .map(|a| set(&a.assigned))
            .unwrap_or_default()
    }

    fn revoked_since(&self, from: usize) -> usize {
        self.log.lock()[from..].iter().map(|a| a.revoke.len()).sum()
    }
}

impl Drop for AutoMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls the broker's own ownership table until stopped; fails on a
/// partition held by two members.
fn watch_ownership(
    embedded: &EmbeddedBroker,
    group: &str,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    JoinHandle<anyhow::Result<usize>>,
) {
    let broker = embedded.broker().clone();
    let group = group.to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut polls = 0;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let (generation, owners) = broker.group_ownership(&group);
            let mut seen = BTreeSet::new();
            for (partition, member, _) in &owners {
                ensure!(
                    seen.insert(partition.clone()),
                    "{partition} held twice in generation {generation} (second holder `{member}`)"
                );
            }
            polls += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(polls)
    });
    (stop, task)
}

fn is_stable(embedded: &EmbeddedBroker, group: &str, members: usize) -> bool {
    embedded.broker().describe_group(group).is_some_and(|g| {
        g.members.len() == members && g.state == brook_broker::group::GroupState::Stable
    })
}

//! A broker's member of the metadata group: its Raft, storage and network,
//! started together, and the operations the broker needs of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::cluster::raft_service_server::RaftServiceServer;
use brook_proto::cluster::{CoordinationRequest, PingRequest, PingResponse, RaftPayload};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use serde::{Deserialize, Serialize};

use crate::command::{MetaCommand, MetaResponse};
use crate::coordinators::LeaseBoard;
use crate::membership::{learners, remove_learners, replace_voters, voters};
use crate::network::client::{Connector, Network, peer_request};
use crate::network::service::RaftServer;
use crate::partition::ElectionTimeouts;
use crate::partition::PartitionGroups;
use crate::quorum_silence::QuorumSilence;
use crate::state::ClusterState;
use crate::store::{LogStore, StateMachine};
use crate::types::{BrokerNode, MetaRaft, MetaRaftConfig, NodeId};

/// How long a change forwarded to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a broker being added has to catch up with the metadata group.
const JOIN_CATCH_UP: Duration = Duration::from_secs(60);
/// How long a change of voters forwarded to the leader may take.
const MEMBERSHIP_FORWARD_TIMEOUT: Duration = Duration::from_secs(90);

/// A change of the metadata group's voters, made by its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds the broker `id`, reached at `address` and started to join
    /// (`join`), as a voter once it has caught up.
    AddBroker { id: NodeId, address: String },
    /// Takes a broker that holds no replica out of the cluster's brokers
    /// and out of the voters.
    RemoveBroker { id: NodeId },
}

/// How a broker takes part in the metadata group.
#[derive(Debug, Clone)]
pub struct MetaNodeConfig {
    pub id: NodeId,
    /// Where the group's files live (`<data dir>/cluster/meta`).
    pub dir: PathBuf,
    /// How often the leader tells followers it is alive.
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for a random time in its window
    /// stands for election; brokers are ranked by id (`(id - 1) % 4`).
    pub election: ElectionTimeouts,
    /// Committed entries beyond a snapshot that make a new one.
    pub snapshot_every: u64,
}

impl MetaNodeConfig {
    pub fn new(id: NodeId, dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            dir: dir.into(),
            heartbeat_interval: Duration::from_millis(100),
            election: ElectionTimeouts {
                first: (Duration::from_millis(400), Duration::from_millis(500)),
                stagger: Duration::from_millis(150),
                rank: u32::try_from(id.saturating_sub(1) % 4).unwrap_or(0),
            },
            snapshot_every: 10_000,
        }
    }
}

/// Why the metadata group could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("Raft group storage in {dir}: {source}")]
    Storage {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Raft group settings: {0}")]
    Config(String),
    /// The Raft stopped (a storage failure, or shutdown).
    #[error("the Raft group stopped: {0}")]
    Stopped(String),
    /// Only the leader takes changes, and the leader could not be reached.
    #[error("not the group's leader (the leader is {leader:?}){reason}")]
    NotLeader {
        leader: Option<(NodeId, BrokerNode)>,
        /// Why the leader could not be asked instead, when it was tried.
        reason: String,
    },
    #[error("the group refused the change: {0}")]
    Refused(String),
}

/// A broker's member of the metadata group.
#[derive(Clone)]
pub struct MetaNode {
    id: NodeId,
    raft: MetaRaft,
    state_machine: StateMachine,
    connector: Arc<dyn Connector>,
    /// The partition replicas this broker runs, reached through the same
    /// service.
    partitions: PartitionGroups,
    /// The slots of consumer groups this broker coordinates.
    leases: Arc<LeaseBoard>,
    /// Shared with the service, which takes changes other brokers forward.
    membership_lock: MembershipLock,
    quorum_silence: Arc<QuorumSilence>,
}

impl MetaNode {
    /// Opens the group's storage and starts its Raft; it takes part once
    /// its peers reach it and it reaches them through `connector`.
    pub async fn start(
        config: &MetaNodeConfig,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, ClusterError> {
        let storage = |source| ClusterError::Storage {
            dir: config.dir.clone(),
            source,
        };
        let state_machine = StateMachine::open(&config.dir.join("state")).map_err(storage)?;
        let durable = state_machine.clone();
        let log = LogStore::<MetaRaftConfig>::open(&config.dir.join("log"))
            .map_err(storage)?
            .with_purge_limit(Arc::new(move || durable.durable_applied()));
        let raft_config = openraft::Config {
            cluster_name: "brook-metadata".to_owned(),
            ..raft_config(
                config.heartbeat_interval,
                config.election.window(),
                config.snapshot_every,
            )
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let raft = MetaRaft::new(
            config.id,
            Arc::new(raft_config),
            Network::new(connector.clone(), ""),
            log,
            state_machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        Ok(Self {
            id: config.id,
            raft,
            state_machine,
            connector,
            partitions: PartitionGroups::default(),
            leases: Arc::default(),
            membership_lock: MembershipLock::default(),
            quorum_silence: Arc::default(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// The gRPC service that answers peers, for the metadata group and
    /// every partition group in [`MetaNode::partitions`].
    pub fn service(&self) -> RaftServiceServer<RaftServer> {
        RaftServer::new(Some(self.raft.clone()), self.partitions.clone())
            .with_leases(self.leases.clone())
            .with_membership_lock(self.membership_lock.clone())
            .into_service()
    }

    /// The slots of consumer groups this broker coordinates, as the
    /// metadata leader is told.
    pub fn leases(&self) -> &LeaseBoard {
        &self.leases
    }

    /// A channel to the peer at `address`, connecting when first used and
    /// again after it broke; for calls made over and over.
    pub fn peer_channel(&self, address: &str) -> Option<tonic::transport::Channel> {
        self.connector.channel(address).ok()
    }

    /// As the metadata leader of `term`, having applied up to `applied`
    /// and last heard the broker's answer `answered` (0: none yet): asks
    /// the broker at the end of `channel` which slots it coordinates (slot
    /// → epoch), confirming that it may go on; with them, the number of
    /// this answer, for the next ask to echo. `None` when it does not
    /// answer within `timeout`.
    pub async fn ask_coordination(
        &self,
        channel: tonic::transport::Channel,
        (term, applied): (u64, u64),
        answered: u64,
        timeout: Duration,
    ) -> Option<(BTreeMap<u32, u64>, u64)> {
        let request = CoordinationRequest {
            term,
            applied,
            answered: Some(answered),
        };
        let call = peer_request(&*self.connector, request, timeout);
        let answer = tokio::time::timeout(
            timeout,
            crate::network::raft_client(channel).coordination(call),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                Some((answer.held.into_iter().collect(), answer.answer))
            }
            _ => None,
        }
    }

    /// The partition replicas this broker runs.
    pub fn partitions(&self) -> &PartitionGroups {
        &self.partitions
    }

    /// Forms the group from its voters. Every voter may call it with the
    /// same members; a node that already belongs to a group ignores it.
    pub async fn initialize(
        &self,
        voters: BTreeMap<NodeId, BrokerNode>,
    ) -> Result<(), ClusterError> {
        initialize_result(self.raft.initialize(voters).await)
    }

    /// Commits `command` through the leader and answers once it is applied
    /// here. On a follower: [`ClusterError::NotLeader`], naming the leader
    /// when known.
    pub async fn propose(&self, command: MetaCommand) -> Result<MetaResponse, ClusterError> {
        self.raft
            .client_write(command)
            .await
            .map(|written| written.data)
            .map_err(write_failed)
    }

    /// Commits `command` through the leader, wherever it is: here, or
    /// forwarded once to the broker this one knows as leader.
    pub async fn propose_anywhere(
        &self,
        command: MetaCommand,
    ) -> Result<MetaResponse, ClusterError> {
        match self.propose(command.clone()).await {
            Err(ClusterError::NotLeader {
                leader: Some((_, leader)),
                ..
            }) => self.forward(&leader, &command).await,
            other => other,
        }
    }

    async fn forward(
        &self,
        leader: &BrokerNode,
        command: &MetaCommand,
    ) -> Result<MetaResponse, ClusterError> {
        self.forward_to(leader, command, Forwarded::Command).await
    }

    /// Changes the metadata group's voters through its leader, wherever it
    /// is: here, or forwarded once to the broker this one knows as leader.
    pub async fn change_members(
        &self,
        change: MembershipChange,
    ) -> Result<MetaResponse, ClusterError> {
        match change_members(&self.raft, &self.membership_lock, &change).await {
            Err(ClusterError::NotLeader {
                leader: Some((_, leader)),
                ..
            }) => {
                self.forward_to(&leader, &change, Forwarded::Membership)
                    .await
            }
            other => other,
        }
    }

    /// As a broker not yet in the cluster: asks the broker at `peer` to
    /// add this one, reached at `own_address`, as `AddBroker` does. Only
    /// the leader takes it (the others answer `NotLeader`); it answers
    /// once this broker has caught up and votes.
    pub async fn ask_to_be_added(
        &self,
        peer: &str,
        own_address: &str,
    ) -> Result<MetaResponse, ClusterError> {
        let change = MembershipChange::AddBroker {
            id: self.id,
            address: own_address.to_owned(),
        };
        self.forward_to(
            &BrokerNode::new(peer.to_owned()),
            &change,
            Forwarded::Membership,
        )
        .await
    }

    /// Whether this broker has never been a member of a metadata group:
    /// its files hold no membership at all.
    pub fn is_fresh(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_none()
    }

    /// Whether this broker votes in the metadata group, as far as it knows.
    pub fn is_voter(&self) -> bool {
        voters(&self.raft).contains(&self.id)
    }

    async fn forward_to<T: Serialize>(
        &self,
        leader: &BrokerNode,
        request: &T,
        kind: Forwarded,
    ) -> Result<MetaResponse, ClusterError> {
        let unreachable = |reason: String| ClusterError::NotLeader {
            leader: None,
            reason: format!(": the leader at {leader} did not take it: {reason}"),
        };
        let channel = self
            .connector
            .channel(&leader.address)
            .map_err(|e| unreachable(e.to_string()))?;
        let json = serde_json::to_vec(request).map_err(|e| ClusterError::Refused(e.to_string()))?;
        let payload = RaftPayload {
            json: json.into(),
            ..RaftPayload::default()
        };
        let mut client = crate::network::raft_client(channel);
        let answer = match kind {
            Forwarded::Command => {
                client
                    .propose(peer_request(&*self.connector, payload, FORWARD_TIMEOUT))
                    .await
            }
            Forwarded::Membership => {
                client
                    .change_membership(peer_request(
                        &*self.connector,
                        payload,
                        MEMBERSHIP_FORWARD_TIMEOUT,
                    ))
                    .await
            }
        }
        .map_err(|status| unreachable(status.to_string()))?
        .into_inner();
        let result: Result<MetaResponse, String> = serde_json::from_slice(&answer.json)
            .map_err(|e| ClusterError::Refused(format!("the leader's answer: {e}")))?;
        result.map_err(unreachable)
    }

    /// Asks the broker at `address` how it sees the group; `None` when it
    /// does not answer within `timeout`.
    pub async fn ping(&self, address: &str, timeout: Duration) -> Option<PingResponse> {
        // A channel per call: a kept one to a broker that was just killed
        // waits out the timeout, where a new one is refused at once, and
        // whoever asks (a producer looking for a new leader) waits too.
        let channel = self.connector.channel(address).ok()?;
        let call = peer_request(&*self.connector, PingRequest {}, timeout);
        let answer =
            tokio::time::timeout(timeout, crate::network::raft_client(channel).ping(call)).await;
        match answer {
            Ok(Ok(answer)) => Some(answer.into_inner()),
            _ => None,
        }
    }

    /// What this broker answers a peer's `Ping` with.
    pub fn ping_answer(&self) -> PingResponse {
        crate::network::service::ping_answer(&self.raft, &self.partitions)
    }

    /// The metadata as applied here so far.
    pub fn state(&self) -> ClusterState {
        self.state_machine.state()
    }

    /// What `read` makes of the metadata applied here, without copying it
    /// (it holds every group's committed offsets); `read` must not block.
    pub fn read_state<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> T {
        self.state_machine.read_state(read)
    }

    /// Every broker of the cluster with its address: the registered ones
    /// and the metadata group's members (a broker added, not registered
    /// yet), but none that was removed.
    pub fn brokers(&self) -> BTreeMap<NodeId, String> {
        let mut brokers: BTreeMap<NodeId, String> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, node)| (*id, node.address.clone()))
                .collect()
        };
        self.read_state(|state| {
            for (id, broker) in &state.brokers {
                brokers.insert(*id, broker.address.clone());
            }
            brokers.retain(|id, _| !state.removed.contains(id));
        });
        brokers
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The index of the last entry applied here (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |applied| applied.index)
    }

    /// This node's current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Whether this node leads the group now, and has heard from a
    /// majority within `silence_max` (a leader cut off from the others
    /// goes on calling itself the leader until it hears of a new term).
    pub fn is_leading(&self, silence_max: Duration) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        self.quorum_silence
            .of(
                metrics.state == openraft::ServerState::Leader,
                metrics.current_term,
                metrics.millis_since_quorum_ack,
            )
            .is_some_and(|silence| silence <= silence_max)
    }

    /// Confirms with a majority that this node leads, and waits until it
    /// has applied everything committed before: its state is then the
    /// group's latest.
    pub async fn catch_up_as_leader(&self) -> Result<(), ClusterError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::NotLeader {
                leader: None,
                reason: format!(": {e}"),
            })
    }

    /// Stops the Raft; the storage keeps what it has.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the metadata group's Raft did not stop cleanly");
        }
    }
}

impl std::fmt::Debug for MetaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNode")
            .field("id", &self.id)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

/// What a broker asks of the leader.
#[derive(Debug, Clone, Copy)]
enum Forwarded {
    Command,
    Membership,
}

/// Makes a change of the metadata group's voters; only the leader can.
/// Serializes the changes of voters one leader makes: each computes its
/// target from the voters when it starts, so two at once (two brokers
/// asking to be added together) would each leave the other's broker out.
pub type MembershipLock = Arc<tokio::sync::Mutex<()>>;

pub(crate) async fn change_members(
    raft: &MetaRaft,
    lock: &MembershipLock,
    change: &MembershipChange,
) -> Result<MetaResponse, ClusterError> {
    let _one_at_a_time = lock.lock().await;
    let propose = |command| async {
        raft.client_write(command)
            .await
            .map(|written| written.data)
            .map_err(write_failed)
    };
    let voter_nodes = || -> BTreeMap<NodeId, BrokerNode> {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, node)| (*id, node.clone()))
            .collect()
    };
    match change {
        MembershipChange::AddBroker { id, address } => {
            propose(MetaCommand::AdmitBroker { id: *id }).await?;
            let mut target = voter_nodes();
            target.insert(*id, BrokerNode::new(address.clone()));
            replace_voters(raft, &target, JOIN_CATCH_UP).await?;
            Ok(MetaResponse::Done)
        }
        MembershipChange::RemoveBroker { id } => {
            let voter = voters(raft).contains(id);
            // Added, and never caught up.
            let learner = learners(raft).contains(id);
            match propose(MetaCommand::RemoveBroker { id: *id }).await? {
                MetaResponse::Done => {}
                // Never registered, and a member all the same.
                MetaResponse::NoSuchBroker { .. } if voter || learner => {}
                refused => return Ok(refused),
            }
            let mut target = voter_nodes();
            target.remove(id);
            if voter {
                if target.is_empty() {
                    return Err(ClusterError::Refused(
                        "the cluster's last broker cannot be removed".to_owned(),
                    ));
                }
                replace_voters(raft, &target, JOIN_CATCH_UP).await?;
            }
            if learners(raft).contains(id) {
                remove_learners(raft, BTreeSet::from([*id])).await?;
            }
            Ok(MetaResponse::Done)
        }
    }
}

/// A write the group did not take: not the leader (naming it when known),
/// or refused.
pub(crate) fn write_refused(e: ClientWriteError<NodeId, BrokerNode>) -> ClusterError {
    match e {
        ClientWriteError::ForwardToLeader(forward) => ClusterError::NotLeader {
            leader: forward.leader_id.zip(forward.leader_node),
            reason: String::new(),
        },
        refused @ ClientWriteError::ChangeMembershipError(_) => {
            ClusterError::Refused(refused.to_string())
        }
    }
}

/// A write that failed: refused (see [`write_refused`]) or the Raft stopped.
pub(crate) fn write_failed(
    e: RaftError<NodeId, ClientWriteError<NodeId, BrokerNode>>,
) -> ClusterError {
    match e {
        RaftError::APIError(e) => write_refused(e),
        RaftError::Fatal(e) => ClusterError::Stopped(e.to_string()),
    }
}

/// A group already formed ignores a second initialization.
pub(crate) fn initialize_result(
    result: Result<(), RaftError<NodeId, InitializeError<NodeId, BrokerNode>>>,
) -> Result<(), ClusterError> {
    match result {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(RaftError::APIError(e)) => Err(ClusterError::Config(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(ClusterError::Stopped(e.to_string())),
    }
}

/// The settings every group shares, before its name and retention.
pub(crate) fn raft_config(
    heartbeat_interval: Duration,
    election_timeout: (Duration, Duration),
    snapshot_every: u64,
) -> openraft::Config {
    openraft::Config {
        heartbeat_interval: millis(heartbeat_interval),
        election_timeout_min: millis(election_timeout.0),
        election_timeout_max: millis(election_timeout.1),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        ..openraft::Config::default()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

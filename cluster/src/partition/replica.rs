//! A broker's replica of one partition: the partition group's Raft, its
//! Raft log and its state machine (the partition's log), started together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brook_storage::PartitionLog;
use parking_lot::RwLock;

use super::heartbeats::HeartbeatClock;
use super::source::LogSource;
use super::state_machine::PartitionStateMachine;
use super::types::{PartitionRaft, PartitionRaftConfig, ProduceApplied, ProduceCommand};
use crate::network::client::{Connector, Network};
use crate::node::{ClusterError, initialize_result, raft_config, write_failed};
use crate::quorum_silence::QuorumSilence;
use crate::store::LogStore;
use crate::types::{BrokerNode, NodeId};

/// How often a partition group's leader sends heartbeats, by default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// How a broker takes part in one partition group.
#[derive(Debug, Clone)]
pub struct PartitionReplicaConfig {
    pub id: NodeId,
    /// The group's name (`topic/partition@topic_id`, see `group_name`).
    pub group: String,
    /// Where the group's Raft files live (its log and the applied mark).
    pub dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// The election timeout window of the replica ranked first; see
    /// [`ElectionTimeouts`].
    pub election: ElectionTimeouts,
    /// Entries applied since the last snapshot that make a new one: a
    /// snapshot syncs the segments and lets the Raft log be purged.
    pub snapshot_every: u64,
    /// Entries kept in the Raft log behind a snapshot, from which a
    /// replica that fell behind catches up without a snapshot.
    pub kept_behind_snapshot: u64,
    /// Told the partition log's high watermark whenever applying moves it.
    pub watermark: Option<tokio::sync::watch::Sender<i64>>,
    /// The clock the replica's heartbeats follow while it leads, shared
    /// by the broker's replicas so that they leave together; `None`:
    /// openraft times them for this group alone.
    pub heartbeat_clock: Option<HeartbeatClock>,
}

/// A replica's role and progress, as its Raft last reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub leading: bool,
    pub term: u64,
    /// While it leads: the most Raft entries a follower is behind its log
    /// (the leader itself counted among them, at 0).
    pub followers_behind_max: u64,
}

impl PartitionReplicaConfig {
    pub fn new(id: NodeId, group: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            group: group.into(),
            dir: dir.into(),
            // A follower stands for election after the leader lease (its
            // longest election timeout) and one election timeout without a
            // heartbeat: with these windows the second-ranked replica
            // stands 0.75-0.8 s after the leader's last heartbeat. The
            // heartbeat interval is also how long openraft gives an
            // AppendEntries: 50 ms was too short under load.
            heartbeat_interval: HEARTBEAT_INTERVAL,
            election: ElectionTimeouts {
                first: (Duration::from_millis(250), Duration::from_millis(310)),
                stagger: Duration::from_millis(100),
                rank: 0,
            },
            snapshot_every: 1024,
            kept_behind_snapshot: 4096,
            watermark: None,
            heartbeat_clock: None,
        }
    }
}

/// When a replica stands for election: a window of timeouts per rank,
/// apart from the others'.
///
/// openraft 0.9 draws a node's election timeout once, when it starts, and
/// keeps it: two replicas whose draws are a few milliseconds apart stand
/// in lockstep, each voting for itself in every term, and an election can
/// last seconds. Replicas ranked apart (a partition's replicas by their
/// place in its replica list, so the preferred leader stands first) never
/// stand at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTimeouts {
    /// The window of rank 0.
    pub first: (Duration, Duration),
    /// How much later each rank's window is than the one before.
    pub stagger: Duration,
    pub rank: u32,
}

impl ElectionTimeouts {
    /// This rank's window.
    pub fn window(&self) -> (Duration, Duration) {
        let later = self.stagger * self.rank;
        (self.first.0 + later, self.first.1 + later)
    }
}

/// A broker's replica of one partition.
#[derive(Clone)]
pub struct PartitionReplica {
    id: NodeId,
    group: String,
    raft: PartitionRaft,
    state_machine: PartitionStateMachine,
    quorum_silence: Arc<QuorumSilence>,
    /// The clock that sends this replica's heartbeats, kept running while
    /// the replica is.
    _heartbeat_clock: Option<HeartbeatClock>,
}

impl PartitionReplica {
    /// Opens the group's Raft log and starts its Raft over `log`, the
    /// partition's log opened by the caller.
    pub async fn start(
        config: &PartitionReplicaConfig,
        log: Arc<PartitionLog>,
        connector: Arc<dyn Connector>,
        source: Arc<dyn LogSource>,
    ) -> Result<Self, ClusterError> {
        let storage = |source| ClusterError::Storage {
            dir: config.dir.clone(),
            source,
        };
        let state_machine = PartitionStateMachine::open(
            &config.dir,
            &config.group,
            config.id,
            log,
            source,
            config.watermark.clone(),
        )
        .map_err(storage)?;
        let durable = state_machine.clone();
        let raft_log = LogStore::<PartitionRaftConfig>::open(&config.dir.join("log"))
            .map_err(storage)?
            .with_purge_limit(Arc::new(move || durable.durable_applied()));
        // A replica back from a restart stays out of elections until it
        // has caught up with a leader (or a leader could not be heard for
        // a while): openraft 0.9 has no pre-vote, and a replica behind the
        // others stands for elections it cannot win, splitting the votes
        // of those that can.
        let restarted = config.dir.join("log").join("vote").exists();
        let election_timeout = config.election.window();
        let raft_config = openraft::Config {
            cluster_name: format!("brook-partition-{}", config.group),
            enable_elect: !restarted,
            enable_heartbeat: config.heartbeat_clock.is_none(),
            max_in_snapshot_log_to_keep: config.kept_behind_snapshot,
            max_payload_entries: crate::network::PARTITION_ENTRIES_PER_APPEND,
            ..raft_config(
                config.heartbeat_interval,
                election_timeout,
                config.snapshot_every,
            )
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let raft = PartitionRaft::new(
            config.id,
            Arc::new(raft_config),
            Network::new(connector, &config.group),
            raft_log,
            state_machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        if let Some(clock) = &config.heartbeat_clock {
            clock.register(raft.clone());
        }
        if restarted {
            tokio::spawn(elect_once_caught_up(
                raft.clone(),
                config.id,
                election_timeout.1 * ELECTION_HOLD_TIMEOUTS,
            ));
        }
        Ok(Self {
            id: config.id,
            group: config.group.clone(),
            raft,
            state_machine,
            quorum_silence: Arc::default(),
            _heartbeat_clock: config.heartbeat_clock.clone(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn raft(&self) -> &PartitionRaft {
        &self.raft
    }

    /// The partition's log: what is in it up to its high watermark is
    /// committed.
    pub fn log(&self) -> &Arc<PartitionLog> {
        self.state_machine.log()
    }

    /// Forms the group from its replicas; every replica may call it with
    /// the same members.
    pub async fn initialize(
        &self,
        replicas: BTreeMap<NodeId, BrokerNode>,
    ) -> Result<(), ClusterError> {
        initialize_result(self.raft.initialize(replicas).await)
    }

    /// Appends `command`'s batches through the group: answers once a
    /// majority of the replicas has the entry fsynced and this replica (the
    /// leader) has applied it. On a follower: [`ClusterError::NotLeader`].
    pub async fn produce(&self, command: ProduceCommand) -> Result<ProduceApplied, ClusterError> {
        self.raft
            .client_write(command)
            .await
            .map(|written| written.data)
            .map_err(write_failed)
    }

    /// The group's voters, as this replica knows them.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        crate::membership::voters(&self.raft)
    }

    /// The group's learners (see `membership::learners`).
    pub fn learners(&self) -> BTreeSet<NodeId> {
        crate::membership::learners(&self.raft)
    }

    /// Takes `learners` out of the group (on the leader only).
    pub async fn remove_learners(&self, learners: BTreeSet<NodeId>) -> Result<(), ClusterError> {
        crate::membership::remove_learners(&self.raft, learners).await
    }

    /// Whether this replica leads its group now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// Moves the group to `target` as its voters (on the leader only): the
    /// replicas it lacks join as learners and must catch up within
    /// `within` first. A leader that is not among them steps down once
    /// the change is committed.
    pub async fn change_replicas(
        &self,
        target: &BTreeMap<NodeId, BrokerNode>,
        within: Duration,
    ) -> Result<(), ClusterError> {
        crate::membership::replace_voters(&self.raft, target, within).await
    }

    /// While this replica leads: how many entries the replica on broker
    /// `id` is behind its log (`None` when it does not lead, or has not
    /// heard from that replica in this term).
    pub fn entries_behind(&self, id: NodeId) -> Option<u64> {
        crate::membership::entries_behind(&self.raft.metrics().borrow(), id)
    }

    /// While this replica leads: whether the replica on broker `id` holds
    /// every entry this one does, and this one has applied them all.
    pub fn in_step_with(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        crate::membership::entries_behind(&metrics, id) == Some(0)
            && metrics.last_applied.map(|applied| applied.index) == metrics.last_log_index
    }

    /// Hands this replica's leadership to the replica on broker `to`: once
    /// that one holds every entry this one does (the caller proposes
    /// nothing meanwhile), it is asked to stand for election, which this
    /// one's vote wins for it (openraft 0.9 has no leadership transfer; a
    /// leader grants a vote to a candidate whose log is as long as its own
    /// once its own election is older than its lease). Answers whether
    /// leadership left this replica within `within`.
    pub async fn hand_over(
        &self,
        to: NodeId,
        connector: &dyn Connector,
        within: Duration,
    ) -> Result<bool, ClusterError> {
        let address = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .get_node(&to)
                .map(|node| node.address.clone())
        }
        .ok_or_else(|| ClusterError::Refused(format!("broker {to} is not in the group")))?;
        let deadline = tokio::time::Instant::now() + within;
        let mut metrics = self.raft.metrics();
        while !self.in_step_with(to) {
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
        let channel = connector
            .channel(&address)
            .map_err(|e| ClusterError::Refused(format!("broker {to} at {address}: {e}")))?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let call = crate::network::client::peer_request(
            connector,
            brook_proto::cluster::RaftPayload {
                group: self.group.clone(),
                ..Default::default()
            },
            remaining,
        );
        crate::network::raft_client(channel)
            .elect(call)
            .await
            .map_err(|status| {
                ClusterError::Refused(format!("broker {to} at {address}: {status}"))
            })?;
        loop {
            if !self.is_leader() {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// While this replica leads: how long since a majority of the group
    /// last acknowledged it, or, while none has in this term, since it was
    /// first seen leading the term. `None` when it does not lead.
    pub fn quorum_silence(&self) -> Option<Duration> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        self.quorum_silence.of(
            metrics.state == openraft::ServerState::Leader,
            metrics.current_term,
            metrics.millis_since_quorum_ack,
        )
    }

    /// What the broker's metrics report of this replica.
    pub fn status(&self) -> ReplicaStatus {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leading = metrics.state == openraft::ServerState::Leader;
        let last = metrics.last_log_index.unwrap_or(0);
        let followers_behind_max = metrics
            .replication
            .as_ref()
            .filter(|_| leading)
            .and_then(|followers| {
                followers
                    .values()
                    .map(|matched| last.saturating_sub(matched.map_or(0, |m| m.index)))
                    .max()
            })
            .unwrap_or(0);
        ReplicaStatus {
            leading,
            term: metrics.current_term,
            followers_behind_max,
        }
    }

    /// This replica's current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Stops the Raft; the logs keep what they have.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = %self.group, error = %e, "a partition group's Raft did not stop cleanly");
        }
    }
}

impl std::fmt::Debug for PartitionReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReplica")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

/// Longest election timeouts a restarted replica stays out of elections
/// while it hears from no leader.
const ELECTION_HOLD_TIMEOUTS: u32 = 2;

/// Lets a restarted replica stand for elections once it follows a leader
/// and has applied all it holds, or once `longest` passed without that.
async fn elect_once_caught_up(raft: PartitionRaft, id: NodeId, longest: Duration) {
    let mut metrics = raft.metrics();
    let caught_up = async {
        loop {
            {
                let now = metrics.borrow();
                let follows = now.current_leader.is_some_and(|leader| leader != id);
                let applied_all = now.last_applied.map(|l| l.index) == now.last_log_index;
                if follows && applied_all {
                    return;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(longest, caught_up).await;
    raft.runtime_config().elect(true);
}

/// The partition replicas a broker runs, by group name: where its Raft
/// service sends peers' messages.
#[derive(Debug, Clone, Default)]
pub struct PartitionGroups {
    replicas: Arc<RwLock<HashMap<String, PartitionReplica>>>,
}

impl PartitionGroups {
    pub fn insert(&self, replica: PartitionReplica) {
        self.replicas
            .write()
            .insert(replica.group().to_owned(), replica);
    }

    pub fn remove(&self, group: &str) -> Option<PartitionReplica> {
        self.replicas.write().remove(group)
    }

    pub fn get(&self, group: &str) -> Option<PartitionReplica> {
        self.replicas.read().get(group).cloned()
    }

    /// Each group's leader, where this broker's replica knows it.
    pub fn leaders(&self) -> HashMap<String, NodeId> {
        self.replicas
            .read()
            .iter()
            .filter_map(|(group, replica)| Some((group.clone(), replica.leader()?)))
            .collect()
    }

    /// Each group's log's high watermark: what this broker has applied.
    pub fn high_watermarks(&self) -> HashMap<String, i64> {
        self.replicas
            .read()
            .iter()
            .map(|(group, replica)| (group.clone(), replica.log().high_watermark()))
            .collect()
    }
}

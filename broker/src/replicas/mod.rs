//! The partitions' replicas on a broker in a cluster: topics are created
//! and deleted through the metadata group, and every broker makes what it
//! holds match what the group decided (the reconciler): a topic the group
//! has is created here, each partition this broker holds a replica of gets
//! its Raft group and takes appends through it, the others point at the
//! brokers that hold them; a topic the group deleted is deleted here.
//!
//! Which topic a broker holds is kept beside its data
//! (`<data dir>/cluster/topics/<name>`, the topic's id in the metadata
//! group, written before the topic is created here): a topic that was
//! deleted and created again while the broker was down has another id, so
//! the broker drops its old copy instead of serving it.

mod access;
mod catch_up;
mod coordinators;
mod groups;
mod leaders;
mod membership;
mod metrics;
mod moves;
mod reconcile;
mod replication;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brook_cluster::network::client::Connector;
use brook_cluster::partition::{HEARTBEAT_INTERVAL, HeartbeatClock, LogSource};
use brook_cluster::{ClusterError, ClusterState, MetaCommand, MetaNode, MetaResponse, NodeId};
use brook_engine::{AdminError, Broker, Invalid, NotFound, QuotaError, TopicInfo, TopicOverrides};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub use groups::lease_in;
pub use replication::RaftReplication;

/// How long an admin call waits for this broker to apply what the metadata
/// group committed.
const APPLIED_HERE_WITHIN: Duration = Duration::from_secs(10);
/// How often the reconciler runs while nothing changes: it retries what
/// failed (a replica whose start failed, a peer not registered yet).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Why a topic change through the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterAdminError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The metadata group could not take the change now (no leader, the
    /// leader unreachable); a retry may succeed.
    #[error("the cluster's metadata group cannot take the change now: {0}")]
    Unavailable(#[from] ClusterError),
    /// The group took the change, and this broker had not applied it when
    /// the call gave up waiting.
    #[error("the change is committed, and this broker has not applied it yet: {0}")]
    NotAppliedHere(String),
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The metadata group answered what this change cannot get.
    #[error("the cluster's metadata group answered {0}")]
    Unexpected(String),
    /// No broker of that id is in the cluster.
    #[error("node_id: no broker {0} is in the cluster")]
    NoSuchBroker(NodeId),
    /// A broker that holds replicas cannot be removed.
    #[error(
        "node_id: broker {id} holds replicas of {count} partition(s) ({partitions}); move them to other brokers first (ReassignPartitions)"
    )]
    BrokerInUse {
        id: NodeId,
        count: usize,
        partitions: String,
    },
    /// The leader tried the change and could not make it.
    #[error("the change was not made: {0}")]
    NotMade(String),
}

/// Per partition (topic, index): its replication when this broker holds a
/// replica, `None` when another broker does.
type Running = HashMap<(String, u32), Option<Arc<RaftReplication>>>;

/// The replicas this broker runs, and the reconciler that keeps them.
pub struct Replicas {
    meta: MetaNode,
    broker: Arc<Broker>,
    connector: Arc<dyn Connector>,
    source: Arc<dyn LogSource>,
    /// This start's registration (see `MetaCommand::RegisterBroker`).
    incarnation: u64,
    /// `<data dir>/cluster`.
    dir: PathBuf,
    /// What runs here per partition: the replica's replication, or nothing
    /// when the partition is elsewhere. Changed by the reconciler only.
    running: Mutex<Running>,
    /// Topics of this broker from before it joined the cluster that the
    /// cluster has too (warned about once).
    foreign: Mutex<HashSet<String>>,
    /// Which replicas have caught up with their leader since they started
    /// here, and how far the others must apply to have (`catch_up.rs`).
    catch_up: Mutex<catch_up::CatchUp>,
    /// The slots of consumer groups this broker coordinates, with their
    /// epochs (`groups.rs`).
    coordinating: tokio::sync::watch::Sender<groups::Held>,
    /// The partition groups this broker is moving to other replicas now
    /// (`moves.rs`), by group name.
    moving: Arc<Mutex<HashSet<String>>>,
    /// The one clock of the heartbeats of the partitions this broker
    /// leads.
    heartbeats: HeartbeatClock,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("node", &self.meta.id())
            .field("partitions", &self.running.lock().len())
            .finish_non_exhaustive()
    }
}

/// A partition as this broker sees it, for `DescribeCluster`.
#[derive(Debug, Clone)]
pub struct PartitionView {
    pub topic: String,
    /// The topic's id in the metadata group.
    pub topic_id: u64,
    pub partition: u32,
    pub replicas: Vec<NodeId>,
    /// The leader this broker knows of: its own replica's view, or the
    /// preferred leader for a partition it does not hold.
    pub leader: Option<NodeId>,
    /// While the partition moves: the replicas it moves to.
    pub moving_to: Vec<NodeId>,
}

impl Replicas {
    pub fn new(
        meta: MetaNode,
        broker: Arc<Broker>,
        connector: Arc<dyn Connector>,
        source: Arc<dyn LogSource>,
        incarnation: u64,
    ) -> Arc<Self> {
        let dir = broker.config().data_dir.join("cluster");
        Arc::new(Self {
            meta,
            broker,
            connector,
            source,
            incarnation,
            dir,
            running: Mutex::default(),
            foreign: Mutex::default(),
            catch_up: Mutex::default(),
            coordinating: tokio::sync::watch::Sender::new(groups::Held::new()),
            moving: Arc::default(),
            heartbeats: HeartbeatClock::start(HEARTBEAT_INTERVAL),
        })
    }

    /// Whether the metadata state applied here holds this start's
    /// registration: the broker has joined, and that state holds
    /// everything committed before it started.
    pub fn joined(&self) -> bool {
        self.meta.read_state(|state| self.joined_in(state))
    }

    fn joined_in(&self, state: &ClusterState) -> bool {
        state
            .brokers
            .get(&self.meta.id())
            .is_some_and(|broker| broker.incarnation == self.incarnation)
    }

    /// Creates a topic in the cluster and waits until this broker holds it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        overrides: TopicOverrides,
    ) -> Result<TopicInfo, ClusterAdminError> {
        // What the engine would refuse is refused before anything is
        // committed: the same rules on every broker.
        self.broker
            .check_new_topic(name, partitions, &overrides)
            .map_err(AdminError::from)?;
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::CreateTopic {
                name: name.to_owned(),
                partitions,
                replication_factor,
                overrides,
            })
            .await?;
        refusal(answer)?;
        self.applied_here(|broker| broker.describe_topic(name).ok())
            .await
            .ok_or_else(|| ClusterAdminError::NotAppliedHere(format!("topic `{name}` created")))
    }

    /// Deletes a topic in the cluster and waits until this broker dropped it.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClusterAdminError> {
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::DeleteTopic {
                name: name.to_owned(),
            })
            .await?;
        refusal(answer)?;
        self.applied_here(|broker| broker.describe_topic(name).is_err().then_some(()))
            .await
            .ok_or_else(|| ClusterAdminError::NotAppliedHere(format!("topic `{name}` deleted")))
    }

    /// Grows a topic to `partitions` partitions in the cluster and waits
    /// until this broker has them.
    pub async fn add_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<TopicInfo, ClusterAdminError> {
        // What the engine would refuse is refused before anything is
        // committed.
        self.broker.check_added_partitions(name, partitions)?;
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::AddPartitions {
                name: name.to_owned(),
                partitions,
            })
            .await?;
        refusal(answer)?;
        self.applied_here(|broker| {
            broker
                .describe_topic(name)
                .ok()
                .filter(|topic| topic.partitions.len() == partitions as usize)
        })
        .await
        .ok_or_else(|| ClusterAdminError::NotAppliedHere(format!("topic `{name}` grown")))
    }

    /// Changes a topic's settings in the cluster and waits until this
    /// broker applies them.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        overrides: TopicOverrides,
    ) -> Result<TopicInfo, ClusterAdminError> {
        // What the engine would refuse is refused before anything is
        // committed.
        self.broker.check_altered_config(name, overrides)?;
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::AlterTopic {
                name: name.to_owned(),
                overrides,
            })
            .await?;
        refusal(answer)?;
        let meta = self.meta.clone();
        self.applied_here(|broker| {
            let wanted = meta.read_state(|state| Some(state.topics.get(name)?.overrides))?;
            // Applied here once the state holds the change and the
            // engine holds the state's settings.
            (wanted.merged(overrides) == wanted && broker.topic_overrides(name).ok()? == wanted)
                .then(|| broker.describe_topic(name).ok())
                .flatten()
        })
        .await
        .ok_or_else(|| ClusterAdminError::NotAppliedHere(format!("topic `{name}` altered")))
    }

    /// Polls `done` until it says the change is applied here.
    async fn applied_here<T>(&self, done: impl Fn(&Broker) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + APPLIED_HERE_WITHIN;
        loop {
            if let Some(done) = done(&self.broker) {
                return Some(done);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every partition of the cluster's topics, as this broker sees it.
    pub fn partitions(&self) -> Vec<PartitionView> {
        let state = self.meta.state();
        let running = self.running.lock();
        let mut views = Vec::new();
        for (topic, assignment) in &state.topics {
            for (index, replicas) in assignment.replicas.iter().enumerate() {
                let index = index as u32;
                let here = running
                    .get(&(topic.clone(), index))
                    .and_then(Option::as_ref);
                views.push(PartitionView {
                    topic: topic.clone(),
                    topic_id: assignment.id,
                    partition: index,
                    replicas: replicas.clone(),
                    leader: match here {
                        Some(replication) => replication.replica().leader(),
                        None => replicas.first().copied(),
                    },
                    moving_to: assignment.moves.get(&index).cloned().unwrap_or_default(),
                });
            }
        }
        views
    }

    /// Keeps this broker's replicas matching the metadata group until
    /// `stop`, then stops them.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(self.clone().watch_catch_up(stop.clone()));
        tokio::spawn(self.clone().report_metrics(stop.clone()));
        tokio::spawn(self.clone().coordinate_groups(stop.clone()));
        tokio::spawn(self.clone().assign_coordinators(stop.clone()));
        tokio::spawn(self.clone().balance_leaders(stop.clone()));
        let mut applied = self.meta.raft().metrics();
        loop {
            self.reconcile().await;
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
                () = stop.cancelled() => break,
            }
        }
        self.stop_all().await;
    }

    /// Stops every replica's Raft (their logs stay as they are).
    async fn stop_all(&self) {
        let running: Vec<Arc<RaftReplication>> = self
            .running
            .lock()
            .drain()
            .filter_map(|(_, replication)| replication)
            .collect();
        for replication in running {
            self.meta.partitions().remove(replication.replica().group());
            replication.replica().shutdown().await;
        }
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.dir
            .join("partitions")
            .join(topic)
            .join(partition.to_string())
    }
}

fn refusal(answer: MetaResponse) -> Result<(), ClusterAdminError> {
    let refused: AdminError = match answer {
        MetaResponse::Done => return Ok(()),
        MetaResponse::TopicExists { name } => AdminError::TopicExists(name),
        MetaResponse::NoSuchTopic { name } => NotFound::Topic(name).into(),
        MetaResponse::NotEnoughBrokers { needed, registered } => Invalid::new(
            "replication_factor",
            format!("{needed} replicas need as many brokers; the cluster has {registered}"),
        )
        .into(),
        MetaResponse::Invalid { field, reason } => {
            Invalid::new("topic", format!("{field}: {reason}")).into()
        }
        other => return Err(ClusterAdminError::Unexpected(format!("{other:?}"))),
    };
    Err(refused.into())
}

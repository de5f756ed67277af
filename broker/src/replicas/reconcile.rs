//! One pass of the reconciler: what the metadata group applied here so
//! far, made true of this broker's topics and replicas.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use brook_cluster::partition::{PartitionReplica, PartitionReplicaConfig};
use brook_cluster::state::TopicAssignment;
use brook_cluster::{BrokerNode, ClusterState, NodeId};
use brook_engine::{AdminError, Leader};

use super::{RaftReplication, Replicas};

impl Replicas {
    /// Creates what the group has and this broker lacks, starts the
    /// replicas it should run, and deletes the topics the group deleted.
    ///
    /// Only once the state applied here holds this start's registration:
    /// that state holds everything committed before the broker started.
    /// An older one (right after a restart, before the metadata group's log
    /// is applied again) could lack a topic's deletion and re-creation, or
    /// a topic created while the broker was down, and acting on it would
    /// start replicas of a topic that is gone or drop data the group has.
    pub(super) async fn reconcile(&self) {
        let state = self.meta.state();
        if !self.joined_in(&state) {
            return;
        }
        self.reconcile_access(&state).await;
        for (name, topic) in &state.topics {
            if let Err(e) = self.hold_topic(name, topic, &state).await {
                tracing::warn!(topic = %name, error = %e, "could not take the topic's replicas on this broker; trying again");
            }
        }
        for (name, _) in self.broker.list_topics() {
            if !state.topics.contains_key(&name)
                && self.held_id(&name).is_some()
                && let Err(e) = self.drop_topic(&name).await
            {
                tracing::warn!(topic = %name, error = %e, "could not delete a topic the cluster deleted; trying again");
            }
        }
    }

    /// Makes this broker hold `topic` as the group placed it.
    async fn hold_topic(
        &self,
        name: &str,
        topic: &TopicAssignment,
        state: &ClusterState,
    ) -> Result<(), AdminError> {
        let exists = self.broker.describe_topic(name).is_ok();
        match (self.held_id(name), exists) {
            (Some(id), true) if id == topic.id => {}
            (None, true) => {
                // A topic of this broker from before it joined the
                // cluster: its records are not the group's, and serving
                // them as a replica would diverge. Left alone, refusing
                // writes, until an operator deletes or moves it.
                if self.foreign.lock().insert(name.to_owned()) {
                    tracing::warn!(topic = %name, "this broker holds a topic of this name from before it joined the cluster; it is not served as the cluster's until deleted here");
                }
                return Ok(());
            }
            (held, exists) => {
                if exists || held.is_some() {
                    // Deleted and created again while this broker was away.
                    self.drop_topic(name).await?;
                }
                self.remember_id(name, topic.id)?;
                match self
                    .broker
                    .create_topic(name, topic.replicas.len() as u32, topic.overrides)
                    .await
                {
                    Ok(_) | Err(AdminError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // A change this broker cannot make (other limits than the broker
        // that took it) is retried, and keeps no replica from starting.
        if self
            .broker
            .topic_overrides(name)
            .is_ok_and(|held| held != topic.overrides)
            && let Err(e) = self.broker.alter_topic_config(name, topic.overrides).await
        {
            tracing::warn!(topic = %name, error = %e, "could not give the topic the cluster's settings; trying again");
        }
        let held = self.broker.describe_topic(name).map(|t| t.partitions.len());
        if held.is_ok_and(|held| held < topic.replicas.len())
            && let Err(e) = self
                .broker
                .add_partitions(name, topic.replicas.len() as u32)
                .await
        {
            tracing::warn!(topic = %name, error = %e, "could not open the topic's new partitions; trying again");
        }
        let me = self.meta.id();
        for (index, replicas) in topic.replicas.iter().enumerate() {
            let index = index as u32;
            let key = (name.to_owned(), index);
            let running = self.running.lock().get(&key).cloned();
            let holds_here = topic.holders(index).any(|id| id == me);
            match (holds_here, running) {
                (true, Some(Some(_))) => {}
                (true, None | Some(None)) => {
                    let partition = self.broker.partition(name, index)?;
                    // Only the replicas a partition was created with form
                    // its group; one it is moving to joins the group.
                    let forms_group = !topic.moved.contains(&index) && replicas.contains(&me);
                    let ranked = topic.moves.get(&index).unwrap_or(replicas);
                    let replica = self
                        .start_replica(
                            name,
                            topic.id,
                            index,
                            ranked,
                            forms_group.then_some(replicas),
                            state,
                        )
                        .await?;
                    let replication = Arc::new(RaftReplication::new(replica));
                    partition.route_through(replication.clone());
                    self.running.lock().insert(key, Some(replication));
                }
                (false, Some(Some(replication))) => {
                    self.leave_partition(name, index, &replication, replicas, state)
                        .await?;
                }
                (false, running) => {
                    // The preferred leader this broker names changes when
                    // the partition moves.
                    if running.is_none() && self.partition_dir(name, index).exists() {
                        // It left while this broker was down.
                        self.drop_replica_files(name, index)?;
                    }
                    let partition = self.broker.partition(name, index)?;
                    partition
                        .route_elsewhere(replicas.first().and_then(|id| leader_of(*id, state)));
                    self.running.lock().insert(key, None);
                }
            }
        }
        self.drive_moves(name, topic, state);
        Ok(())
    }

    /// Starts this broker's replica of a partition, ranked for elections
    /// by its place in `ranked`, and forms its group with the replicas in
    /// `founders` when given (a replica that already belongs to the group
    /// ignores that; one without founders waits to be added by the
    /// group's leader).
    async fn start_replica(
        &self,
        topic: &str,
        topic_id: u64,
        index: u32,
        ranked: &[NodeId],
        founders: Option<&Vec<NodeId>>,
        state: &ClusterState,
    ) -> Result<PartitionReplica, AdminError> {
        let partition = self.broker.partition(topic, index)?;
        let group = brook_cluster::partition::group_name(topic, index, topic_id);
        let mut config =
            PartitionReplicaConfig::new(self.meta.id(), &group, self.partition_dir(topic, index));
        config.watermark = Some(partition.watermark_sender());
        config.heartbeat_clock = Some(self.heartbeats.clone());
        // The preferred leader (first in the list) stands for election
        // first, the others each a window later.
        config.election.rank = ranked
            .iter()
            .position(|id| *id == self.meta.id())
            .and_then(|rank| u32::try_from(rank).ok())
            .unwrap_or(0);
        let failed = |e: brook_cluster::ClusterError| AdminError::Io {
            what: format!("start the replica of {group}"),
            source: std::io::Error::other(e.to_string()),
        };
        let replica = PartitionReplica::start(
            &config,
            partition.log().clone(),
            self.connector.clone(),
            self.source.clone(),
        )
        .await
        .map_err(failed)?;
        self.meta.partitions().insert(replica.clone());
        if let Some(founders) = founders {
            let members = broker_nodes(founders, state);
            if let Err(e) = replica.initialize(members).await {
                self.meta.partitions().remove(&group);
                replica.shutdown().await;
                return Err(failed(e));
            }
        }
        tracing::info!(group = %group, replicas = ?ranked, forms_group = founders.is_some(), "started this broker's replica");
        Ok(replica)
    }

    /// Stops a topic's replicas here and deletes it with their Raft files.
    async fn drop_topic(&self, name: &str) -> Result<(), AdminError> {
        let stopping: Vec<Arc<RaftReplication>> = {
            let mut running = self.running.lock();
            let keys: Vec<(String, u32)> = running
                .keys()
                .filter(|(topic, _)| topic == name)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|key| running.remove(&key).flatten())
                .collect()
        };
        for replication in stopping {
            self.meta.partitions().remove(replication.replica().group());
            replication.replica().shutdown().await;
        }
        match self.broker.delete_topic(name).await {
            Ok(()) | Err(AdminError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let raft_dir = self.dir.join("partitions").join(name);
        remove_if_present(&raft_dir, |source| AdminError::Io {
            what: format!("remove {}", raft_dir.display()),
            source,
        })?;
        let marker = self.id_file(name);
        remove_if_present(&marker, |source| AdminError::Io {
            what: format!("remove {}", marker.display()),
            source,
        })?;
        self.forget_catch_up(name);
        tracing::info!(topic = %name, "deleted the topic here, as the cluster did");
        Ok(())
    }

    fn id_file(&self, name: &str) -> PathBuf {
        self.dir.join("topics").join(name)
    }

    /// The cluster id of the topic this broker holds under `name`.
    fn held_id(&self, name: &str) -> Option<u64> {
        std::fs::read_to_string(self.id_file(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records, durably, which of the cluster's topics `name` is here.
    fn remember_id(&self, name: &str, id: u64) -> Result<(), AdminError> {
        let path = self.id_file(name);
        let io = |source| AdminError::Io {
            what: format!("write {}", path.display()),
            source,
        };
        let dir = self.dir.join("topics");
        std::fs::create_dir_all(&dir).map_err(io)?;
        let staged = dir.join(format!(".{name}.new"));
        std::fs::write(&staged, id.to_string()).map_err(io)?;
        std::fs::File::open(&staged)
            .and_then(|file| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&staged, &path).map_err(io)?;
        std::fs::File::open(&dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io)
    }
}

pub(super) fn remove_if_present(
    path: &std::path::Path,
    error: impl FnOnce(std::io::Error) -> AdminError,
) -> Result<(), AdminError> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(error(e)),
        _ => Ok(()),
    }
}

/// The brokers `ids` names, at their registered addresses.
pub(super) fn broker_nodes(ids: &[NodeId], state: &ClusterState) -> BTreeMap<NodeId, BrokerNode> {
    ids.iter()
        .filter_map(|id| {
            state
                .brokers
                .get(id)
                .map(|broker| (*id, BrokerNode::new(broker.address.clone())))
        })
        .collect()
}

pub(super) fn leader_of(id: NodeId, state: &ClusterState) -> Option<Leader> {
    state.brokers.get(&id).map(|broker| Leader {
        id,
        address: broker.address.clone(),
    })
}

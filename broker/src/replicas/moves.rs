//! Partitions moving between brokers. The metadata group records where a
//! partition is to move (`ReassignPartitions`); the broker that leads the
//! partition's group adds the new replicas as learners, waits until they
//! have caught up, changes the group's voters (openraft's joint
//! consensus), and records that the move is over (`FinishReassignment`).
//! A broker whose replica is no longer wanted then stops it and drops
//! its records and Raft files.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use brook_cluster::state::TopicAssignment;
use brook_cluster::{ClusterState, MetaCommand, NodeId};
use brook_engine::AdminError;

use super::reconcile::{broker_nodes, leader_of, remove_if_present};
use super::{RaftReplication, Replicas};

/// How long new replicas have to catch up in one attempt; a move whose
/// replicas have not is tried again by the next pass of the reconciler,
/// from where they got to.
const CATCH_UP_PER_ATTEMPT: Duration = Duration::from_secs(60);

impl Replicas {
    /// Gives the groups of `topic`'s partitions this broker leads the
    /// replicas the cluster gives them: the ones a partition is to move
    /// to, recording the move once it is made, and otherwise exactly its
    /// replicas (a move called off part way can leave learners behind, or
    /// the voters it had reached).
    pub(super) fn drive_moves(&self, name: &str, topic: &TopicAssignment, state: &ClusterState) {
        for (index, replicas) in topic.replicas.iter().enumerate() {
            let index = index as u32;
            let moving_to = topic.moves.get(&index);
            let target = moving_to.unwrap_or(replicas);
            let running = self.running.lock().get(&(name.to_owned(), index)).cloned();
            let Some(Some(replication)) = running else {
                continue;
            };
            let replica = replication.replica().clone();
            let wanted: BTreeSet<NodeId> = target.iter().copied().collect();
            if !replica.is_leader()
                || (moving_to.is_none()
                    && replica.voters() == wanted
                    && replica.learners().is_empty())
            {
                continue;
            }
            let nodes = broker_nodes(target, state);
            if nodes.len() != target.len() {
                if moving_to.is_some() {
                    tracing::warn!(group = %replica.group(), ?target, "a broker the partition is to move to is not registered; waiting");
                }
                continue;
            }
            if !self.moving.lock().insert(replica.group().to_owned()) {
                continue;
            }
            let finish = moving_to.map(|target| MetaCommand::FinishReassignment {
                topic: name.to_owned(),
                topic_id: topic.id,
                partition: index,
                replicas: target.clone(),
            });
            let meta = self.meta.clone();
            let moving = self.moving.clone();
            tokio::spawn(async move {
                let group = replica.group().to_owned();
                let moved = finish.is_some();
                if moved {
                    tracing::info!(%group, target = ?wanted, "moving the partition's replicas");
                }
                let changed = async {
                    replica
                        .change_replicas(&nodes, CATCH_UP_PER_ATTEMPT)
                        .await?;
                    let stray: BTreeSet<NodeId> =
                        replica.learners().difference(&wanted).copied().collect();
                    if !stray.is_empty() {
                        replica.remove_learners(stray).await?;
                    }
                    if let Some(finish) = finish {
                        meta.propose_anywhere(finish).await?;
                    }
                    Ok::<(), brook_cluster::ClusterError>(())
                };
                match changed.await {
                    Ok(()) if moved => tracing::info!(%group, "the partition's replicas moved"),
                    Ok(()) => {
                        tracing::info!(%group, replicas = ?wanted, "the partition's group has its replicas again (a move was called off)");
                    }
                    Err(e) => {
                        tracing::warn!(%group, error = %e, "changing the partition's replicas; trying again");
                    }
                }
                moving.lock().remove(&group);
            });
        }
    }

    /// Stops this broker's replica of a partition it no longer holds,
    /// drops its records and Raft files, and points the partition at the
    /// brokers that hold it.
    pub(super) async fn leave_partition(
        &self,
        name: &str,
        index: u32,
        replication: &Arc<RaftReplication>,
        replicas: &[NodeId],
        state: &ClusterState,
    ) -> Result<(), AdminError> {
        let partition = self.broker.partition(name, index)?;
        partition.route_elsewhere(replicas.first().and_then(|id| leader_of(*id, state)));
        self.running.lock().insert((name.to_owned(), index), None);
        let replica = replication.replica();
        self.meta.partitions().remove(replica.group());
        replica.shutdown().await;
        self.drop_replica_files(name, index)?;
        tracing::info!(group = %replica.group(), "this broker's replica left the partition");
        Ok(())
    }

    /// Drops the records and Raft files of a replica this broker does not
    /// run (left while it ran, or while the broker was down).
    pub(super) fn drop_replica_files(&self, name: &str, index: u32) -> Result<(), AdminError> {
        let partition = self.broker.partition(name, index)?;
        partition.log().restart_at(0).map_err(|e| AdminError::Io {
            what: format!("drop the records of {name}/{index}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let dir = self.partition_dir(name, index);
        remove_if_present(&dir, |source| AdminError::Io {
            what: format!("remove {}", dir.display()),
            source,
        })?;
        self.forget_replica_catch_up(name, index);
        Ok(())
    }
}

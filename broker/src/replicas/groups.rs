//! Consumer groups in a cluster: the broker that leads the metadata group
//! coordinates every group (members' sessions, assignments, commits), and
//! committed offsets are made durable through the metadata group, so they
//! survive the loss of any minority of brokers. When leadership moves, the
//! new leader loads the offsets the group holds before it takes a group
//! call, and the old one ends its members' sessions: they join again at
//! the new one.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_cluster::{ClusterState, MetaCommand, MetaNode, MetaResponse};
use brook_engine::group::{OffsetReplication, ReplicatedGroup, TopicPartition};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Replicas;

/// How long the coordinator may go without hearing from a majority of the
/// brokers before it stops coordinating: the others elect a new leader
/// after about as long, and two coordinators would hand out the same
/// partitions.
const QUORUM_SILENCE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Offsets made durable by the metadata group.
#[derive(Debug)]
pub(super) struct MetaOffsets {
    pub meta: MetaNode,
}

impl MetaOffsets {
    fn propose(&self, command: MetaCommand) -> BoxFuture<'static, Result<(), String>> {
        let meta = self.meta.clone();
        Box::pin(async move {
            // Here only, never forwarded: a broker that lost the
            // leadership (and the groups) must not have a commit it took
            // as coordinator land after the new coordinator loaded the
            // offsets.
            match meta.propose(command).await {
                Ok(MetaResponse::Done) => Ok(()),
                Ok(other) => Err(format!("the cluster's metadata group answered {other:?}")),
                Err(e) => Err(format!(
                    "the cluster could not commit the group's change: {e}"
                )),
            }
        })
    }
}

impl OffsetReplication for MetaOffsets {
    fn commit(
        &self,
        group: String,
        offsets: Vec<(String, u32, i64)>,
        at_ms: i64,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.propose(MetaCommand::CommitOffsets {
            group,
            offsets,
            at_ms,
        })
    }

    fn mark_active(&self, group: String, at_ms: i64) -> BoxFuture<'static, Result<(), String>> {
        self.propose(MetaCommand::MarkGroupActive { group, at_ms })
    }

    fn delete(&self, group: String) -> BoxFuture<'static, Result<(), String>> {
        self.propose(MetaCommand::DeleteGroup { group })
    }
}

/// Every group's offsets as the metadata state holds them.
fn replicated_groups(state: &ClusterState) -> Vec<ReplicatedGroup> {
    state
        .groups
        .iter()
        .map(|(group, committed)| {
            let offsets: BTreeMap<TopicPartition, i64> = committed
                .offsets
                .iter()
                .flat_map(|(topic, partitions)| {
                    partitions.iter().map(|(partition, offset)| {
                        (TopicPartition::new(topic.clone(), *partition), *offset)
                    })
                })
                .collect();
            (group.clone(), offsets, committed.active_ms)
        })
        .collect()
}

impl Replicas {
    /// Whether this broker coordinates the cluster's consumer groups now;
    /// changes as the metadata group's leadership moves.
    pub fn coordinating(&self) -> watch::Receiver<bool> {
        self.coordinating.subscribe()
    }

    /// Why a group call is refused here, naming the broker that takes it
    /// when known.
    pub fn not_coordinator(&self) -> String {
        let leader = self
            .meta
            .leader()
            .filter(|leader| *leader != self.meta.id());
        let address = leader.and_then(|leader| {
            self.meta
                .read_state(|state| Some(state.brokers.get(&leader)?.address.clone()))
        });
        match leader {
            Some(leader) => match address {
                Some(address) => format!(
                    "broker {} does not coordinate consumer groups: broker {leader} at {address} does (it leads the cluster's metadata)",
                    self.meta.id()
                ),
                None => format!(
                    "broker {} does not coordinate consumer groups: broker {leader} does (it leads the cluster's metadata)",
                    self.meta.id()
                ),
            },
            None => format!(
                "broker {} does not coordinate consumer groups now: the cluster's metadata group is electing a leader, which will",
                self.meta.id()
            ),
        }
    }

    /// Follows the metadata group's leadership until `stop`: coordinates
    /// the groups while this broker leads it, from the offsets the group
    /// holds.
    pub(super) async fn coordinate_groups(self: Arc<Self>, stop: CancellationToken) {
        self.broker.replicate_offsets_through(Arc::new(MetaOffsets {
            meta: self.meta.clone(),
        }));
        // Offsets this broker kept on its own before it joined are not the
        // cluster's: nothing is served (or expired) from them.
        self.broker.load_replicated_offsets(None);
        let mut metrics = self.meta.raft().metrics();
        loop {
            let leading = self.meta.is_leading(QUORUM_SILENCE_MAX);
            let coordinating = *self.coordinating.borrow();
            if leading && !coordinating {
                match self.meta.catch_up_as_leader().await {
                    Ok(()) => {
                        self.broker
                            .load_replicated_offsets(Some(self.meta.read_state(replicated_groups)));
                        self.coordinating.send_replace(true);
                        tracing::info!("this broker coordinates the cluster's consumer groups");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "not coordinating the consumer groups yet");
                    }
                }
            } else if !leading && coordinating {
                self.coordinating.send_replace(false);
                // The new coordinator keeps them now (and expires them).
                self.broker.load_replicated_offsets(None);
                tracing::info!("this broker no longer coordinates the cluster's consumer groups");
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                // A leader cut off from the others may see no change.
                () = tokio::time::sleep(QUORUM_SILENCE_MAX / 4) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

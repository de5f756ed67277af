//! Consumer groups in a cluster: groups fall into slots
//! (`brook_cluster::coordinators`), and each broker coordinates the groups
//! of the slots the metadata group gives it (members' sessions,
//! assignments, commits). Committed offsets are made durable through the
//! metadata group, each change under the epoch of the slot's assignment,
//! so they survive the loss of any minority of brokers and a deposed
//! coordinator's commit is refused. When a slot moves, its new coordinator
//! loads the slot's offsets before it takes a group call, and the old one
//! ends its members' sessions: they join again at the new one.
//!
//! A broker coordinates only while the metadata leader keeps confirming
//! that it may (`coordinators.rs` asks every broker four times a second)
//! and it has applied as far as the leader had when it asked; cut off,
//! it stops within a second, before the leader gives its slots to others.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_cluster::{ClusterState, MetaCommand, MetaNode, MetaResponse, coordinator_slot};
use brook_engine::group::{OffsetReplication, ReplicatedGroup, TopicPartition};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Replicas;

/// How long a broker may go without the metadata leader confirming its
/// slots before it stops coordinating them: the leader gives them to
/// another after three times as long (`coordinators.rs`), and two
/// coordinators would hand out the same partitions.
pub(super) const CONFIRMATION_SILENCE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Slot → the epoch of its assignment this broker coordinates it under.
pub type Held = BTreeMap<u32, u64>;

/// The epoch under which the slots `held` cover `group`, if they do.
pub fn lease_in(held: &Held, group: &str) -> Option<u64> {
    held.get(&coordinator_slot(group)).copied()
}

/// Offsets made durable by the metadata group, each change under this
/// broker's lease on the group's slot.
#[derive(Debug)]
struct MetaOffsets {
    meta: MetaNode,
    held: watch::Receiver<Held>,
}

impl MetaOffsets {
    fn propose(&self, command: MetaCommand) -> BoxFuture<'static, Result<(), String>> {
        let meta = self.meta.clone();
        Box::pin(async move {
            // Forwarded to the leader when need be: the epoch it carries
            // keeps it from landing once the slot moved on.
            match meta.propose_anywhere(command).await {
                Ok(MetaResponse::Done) => Ok(()),
                Ok(MetaResponse::NotCoordinator { group, coordinator }) => Err(format!(
                    "broker {} does not coordinate consumer groups of group `{group}`'s slot any longer{}",
                    meta.id(),
                    coordinator.map_or_else(String::new, |id| format!(": broker {id} does")),
                )),
                Ok(other) => Err(format!("the cluster's metadata group answered {other:?}")),
                Err(e) => Err(format!(
                    "the cluster could not commit the group's change: {e}"
                )),
            }
        })
    }
}

impl OffsetReplication for MetaOffsets {
    fn lease(&self, group: &str) -> Option<u64> {
        lease_in(&self.held.borrow(), group)
    }

    fn commit(
        &self,
        group: String,
        offsets: Vec<(String, u32, i64)>,
        at_ms: i64,
        lease: u64,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.propose(MetaCommand::CommitOffsets {
            group,
            offsets,
            at_ms,
            epoch: Some(lease),
        })
    }

    fn mark_active(
        &self,
        group: String,
        at_ms: i64,
        lease: u64,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.propose(MetaCommand::MarkGroupActive {
            group,
            at_ms,
            epoch: Some(lease),
        })
    }

    fn delete(&self, group: String, lease: u64) -> BoxFuture<'static, Result<(), String>> {
        self.propose(MetaCommand::DeleteGroup {
            group,
            epoch: Some(lease),
        })
    }
}

/// The offsets the metadata state holds of the groups in `slots`.
fn replicated_groups(state: &ClusterState, slots: &Held) -> Vec<ReplicatedGroup> {
    state
        .groups
        .iter()
        .filter(|(group, _)| slots.contains_key(&coordinator_slot(group)))
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
    /// The epoch under which this broker coordinates `group` now, if it
    /// does.
    pub fn lease(&self, group: &str) -> Option<u64> {
        lease_in(&self.coordinating.borrow(), group)
    }

    /// The slots this broker coordinates, with their epochs; changes as
    /// slots come and go.
    pub fn coordinating(&self) -> watch::Receiver<Held> {
        self.coordinating.subscribe()
    }

    /// The broker that coordinates `group` by the metadata applied here,
    /// with its address when registered.
    pub fn coordinator_of(&self, group: &str) -> Option<(u64, Option<String>)> {
        self.meta.read_state(|state| {
            let lease = state.coordinator_of(group)?;
            let address = state
                .brokers
                .get(&lease.broker)
                .map(|broker| broker.address.clone());
            Some((lease.broker, address))
        })
    }

    /// Why a call for `group` is refused here, naming the broker that
    /// takes it when known.
    pub fn not_coordinator(&self, group: &str) -> String {
        let me = self.meta.id();
        let slot = coordinator_slot(group);
        match self.coordinator_of(group) {
            Some((id, Some(address))) if id != me => format!(
                "broker {me} does not coordinate consumer groups of slot {slot} (group `{group}`): broker {id} at {address} does"
            ),
            Some((id, None)) if id != me => format!(
                "broker {me} does not coordinate consumer groups of slot {slot} (group `{group}`): broker {id} does"
            ),
            Some(_) => format!(
                "broker {me} does not coordinate consumer groups of slot {slot} (group `{group}`) now: it is not in touch with the cluster's metadata leader, which will give the slot to another broker if it stays so"
            ),
            None => format!(
                "broker {me} does not coordinate consumer groups of slot {slot} (group `{group}`): no broker does yet, the cluster's metadata leader gives it to one shortly"
            ),
        }
    }

    /// Until `stop`: coordinates the groups of the slots the metadata
    /// state gives this broker, while the metadata leader confirms it may.
    pub(super) async fn coordinate_groups(self: Arc<Self>, stop: CancellationToken) {
        self.broker.replicate_offsets_through(Arc::new(MetaOffsets {
            meta: self.meta.clone(),
            held: self.coordinating.subscribe(),
        }));
        let mut metrics = self.meta.raft().metrics();
        loop {
            self.take_slots_given().await;
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                // A broker cut off from the leader may see no change.
                () = tokio::time::sleep(CONFIRMATION_SILENCE_MAX / 4) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Whether this broker is in touch with the metadata leader: it leads
    /// the metadata group in touch with a majority, or the leader asked
    /// within the last second having applied no more than this broker
    /// has. Only then is what it says of coordinators current.
    pub fn in_touch(&self) -> bool {
        self.meta.is_leading(CONFIRMATION_SILENCE_MAX)
            || self
                .meta
                .leases()
                .reached_within(CONFIRMATION_SILENCE_MAX, self.meta.applied_index())
    }

    /// The slots the metadata state gives this broker, when it may
    /// coordinate: it leads the metadata group in touch with a majority,
    /// or the leader confirmed lately and this broker has applied as far
    /// as the leader had then.
    fn slots_given(&self) -> Held {
        if !self.in_touch() {
            return Held::new();
        }
        let me = self.meta.id();
        self.meta.read_state(|state| {
            state
                .coordinators
                .iter()
                .filter(|(_, lease)| lease.broker == me)
                .map(|(slot, lease)| (*slot, lease.epoch))
                .collect()
        })
    }

    /// Gives up the slots no longer given to this broker (their sessions
    /// end, their offsets are forgotten), then takes the new ones (their
    /// offsets loaded before any call is taken for them).
    async fn take_slots_given(&self) {
        let given = self.slots_given();
        let held = self.coordinating.borrow().clone();
        if given == held {
            return;
        }
        let kept: Held = held
            .iter()
            .filter(|(slot, epoch)| given.get(slot) == Some(epoch))
            .map(|(slot, epoch)| (*slot, *epoch))
            .collect();
        if kept != held {
            let dropped: Vec<u32> = held
                .keys()
                .filter(|s| !kept.contains_key(s))
                .copied()
                .collect();
            self.publish_held(kept.clone());
            self.broker.forget_unkept_offsets().await;
            tracing::info!(slots = ?dropped, "this broker no longer coordinates these slots of consumer groups");
        }
        let gained: Held = given
            .iter()
            .filter(|(slot, _)| !kept.contains_key(slot))
            .map(|(slot, epoch)| (*slot, *epoch))
            .collect();
        if gained.is_empty() {
            return;
        }
        // The state that gave the slots holds every change made under their
        // earlier epochs: those came before the assignment in the log, or
        // were refused after it.
        let groups = self.meta.read_state(|state| {
            let still: Held = gained
                .iter()
                .filter(|(slot, epoch)| {
                    state.coordinators.get(slot).is_some_and(|lease| {
                        lease.epoch == **epoch && lease.broker == self.meta.id()
                    })
                })
                .map(|(slot, epoch)| (*slot, *epoch))
                .collect();
            (replicated_groups(state, &still), still)
        });
        let (loaded, taken) = groups;
        if taken.is_empty() {
            return;
        }
        self.broker.load_replicated_offsets(loaded);
        let mut now_held = kept;
        now_held.extend(taken.iter().map(|(slot, epoch)| (*slot, *epoch)));
        self.publish_held(now_held);
        tracing::info!(slots = ?taken.keys().collect::<Vec<_>>(), "this broker coordinates these slots of consumer groups");
    }

    fn publish_held(&self, held: Held) {
        self.meta.leases().set_held(held.clone());
        self.coordinating.send_replace(held);
    }
}

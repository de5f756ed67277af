//! Moving a partition group to other brokers while faults go on, as the
//! broker leading a partition does for `brook topic reassign`: at a moment
//! the seed chooses, one of the group's replicas (sometimes its leader) is
//! to be replaced by a broker that holds nothing; whichever replica leads
//! is asked to change the voters (`PartitionReplica::change_replicas`),
//! again after every refusal or timeout, until the change is made or
//! `MOVE_WITHIN` has passed. The replica that left goes on running for a
//! moment the seed chooses (a broker learns from the metadata group that
//! it no longer holds it), then stops and is never started again.
//!
//! Used by `partition_simulation.rs` only, hence not in `sim/mod.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use brook_cluster::partition::{PartitionGroups, PartitionReplica};
use brook_cluster::{BrokerNode, NodeId};
use parking_lot::Mutex;

use crate::sim::Faults;

/// How long the move may take from its moment, refusals and timeouts
/// included: faults stop at most 30 s in, after which it must succeed.
const MOVE_WITHIN: Duration = Duration::from_secs(90);
/// One attempt: the newcomer's catch-up and the two configuration
/// changes. An attempt on a leader cut off from the others would
/// otherwise wait for ever for its entries to commit.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(10);
/// How long the newcomer has to catch up in one attempt.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(5);
/// Between attempts, and while no replica leads.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How long stopping the replica that left may take.
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// The replica that left runs for up to this long after the change.
const LEFT_RUNS_MAX_MS: u64 = 3_000;

/// The replica each broker runs, and the broker that left the group.
#[derive(Default)]
pub struct Replicas(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    /// Each broker's latest replica (for the one that left: stopped) and
    /// the groups its Raft service routes to.
    started: BTreeMap<NodeId, (PartitionReplica, PartitionGroups)>,
    left: Option<NodeId>,
}

impl Replicas {
    /// Records a replica a broker started; `false` when that broker left
    /// the group meanwhile: the caller stops the replica instead.
    pub fn started(&self, replica: &PartitionReplica, groups: &PartitionGroups) -> bool {
        let mut inner = self.0.lock();
        if inner.left == Some(replica.id()) {
            return false;
        }
        inner
            .started
            .insert(replica.id(), (replica.clone(), groups.clone()));
        true
    }

    pub fn has_left(&self, id: NodeId) -> bool {
        self.0.lock().left == Some(id)
    }

    pub fn left(&self) -> Option<NodeId> {
        self.0.lock().left
    }

    /// A broker's latest replica, stopped for the one that left.
    pub fn get(&self, id: NodeId) -> Option<PartitionReplica> {
        self.0.lock().started.get(&id).map(|(r, _)| r.clone())
    }

    /// The running replicas of brokers that did not leave, in broker
    /// order. A crashed host's replica is not running: its Raft is gone,
    /// and the last metrics it sent may still say it leads.
    pub fn members(&self) -> Vec<PartitionReplica> {
        let inner = self.0.lock();
        inner
            .started
            .iter()
            .filter(|(id, (replica, _))| {
                inner.left != Some(**id) && replica.raft().metrics().has_changed().is_ok()
            })
            .map(|(_, (r, _))| r.clone())
            .collect()
    }

    /// The leader some member knows of.
    pub fn known_leader(&self) -> Option<NodeId> {
        self.members().iter().find_map(PartitionReplica::leader)
    }

    /// The member that leads in the latest term, among those that say
    /// they lead (a leader cut off from the others still does).
    fn leading(&self) -> Option<PartitionReplica> {
        self.members()
            .into_iter()
            .filter(PartitionReplica::is_leader)
            .max_by_key(PartitionReplica::term)
    }

    /// Takes broker `id` off the group: its replica stops and is never
    /// started again.
    async fn leave(&self, id: NodeId) {
        let started = {
            let mut inner = self.0.lock();
            inner.left = Some(id);
            inner.started.get(&id).cloned()
        };
        if let Some((replica, groups)) = started {
            groups.remove(replica.group());
            // A crashed host's Raft is gone already; stopping it again
            // only reports so.
            let _ = tokio::time::timeout(STOP_WITHIN, replica.shutdown()).await;
        }
    }
}

/// Which replica the move takes off the group.
#[derive(Debug, Clone, Copy)]
pub enum Leaving {
    /// The one leading when the move starts.
    Leader,
    Replica(NodeId),
}

/// When a run moves the partition, off which replica, and how long that
/// replica runs once it left.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub at: Duration,
    pub leaving: Leaving,
    pub left_runs: Duration,
}

impl Plan {
    /// The seed's move: between `from` and `until`, half of the time off
    /// the leader, otherwise off one of `original` (which may lead too).
    pub fn for_seed(seed: u64, original: &[NodeId], from: Duration, until: Duration) -> Self {
        // Another stream than the fault schedule's, which starts at `seed`.
        let mut draw = Faults(seed ^ 0x9e37_79b9_7f4a_7c15);
        let window = until
            .checked_sub(from)
            .expect("the window ends after it starts");
        let window = u64::try_from(window.as_millis()).expect("a short window");
        let at = from + Duration::from_millis(draw.next(window));
        let leaving = if draw.next(2) == 0 {
            Leaving::Leader
        } else {
            Leaving::Replica(original[draw.next(original.len() as u64) as usize])
        };
        let left_runs = Duration::from_millis(draw.next(LEFT_RUNS_MAX_MS));
        Self {
            at,
            leaving,
            left_runs,
        }
    }
}

/// What the move went through.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// The replica taken off, once chosen.
    pub leaving: Option<NodeId>,
    /// Whether it led the group when the move started.
    pub leaving_led: bool,
    /// The voters the group is to have.
    pub target: BTreeSet<NodeId>,
    /// Attempts made on a leader, and the last one's failure.
    pub attempts: u32,
    pub last_failure: Option<String>,
    /// When the change was made (simulated time).
    pub done_at: Option<Duration>,
}

/// The operator: moves the group off one of `original` onto `newcomer` as
/// `plan` says, recording what it went through in `progress`; fails when
/// the move is not done within `MOVE_WITHIN`.
pub async fn reassign(
    replicas: &Replicas,
    plan: Plan,
    original: &[NodeId],
    newcomer: NodeId,
    node: fn(NodeId) -> BrokerNode,
    progress: &Mutex<Progress>,
) -> turmoil::Result {
    tokio::time::sleep(plan.at).await;
    let deadline = plan.at + MOVE_WITHIN;
    let out_of_time = || -> turmoil::Result {
        if turmoil::elapsed() < deadline {
            return Ok(());
        }
        Err(format!(
            "the move did not finish within {} s: {:?}",
            MOVE_WITHIN.as_secs(),
            progress.lock()
        )
        .into())
    };
    let leaving = loop {
        match plan.leaving {
            Leaving::Replica(id) => break id,
            Leaving::Leader => {
                if let Some(leader) = replicas.leading() {
                    if !original.contains(&leader.id()) {
                        return Err(format!(
                            "broker {} leads a group it was never added to",
                            leader.id()
                        )
                        .into());
                    }
                    break leader.id();
                }
            }
        }
        out_of_time()?;
        tokio::time::sleep(RETRY_AFTER).await;
    };
    let target: BTreeMap<NodeId, BrokerNode> = original
        .iter()
        .copied()
        .filter(|id| *id != leaving)
        .chain([newcomer])
        .map(|id| (id, node(id)))
        .collect();
    {
        let mut progress = progress.lock();
        progress.leaving = Some(leaving);
        progress.leaving_led = replicas.leading().is_some_and(|l| l.id() == leaving);
        progress.target = target.keys().copied().collect();
    }
    loop {
        if let Some(leader) = replicas.leading() {
            progress.lock().attempts += 1;
            let attempt = leader.change_replicas(&target, CATCH_UP_WITHIN);
            let failure = match tokio::time::timeout(ATTEMPT_WITHIN, attempt).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => format!("on {}: {e}", leader.id()),
                Err(_) => format!("on {}: timed out", leader.id()),
            };
            progress.lock().last_failure = Some(failure);
        }
        out_of_time()?;
        tokio::time::sleep(RETRY_AFTER).await;
    }
    progress.lock().done_at = Some(turmoil::elapsed());
    tokio::time::sleep(plan.left_runs).await;
    replicas.leave(leaving).await;
    Ok(())
}

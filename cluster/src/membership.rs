//! Changing a group's voters, the same way for the metadata group and a
//! partition's group: the newcomers join as learners and are caught up
//! first, then openraft moves the group to the new voters through a joint
//! configuration. Only the leader can do it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{ChangeMembers, Raft, RaftMetrics, ServerState};

use crate::node::{ClusterError, write_failed};
use crate::types::{BrokerNode, EntryFormat, NodeId};

/// Entries a learner may still be behind the leader when it becomes a
/// voter: what arrives in a heartbeat or two under load. Waiting for none
/// at all could wait for ever while producers write.
const CATCH_UP_SLACK: u64 = 64;

/// The group's voters, as this member knows them (both halves of a
/// joint configuration).
pub fn voters<C: EntryFormat>(raft: &Raft<C>) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// The group's learners: members that do not vote (added for a change
/// that has not happened yet).
pub fn learners<C: EntryFormat>(raft: &Raft<C>) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .learner_ids()
        .collect()
}

/// Takes `learners` out of the group (on the leader): a change of voters
/// that was called off left them behind, and the leader would go on
/// replicating to them.
pub async fn remove_learners<C>(
    raft: &Raft<C>,
    learners: BTreeSet<NodeId>,
) -> Result<(), ClusterError>
where
    C: EntryFormat<Responder = openraft::raft::responder::OneshotResponder<C>>,
{
    raft.change_membership(ChangeMembers::RemoveNodes(learners), false)
        .await
        .map_err(write_failed)?;
    Ok(())
}

/// Whether the group's configuration is joint: a change of voters is
/// half done.
pub fn in_joint_config<C: EntryFormat>(raft: &Raft<C>) -> bool {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .get_joint_config()
        .len()
        > 1
}

/// Makes `target` the group's voters: those not in the group join as
/// learners and must catch up within `catch_up_within`, then the group
/// moves to them. Called on the leader; a leader that is not among the
/// targets leads until the change is committed, then steps down.
pub async fn replace_voters<C>(
    raft: &Raft<C>,
    target: &BTreeMap<NodeId, BrokerNode>,
    catch_up_within: Duration,
) -> Result<(), ClusterError>
where
    C: EntryFormat<Responder = openraft::raft::responder::OneshotResponder<C>>,
{
    let current = voters(raft);
    let wanted: BTreeSet<NodeId> = target.keys().copied().collect();
    if current == wanted && !in_joint_config(raft) {
        // The configuration may be one a change that timed out appended
        // and has not committed yet: done only once it is applied.
        return wait_membership_applied(raft, catch_up_within).await;
    }
    let known: BTreeSet<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    for (id, node) in target {
        if !known.contains(id) {
            raft.add_learner(*id, node.clone(), false)
                .await
                .map_err(write_failed)?;
        }
    }
    let newcomers: Vec<NodeId> = wanted.difference(&current).copied().collect();
    wait_caught_up(raft, &newcomers, catch_up_within).await?;
    raft.change_membership(ChangeMembers::ReplaceAllVoters(wanted), false)
        .await
        .map_err(write_failed)?;
    Ok(())
}

/// While `metrics` are a leader's: how many entries the member `id` is
/// behind its log (`None` when it is not the leader, or has not heard from
/// that member in this term).
pub fn entries_behind(metrics: &RaftMetrics<NodeId, BrokerNode>, id: NodeId) -> Option<u64> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let matched = metrics.replication.as_ref()?.get(&id).copied().flatten()?;
    Some(
        metrics
            .last_log_index
            .unwrap_or(0)
            .saturating_sub(matched.index),
    )
}

/// Waits until this leader has applied its latest configuration (which is
/// then committed).
async fn wait_membership_applied<C: EntryFormat>(
    raft: &Raft<C>,
    within: Duration,
) -> Result<(), ClusterError> {
    let mut metrics = raft.metrics();
    let applied = async {
        loop {
            {
                let now = metrics.borrow();
                if now.state != ServerState::Leader {
                    return Err(ClusterError::NotLeader {
                        leader: None,
                        reason: ": leadership moved while the group's configuration committed"
                            .to_owned(),
                    });
                }
                if now.membership_config.log_id().as_ref() <= now.last_applied.as_ref() {
                    return Ok(());
                }
            }
            if metrics.changed().await.is_err() {
                return Err(ClusterError::Stopped("the group's Raft stopped".to_owned()));
            }
        }
    };
    tokio::time::timeout(within, applied).await.map_err(|_| {
        ClusterError::Refused(format!(
            "the group's configuration was not committed within {} s",
            within.as_secs()
        ))
    })?
}

/// Waits until each of `learners` is at most `CATCH_UP_SLACK` entries
/// behind this leader's log.
async fn wait_caught_up<C: EntryFormat>(
    raft: &Raft<C>,
    learners: &[NodeId],
    within: Duration,
) -> Result<(), ClusterError> {
    if learners.is_empty() {
        return Ok(());
    }
    let mut metrics = raft.metrics();
    let caught_up = async {
        loop {
            {
                let now = metrics.borrow();
                if now.state != ServerState::Leader {
                    return Err(ClusterError::NotLeader {
                        leader: None,
                        reason: ": leadership moved while a new replica caught up".to_owned(),
                    });
                }
                if learners.iter().all(|id| {
                    entries_behind(&now, *id).is_some_and(|behind| behind <= CATCH_UP_SLACK)
                }) {
                    return Ok(());
                }
            }
            if metrics.changed().await.is_err() {
                return Err(ClusterError::Stopped("the group's Raft stopped".to_owned()));
            }
        }
    };
    tokio::time::timeout(within, caught_up)
        .await
        .map_err(|_| {
            ClusterError::Refused(format!(
                "broker(s) {learners:?} did not catch up with the group within {} s (not running, or unreachable?)",
                within.as_secs()
            ))
        })?
}

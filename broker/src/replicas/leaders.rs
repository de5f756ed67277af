//! Leadership back to preferred replicas. After a failure, a restart or a
//! move, a partition is led by whichever replica won its last election,
//! and leadership piles up on the brokers that stayed up. Every few
//! seconds, each broker hands the partitions it leads to their preferred
//! replica (the first in the partition's replica list) where that replica
//! is a voter and keeps up, one partition at a time, and only after it
//! has led for a while, so that a replica back from a restart has caught
//! up and leadership does not flap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_cluster::NodeId;
use tokio_util::sync::CancellationToken;

use super::{RaftReplication, Replicas};

/// How often this broker looks at the partitions it leads.
const BALANCE_EVERY: Duration = Duration::from_secs(5);
/// How long a replica leads before it hands leadership over.
const LEADING_BEFORE_HANDOVER: Duration = Duration::from_secs(10);
/// Entries the preferred replica may be behind to be asked to lead.
const BEHIND_MAX: u64 = 64;
/// How long one handover may hold the partition's appends back.
const HANDOVER_WITHIN: Duration = Duration::from_secs(1);
/// The most replicas a handover is tried with: the candidate wins with its
/// own vote and the leader's, and the others' leases (the leader's
/// heartbeats) keep them from voting, so beyond three replicas it would
/// only disrupt the partition.
const REPLICAS_HANDED_OVER_MAX: usize = 3;

impl Replicas {
    /// Until `stop`: hands the partitions this broker leads to their
    /// preferred replicas.
    pub(super) async fn balance_leaders(self: Arc<Self>, stop: CancellationToken) {
        let mut leading_since: HashMap<String, (u64, Instant)> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(BALANCE_EVERY) => {}
                () = stop.cancelled() => return,
            }
            let candidates = self.led_elsewhere_preferred();
            leading_since.retain(|group, _| candidates.iter().any(|(g, _, _)| g == group));
            for (group, replication, preferred) in candidates {
                let replica = replication.replica();
                let term = replica.term();
                let since = leading_since
                    .entry(group.clone())
                    .or_insert((term, Instant::now()));
                if since.0 != term {
                    *since = (term, Instant::now());
                }
                let voters = replica.voters();
                if since.1.elapsed() < LEADING_BEFORE_HANDOVER
                    || voters.len() > REPLICAS_HANDED_OVER_MAX
                    || !voters.contains(&preferred)
                    || replica
                        .entries_behind(preferred)
                        .is_none_or(|behind| behind > BEHIND_MAX)
                {
                    continue;
                }
                if stop.is_cancelled() {
                    return;
                }
                match replication
                    .hand_over(preferred, &*self.connector, HANDOVER_WITHIN)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(%group, to = preferred, "handed the partition's leadership to its preferred replica");
                    }
                    Ok(false) => {
                        tracing::debug!(%group, to = preferred, "the preferred replica did not take the partition's leadership; trying again later");
                    }
                    Err(e) => {
                        tracing::debug!(%group, to = preferred, error = %e, "could not hand the partition's leadership over; trying again later");
                    }
                }
            }
        }
    }

    /// The partitions this broker's replica leads whose preferred replica
    /// is on another broker, and not moving: group, replication,
    /// preferred broker.
    fn led_elsewhere_preferred(&self) -> Vec<(String, Arc<RaftReplication>, NodeId)> {
        let me = self.meta.id();
        let running: Vec<((String, u32), Arc<RaftReplication>)> = self
            .running
            .lock()
            .iter()
            .filter_map(|(key, replication)| Some((key.clone(), replication.clone()?)))
            .filter(|(_, replication)| replication.replica().is_leader())
            .collect();
        self.meta.read_state(|state| {
            running
                .into_iter()
                .filter_map(|((topic, index), replication)| {
                    let assignment = state.topics.get(&topic)?;
                    if assignment.moves.contains_key(&index) {
                        return None;
                    }
                    let preferred = *assignment.replicas.get(index as usize)?.first()?;
                    (preferred != me).then(|| {
                        (
                            replication.replica().group().to_owned(),
                            replication,
                            preferred,
                        )
                    })
                })
                .collect()
        })
    }
}

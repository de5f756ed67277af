//! A partition's appends through its Raft group: the engine's
//! [`Replication`] over the replica's [`Proposer`].

use brook_cluster::network::client::Connector;
use brook_cluster::partition::{AppliedBatch, PartitionReplica, Proposer};
use brook_cluster::{ClusterError, NodeId};
use brook_engine::{Acknowledgement, AcknowledgementFuture, AppendFailure, Leader, Replication};
use brook_storage::BatchOutcome;
use bytes::Bytes;
use std::time::Duration;

/// How long a leader may go without hearing from a majority of its
/// replicas before it refuses new appends: the other replicas stand for
/// election 0.75-0.8 s after the last heartbeat they had, so by then one
/// of them may lead and this one's appends could never commit.
const QUORUM_SILENCE_MAX: Duration = Duration::from_secs(1);

/// Appends to one partition through the group this broker's replica
/// belongs to; on a replica that does not lead, refuses naming the leader.
#[derive(Debug)]
pub struct RaftReplication {
    proposer: Proposer,
    replica: PartitionReplica,
    /// Held exclusively while leadership is handed over: appends wait
    /// instead of lengthening the log the next leader must match.
    handing_over: tokio::sync::RwLock<()>,
}

impl RaftReplication {
    pub fn new(replica: PartitionReplica) -> Self {
        Self {
            proposer: Proposer::start(replica.clone()),
            replica,
            handing_over: tokio::sync::RwLock::new(()),
        }
    }

    /// Hands this replica's leadership to broker `to`'s replica (see
    /// `PartitionReplica::hand_over`), holding appends back meanwhile; they
    /// then go on here, or are refused naming the new leader.
    pub async fn hand_over(
        &self,
        to: NodeId,
        connector: &dyn Connector,
        within: Duration,
    ) -> Result<bool, ClusterError> {
        let _held = self.handing_over.write().await;
        self.replica.hand_over(to, connector, within).await
    }

    pub fn replica(&self) -> &PartitionReplica {
        &self.replica
    }
}

impl RaftReplication {
    /// How long this replica, leading, has not heard from a majority of
    /// the group, when that is longer than [`QUORUM_SILENCE_MAX`].
    fn quorum_lost_for(&self) -> Option<u64> {
        let silence = self.replica.quorum_silence()?;
        (silence > QUORUM_SILENCE_MAX).then_some(silence.as_millis() as u64)
    }
}

impl Replication for RaftReplication {
    fn read_refusal(&self) -> Option<String> {
        let silence = self.quorum_lost_for()?;
        Some(format!(
            "this broker's replica leads the partition but has heard from no majority of its replicas for {silence} ms (cut off from them?): it would serve nothing newer; another may lead it by now"
        ))
    }

    // The future resolves once the batches are queued, into the one that
    // resolves once they are committed: two waits, on purpose.
    #[allow(clippy::async_yields_async)]
    fn submit(&self, batches: Vec<Bytes>) -> AcknowledgementFuture<'_> {
        Box::pin(async move {
            if let Some(silence) = self.quorum_lost_for() {
                // It could not commit them; the client is better off
                // asking another broker than waiting for its timeout.
                let refused: Acknowledgement = Box::pin(async move {
                    Err(AppendFailure::Unavailable(format!(
                        "this broker's replica leads the partition but has heard from no majority of its replicas for {silence} ms (cut off from them?); another may lead it by now"
                    )))
                });
                return refused;
            }
            let answer = {
                let _not_handing_over = self.handing_over.read().await;
                self.proposer.submit(batches).await
            };
            let acknowledgement: Acknowledgement = Box::pin(async move {
                match answer.await {
                    Ok(applied) => outcomes(applied),
                    Err(e) => Err(failure(e)),
                }
            });
            acknowledgement
        })
    }
}

/// What applying gave each batch, as the engine reports it. A batch that
/// was not appended for a reason other than its sequence fails the whole
/// request: it happens only to a batch whose header the leader took and
/// the state machine could not parse.
fn outcomes(applied: Vec<AppliedBatch>) -> Result<Vec<BatchOutcome>, AppendFailure> {
    applied
        .into_iter()
        .map(|batch| match batch {
            AppliedBatch::Appended { base_offset } => Ok(BatchOutcome::Appended(base_offset)),
            AppliedBatch::Duplicate { base_offset } => Ok(BatchOutcome::Duplicate(base_offset)),
            AppliedBatch::Sequence(refused) => Ok(BatchOutcome::Refused(refused)),
            AppliedBatch::Refused { reason } => Err(AppendFailure::Unavailable(format!(
                "the replicas did not append a batch: {reason}"
            ))),
        })
        .collect()
}

fn failure(error: ClusterError) -> AppendFailure {
    match error {
        ClusterError::NotLeader { leader, .. } => {
            AppendFailure::NotLeader(leader.map(|(id, node)| Leader {
                id,
                address: node.address,
            }))
        }
        other => AppendFailure::Unavailable(other.to_string()),
    }
}

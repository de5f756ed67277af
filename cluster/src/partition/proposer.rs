//! Group commit at the Raft level: concurrent produces to one partition
//! become few Raft entries.
//!
//! openraft commits, replicates and applies entry by entry, and pays a
//! Raft-log fsync per append it is handed; a produce per entry would be
//! bound by that. The proposer takes every produce waiting when it is free
//! to propose, in arrival order, and proposes their batches as one entry;
//! while up to `ENTRIES_IN_FLIGHT` entries are being committed, the next
//! requests gather. Each caller gets the outcomes of its own batches.
//! Entries are submitted in order (`client_write_ff`), so batches keep
//! their arrival order in the log.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::replica::PartitionReplica;
use super::types::{AppliedBatch, ProduceCommand};
use crate::node::{ClusterError, write_refused};

/// Produce requests waiting before callers wait (backpressure).
const QUEUE_LEN: usize = 4096;
/// Requests one entry takes at most.
const REQUESTS_PER_ENTRY_MAX: usize = 512;
/// Bytes of batches one entry takes at most (but always one request):
/// entries travel whole in AppendEntries, which has to stay well under
/// the gRPC message limit between brokers.
pub const ENTRY_BYTES_MAX: usize = 1024 * 1024;
/// Entries proposed and not yet answered, at most.
const ENTRIES_IN_FLIGHT: usize = 8;

type Reply = oneshot::Sender<Result<Vec<AppliedBatch>, ClusterError>>;

/// One caller's batches, and where their outcomes go.
struct Request {
    batches: Vec<Bytes>,
    reply: Reply,
}

/// Proposes a replica's produces, grouped; clones share the task, which
/// ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Proposer {
    requests: mpsc::Sender<Request>,
}

impl Proposer {
    /// Starts the proposer of `replica` on the current runtime.
    pub fn start(replica: PartitionReplica) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE_LEN);
        tokio::spawn(propose(replica, queue));
        Self { requests }
    }

    /// Appends `batches` through the group, after those of every earlier
    /// call; the outcome of each, in order, once committed and applied.
    pub async fn produce(&self, batches: Vec<Bytes>) -> Result<Vec<AppliedBatch>, ClusterError> {
        self.submit(batches).await.await
    }

    /// Queues `batches` after those of every earlier call; what it returns
    /// resolves to their outcomes once they are committed and applied.
    /// Queuing order is append order.
    pub async fn submit(
        &self,
        batches: Vec<Bytes>,
    ) -> impl Future<Output = Result<Vec<AppliedBatch>, ClusterError>> + Send + 'static {
        let stopped = || ClusterError::Stopped("the proposer stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        let queued = self.requests.send(Request { batches, reply }).await;
        async move {
            queued.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
    }
}

async fn propose(replica: PartitionReplica, mut queue: mpsc::Receiver<Request>) {
    let mut in_flight = FuturesUnordered::new();
    let mut waiting = Vec::with_capacity(REQUESTS_PER_ENTRY_MAX);
    let mut open = true;
    while open || !in_flight.is_empty() || !waiting.is_empty() {
        if !waiting.is_empty() && in_flight.len() < ENTRIES_IN_FLIGHT {
            let requests = take_entry(&mut waiting);
            let command = ProduceCommand {
                batches: requests
                    .iter()
                    .flat_map(|r| r.batches.iter().cloned())
                    .collect(),
                now_ms: brook_storage::now_ms(),
            };
            match replica.raft().client_write_ff(command).await {
                Ok(answer) => in_flight.push(async move {
                    let outcome = match answer.await {
                        Ok(Ok(written)) => Ok(written.data.batches),
                        Ok(Err(refused)) => Err(write_refused(refused)),
                        Err(_) => Err(ClusterError::Stopped("the Raft stopped".to_owned())),
                    };
                    answer_each(requests, outcome);
                }),
                Err(fatal) => {
                    answer_each(requests, Err(ClusterError::Stopped(fatal.to_string())));
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            received = queue.recv_many(&mut waiting, REQUESTS_PER_ENTRY_MAX),
                if open && waiting.is_empty() =>
            {
                if received == 0 {
                    open = false;
                }
            }
        }
    }
}

/// The requests at the front of `waiting` that make one entry: up to
/// `ENTRY_BYTES_MAX` of batches, and at least one request.
fn take_entry(waiting: &mut Vec<Request>) -> Vec<Request> {
    let mut bytes = 0;
    let mut count = 0;
    for request in waiting.iter() {
        let size: usize = request.batches.iter().map(Bytes::len).sum();
        if count > 0 && bytes + size > ENTRY_BYTES_MAX {
            break;
        }
        bytes += size;
        count += 1;
    }
    let rest = waiting.split_off(count);
    std::mem::replace(waiting, rest)
}

/// Gives each request the outcomes of its own batches, in order.
fn answer_each(requests: Vec<Request>, outcome: Result<Vec<AppliedBatch>, ClusterError>) {
    match outcome {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for request in requests {
                let own: Vec<AppliedBatch> =
                    outcomes.by_ref().take(request.batches.len()).collect();
                let _ = request.reply.send(Ok(own));
            }
        }
        Err(e) => {
            for request in requests {
                let _ = request.reply.send(Err(clone_error(&e)));
            }
        }
    }
}

fn clone_error(e: &ClusterError) -> ClusterError {
    match e {
        ClusterError::NotLeader { leader, reason } => ClusterError::NotLeader {
            leader: leader.clone(),
            reason: reason.clone(),
        },
        ClusterError::Refused(reason) => ClusterError::Refused(reason.clone()),
        other => ClusterError::Stopped(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use brook_record::{BatchBuilder, BatchOptions, NewRecord};
    use brook_storage::testing::MemStorage;
    use brook_storage::{LogConfig, PartitionLog};

    use super::*;
    use crate::network::client::{RemoteLog, TcpConnector};
    use crate::partition::PartitionReplicaConfig;
    use crate::types::BrokerNode;

    fn batch(value: usize) -> Bytes {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        builder.push(&NewRecord {
            timestamp: 1,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
        });
        builder.build().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_produces_share_entries_and_each_gets_its_own_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PartitionLog::open(
            Arc::new(MemStorage::default()),
            Path::new("/topics/t/0"),
            LogConfig::default(),
        )
        .unwrap();
        let connector = Arc::new(TcpConnector::plain(Duration::from_secs(1)));
        let replica = PartitionReplica::start(
            &PartitionReplicaConfig::new(1, "t/0", dir.path()),
            Arc::new(log),
            connector.clone(),
            Arc::new(RemoteLog::new(connector)),
        )
        .await
        .unwrap();
        replica
            .initialize(BTreeMap::from([(1, BrokerNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        // A group of one elects itself, but not at once.
        let elected = tokio::time::timeout(Duration::from_secs(10), async {
            while replica.leader() != Some(1) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        elected.await.unwrap();
        let proposer = Proposer::start(replica.clone());
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let proposer = proposer.clone();
                tokio::spawn(async move { proposer.produce(vec![batch(i), batch(i)]).await })
            })
            .collect();
        let mut offsets = Vec::new();
        for call in calls {
            let outcomes = call.await.unwrap().unwrap();
            assert_eq!(outcomes.len(), 2);
            for outcome in outcomes {
                let AppliedBatch::Appended { base_offset } = outcome else {
                    panic!("{outcome:?}");
                };
                offsets.push(base_offset);
            }
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..400).collect::<Vec<i64>>());
        // A blank entry, the membership, and far fewer entries than calls.
        let entries = replica.raft().metrics().borrow().last_log_index.unwrap();
        assert!(entries < 100, "{entries} entries for 200 produces");
        assert_eq!(replica.log().high_watermark(), 400);
        replica.shutdown().await;
    }
}

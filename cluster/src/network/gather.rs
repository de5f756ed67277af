//! Heartbeats of several groups to one peer, sent as one call.
//!
//! A broker's partition groups send their heartbeats together (see
//! `partition::HeartbeatClock`). Each peer has a task here that sends what
//! the groups hand it as `AppendEntriesBatch`: the first call at once, and
//! whatever arrives while calls are under way (up to `BATCHES_IN_FLIGHT`)
//! as the next one. Each group
//! gets the answer AppendEntries would have given it alone. A peer that
//! does not know the call (a broker of an earlier release) is sent them
//! one by one for a while.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::cluster::{RaftPayload, RaftPayloads};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use super::client::{ChannelCache, peer_request};
use super::raft_client;

/// What a call with one payload returns.
pub type Answer = Result<RaftPayload, Status>;

/// The answer to a gathered call, once its batch is answered.
pub type Gathered = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Calls one batch takes at most (heartbeats are about 100 bytes each).
const CALLS_PER_BATCH_MAX: usize = 1024;

/// Batches under way to one peer at most: one slow answer (a group whose
/// Raft is busy on the peer) must not hold back the other groups'
/// heartbeats until their followers stand for election.
const BATCHES_IN_FLIGHT: usize = 4;

/// How long a peer that did not know `AppendEntriesBatch` is sent calls
/// one by one before it is asked again (it may have been upgraded).
const ALONE_FOR: Duration = Duration::from_secs(60);

/// One call waiting for its batch.
struct Call {
    payload: RaftPayload,
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// The gathering task of each peer a broker's groups call.
#[derive(Default)]
pub(crate) struct Gatherers {
    peers: Mutex<HashMap<String, mpsc::UnboundedSender<Call>>>,
}

impl Gatherers {
    /// Sends `payload` to the peer at `address` in the next batch, over
    /// `channels`; `timeout` bounds the batch it goes in.
    ///
    /// The queue of a peer holds at most one call per group (openraft has
    /// one AppendEntries in flight per group and peer), so it is bounded
    /// by the groups the broker leads.
    pub(crate) fn call(
        &self,
        channels: &Arc<ChannelCache>,
        address: &str,
        payload: RaftPayload,
        timeout: Duration,
    ) -> Gathered {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            payload,
            deadline: Instant::now() + timeout,
            reply,
        };
        let mut peers = self.peers.lock();
        let queue = peers.entry(address.to_owned()).or_insert_with(|| {
            let (queue, calls) = mpsc::unbounded_channel();
            tokio::spawn(gather(channels.clone(), address.to_owned(), calls));
            queue
        });
        if let Err(unsent) = queue.send(call) {
            // The task ended (its runtime is shutting down): say so.
            let _ = unsent.0.reply.send(Err(Status::unavailable(
                "the broker's calls to this peer stopped",
            )));
        }
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(Status::unavailable(
                    "the broker's calls to this peer stopped",
                ))
            })
        })
    }
}

/// Sends the calls to `address` in batches, up to `BATCHES_IN_FLIGHT` at
/// a time, until the broker drops its gatherers.
async fn gather(
    channels: Arc<ChannelCache>,
    address: String,
    mut calls: mpsc::UnboundedReceiver<Call>,
) {
    let mut alone_until: Option<Instant> = None;
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(refused) = in_flight.next(), if !in_flight.is_empty() => {
                if refused {
                    tracing::info!(peer = %address, "the peer does not take gathered heartbeats (an earlier release?): sending them one by one");
                    alone_until = Some(Instant::now() + ALONE_FOR);
                }
            }
            first = calls.recv(), if in_flight.len() < BATCHES_IN_FLIGHT => {
                let Some(first) = first else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < CALLS_PER_BATCH_MAX {
                    match calls.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                let alone = alone_until.is_some_and(|until| Instant::now() < until);
                in_flight.push(send_batch(channels.clone(), address.clone(), batch, alone));
            }
        }
    }
}

/// Sends `batch` in one call (or each call alone, with `alone`), and
/// answers each caller; whether the peer refused the batch as a call it
/// does not know (the calls were then sent alone).
async fn send_batch(
    channels: Arc<ChannelCache>,
    address: String,
    mut batch: Vec<Call>,
    alone: bool,
) -> bool {
    // openraft gave up on these (its time limit): not worth sending.
    batch.retain(|call| !call.reply.is_closed());
    let Some(deadline) = batch.iter().map(|call| call.deadline).max() else {
        return false;
    };
    let channel = match channels.channel(&address) {
        Ok(channel) => channel,
        Err(e) => {
            let reason = format!("the address is not usable: {e}");
            for call in batch {
                let _ = call.reply.send(Err(Status::unavailable(reason.clone())));
            }
            return false;
        }
    };
    let mut client = raft_client(channel);
    if alone {
        send_alone(&channels, &mut client, batch).await;
        return false;
    }
    let (payloads, calls_waiting): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|call| (call.payload, (call.reply, call.deadline)))
        .unzip();
    let request = peer_request(
        channels.connector(),
        RaftPayloads {
            payloads: payloads.clone(),
        },
        deadline.saturating_duration_since(Instant::now()),
    );
    match client.append_entries_batch(request).await {
        Ok(answers) => {
            let answers = answers.into_inner().answers;
            if answers.len() != calls_waiting.len() {
                let wrong = format!(
                    "the peer answered {} of {} gathered calls",
                    answers.len(),
                    calls_waiting.len()
                );
                for (reply, _) in calls_waiting {
                    let _ = reply.send(Err(Status::internal(wrong.clone())));
                }
                return false;
            }
            for ((reply, _), answer) in calls_waiting.into_iter().zip(answers) {
                let answer = match (answer.code, answer.payload) {
                    (0, Some(payload)) => Ok(payload),
                    (0, None) => Err(Status::internal("the peer answered no payload")),
                    (code, _) => Err(Status::new(tonic::Code::from(code), answer.message)),
                };
                let _ = reply.send(answer);
            }
            false
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let batch = payloads
                .into_iter()
                .zip(calls_waiting)
                .map(|(payload, (reply, deadline))| Call {
                    payload,
                    deadline,
                    reply,
                })
                .collect();
            send_alone(&channels, &mut client, batch).await;
            true
        }
        Err(status) => {
            for (reply, _) in calls_waiting {
                let _ = reply.send(Err(Status::new(status.code(), status.message())));
            }
            false
        }
    }
}

/// Sends each call of `batch` as an AppendEntries of its own, at once.
async fn send_alone(
    channels: &ChannelCache,
    client: &mut brook_proto::cluster::raft_service_client::RaftServiceClient<
        tonic::transport::Channel,
    >,
    batch: Vec<Call>,
) {
    let sent = batch.into_iter().map(|call| {
        let mut client = client.clone();
        let request = peer_request(
            channels.connector(),
            call.payload,
            call.deadline.saturating_duration_since(Instant::now()),
        );
        async move {
            let answer = client
                .append_entries(request)
                .await
                .map(tonic::Response::into_inner);
            let _ = call.reply.send(answer);
        }
    });
    futures::future::join_all(sent).await;
}

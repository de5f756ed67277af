//! The member's session with the broker: a background task that holds the
//! `Session` stream, joins, heartbeats at the interval the broker asked for,
//! passes assignments on as [`SessionEvent`]s and sends what the member
//! asks for ([`SessionCommand`]). When the stream breaks it reports the
//! member as lost and joins again, as a new member, after a backoff.
//!
//! Invariants: heartbeats go out whatever the member is doing (the task
//! never waits on the member to send one); events reach the member in the
//! order the broker sent them, and a `Lost` follows every session that
//! ended otherwise than by `leave`; a command is sent only on the session
//! it was made for (each join starts a new `session` number), so an
//! acknowledgement meant for a dead session never reaches a new one.

use std::collections::VecDeque;
use std::time::Duration;

use brook_proto as proto;
use brook_proto::group_request::Kind as RequestKind;
use brook_proto::group_response::Kind as ResponseKind;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::client::{GroupClient, TopicPartition, from_proto_partition, to_proto_partition};
use crate::error::ClientError;
use crate::resilience::Backoff;

/// How far the backoff grows while brokers answer that they do not
/// coordinate the group (`retry_backoff` doubled this many times: 200 ms
/// by default).
const NOT_COORDINATOR_BACKOFF_STEPS: u32 = 2;
/// Events queued for the member; small, as they come only with rebalances.
pub(crate) const EVENTS_MAX: usize = 16;
/// Broker messages read ahead while the member does not take its events;
/// past this the task stops reading the stream (heartbeats go on).
const PENDING_MAX: usize = 64;
/// Requests queued for the stream; heartbeats are dropped when it is full
/// (the broker is not reading then anyway).
const REQUESTS_MAX: usize = 16;
/// Commands queued from the member.
pub(crate) const COMMANDS_MAX: usize = 16;
/// The longest wait for the broker to end the stream after a `leave`.
const LEAVE_WAIT_MAX: Duration = Duration::from_secs(5);

/// The newest member id and generation the broker sent, published as soon
/// as they are read (before the member has processed them): a commit must
/// name the member's newest generation, which the broker may have moved on
/// while the member was busy.
#[derive(Debug, Default)]
pub(crate) struct Latest {
    /// The session these belong to (joins so far).
    pub session: u64,
    pub member_id: String,
    pub generation: u64,
}

/// What the session tells the member.
#[derive(Debug)]
pub(crate) enum SessionEvent {
    /// Joined (again): a new member id. `session` numbers the joins.
    Joined {
        session: u64,
        member_id: String,
        generation: u64,
    },
    /// The member's partitions as of `generation`.
    Assignment {
        generation: u64,
        assigned: Vec<TopicPartition>,
        revoke: Vec<TopicPartition>,
    },
    /// The session broke: the member is (or will soon be) removed and owns
    /// nothing. A new join follows.
    Lost { reason: String },
    /// Joining failed for good; the task has ended.
    Failed(ClientError),
}

/// What the member asks the session to send.
#[derive(Debug)]
pub(crate) enum SessionCommand {
    /// Acknowledges the revocation of `partitions` asked for in `generation`,
    /// on session `session`.
    Revoked {
        session: u64,
        generation: u64,
        partitions: Vec<TopicPartition>,
    },
    /// Leaves the group and ends the task; `done` is answered once the
    /// broker ended the stream (or after `LEAVE_WAIT_MAX`).
    Leave { done: oneshot::Sender<()> },
}

/// The member's end of the session task. Dropping it aborts the task,
/// which drops the stream: the broker removes the member at once.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    /// To the session task; bounded by `COMMANDS_MAX`.
    pub commands: mpsc::Sender<SessionCommand>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Starts the session task; its first event is `Joined` or `Failed`.
    pub fn spawn(
        client: GroupClient,
        join: proto::JoinGroup,
        backoff: Backoff,
        events: mpsc::Sender<SessionEvent>,
        latest: watch::Sender<Latest>,
    ) -> Self {
        let (commands, commands_rx) = mpsc::channel(COMMANDS_MAX);
        let task = tokio::spawn(
            Session {
                client,
                join,
                backoff,
                events,
                commands: commands_rx,
                joins: 0,
                latest,
            }
            .run(),
        );
        Self { commands, task }
    }

    /// Sends `leave` and waits (bounded) until the broker ended the stream.
    pub async fn leave(&self) {
        let (done, left) = oneshot::channel();
        if self
            .commands
            .send(SessionCommand::Leave { done })
            .await
            .is_ok()
        {
            // An error: the task ended without answering, which ends the session too.
            let _ = timeout(LEAVE_WAIT_MAX * 2, left).await;
        }
        self.task.abort();
    }

    /// Ends the session without a goodbye: the stream is dropped.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Session {
    client: GroupClient,
    join: proto::JoinGroup,
    backoff: Backoff,
    /// To the member; bounded by `EVENTS_MAX`.
    events: mpsc::Sender<SessionEvent>,
    /// From the member; bounded by `COMMANDS_MAX`.
    commands: mpsc::Receiver<SessionCommand>,
    /// Joins so far; the current session's number.
    joins: u64,
    /// Written on every `joined` and assignment.
    latest: watch::Sender<Latest>,
}

/// An open session after `joined`.
struct Open {
    requests: mpsc::Sender<proto::GroupRequest>,
    responses: Streaming<proto::GroupResponse>,
    joined: proto::Joined,
}

/// How a session ended.
enum Ended {
    /// The member left; the task ends.
    Left,
    /// The member is gone (its handle dropped); the task ends.
    Closed,
    /// The stream broke.
    Broken(String),
}

impl Session {
    async fn run(mut self) {
        let mut attempt = 0_u32;
        loop {
            match self.open().await {
                Ok(open) => {
                    attempt = 0;
                    match self.serve(open).await {
                        Ended::Left | Ended::Closed => return,
                        Ended::Broken(reason) => {
                            tracing::warn!(group = %self.join.group, %reason, "group session broke; joining again");
                            // The coordinator may have moved, or be gone.
                            self.client.find_coordinator(&self.join.group).await;
                            if !self.emit(SessionEvent::Lost { reason }).await {
                                return;
                            }
                        }
                    }
                }
                // A broker of a cluster that does not coordinate the
                // groups (now): the coordinator is asked for and tried.
                Err(error) if error.is_not_coordinator() => {
                    tracing::info!(group = %self.join.group, %error, "joining at the group's coordinator");
                    self.client.find_coordinator(&self.join.group).await;
                    // The group is moving to another broker, which takes
                    // it within seconds: asked again soon, not ever later.
                    attempt = attempt.min(NOT_COORDINATOR_BACKOFF_STEPS);
                }
                Err(error) if self.joins == 0 || !error.is_retryable() => {
                    self.emit(SessionEvent::Failed(error)).await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(group = %self.join.group, %error, "joining the group again failed; retrying");
                    if error.is_broker_unreachable() {
                        self.client.find_coordinator(&self.join.group).await;
                    }
                }
            }
            let delay = self.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wait_for_leave(&mut self.commands) => return,
            }
        }
    }

    /// Passes `event` to the member; false if the member is gone or asked
    /// to leave meanwhile.
    async fn emit(&mut self, event: SessionEvent) -> bool {
        tokio::select! {
            sent = self.events.send(event) => sent.is_ok(),
            () = wait_for_leave(&mut self.commands) => false,
        }
    }

    /// Opens a stream and joins; a new session number once joined.
    async fn open(&mut self) -> Result<Open, ClientError> {
        let (requests, requests_rx) = mpsc::channel(REQUESTS_MAX);
        requests
            .try_send(proto::GroupRequest {
                kind: Some(RequestKind::Join(self.join.clone())),
            })
            .expect("a new channel has room for the join");
        let mut responses = self
            .client
            .open_session(&self.join.group, ReceiverStream::new(requests_rx))
            .await?;
        let limit = self.client.client().options().request_timeout;
        let first = timeout(limit, responses.message())
            .await
            .map_err(|_elapsed| ClientError::Timeout {
                operation: "join_group",
                after: limit,
            })?
            .map_err(|status| ClientError::status("join_group", status))?;
        match first.and_then(|r| r.kind) {
            Some(ResponseKind::Joined(joined)) => {
                self.joins += 1;
                self.latest.send_replace(Latest {
                    session: self.joins,
                    member_id: joined.member_id.clone(),
                    generation: joined.generation,
                });
                tracing::info!(
                    group = %self.join.group,
                    member_id = %joined.member_id,
                    generation = joined.generation,
                    "joined the group"
                );
                Ok(Open {
                    requests,
                    responses,
                    joined,
                })
            }
            None => Err(ClientError::StreamClosed {
                operation: "join_group",
            }),
            Some(other) => Err(ClientError::Protocol(format!(
                "the first answer of a group session is `joined`, not {other:?}"
            ))),
        }
    }

    /// Runs one joined session until it ends.
    async fn serve(&mut self, open: Open) -> Ended {
        let Open {
            requests,
            mut responses,
            joined,
        } = open;
        let session = self.joins;
        let mut heartbeat = tokio::time::interval(heartbeat_interval(&joined));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut pending = VecDeque::from([SessionEvent::Joined {
            session,
            member_id: joined.member_id,
            generation: joined.generation,
        }]);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None => return Ended::Closed,
                    Some(SessionCommand::Revoked { session: of, generation, partitions }) => {
                        if of != session {
                            continue;
                        }
                        let revoked = proto::GroupRequest {
                            kind: Some(RequestKind::Revoked(proto::RevocationDone {
                                generation,
                                partitions: partitions.iter().map(to_proto_partition).collect(),
                            })),
                        };
                        if requests.send(revoked).await.is_err() {
                            return Ended::Broken("the session stream closed".to_owned());
                        }
                    }
                    Some(SessionCommand::Leave { done }) => {
                        leave(requests, &mut responses).await;
                        let _ = done.send(());
                        return Ended::Left;
                    }
                },
                permit = self.events.reserve(), if !pending.is_empty() => match permit {
                    Ok(permit) => permit.send(pending.pop_front().expect("not empty")),
                    Err(_closed) => return Ended::Closed,
                },
                _ = heartbeat.tick() => {
                    let beat = proto::GroupRequest {
                        kind: Some(RequestKind::Heartbeat(proto::Heartbeat {})),
                    };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = requests.try_send(beat) {
                        return Ended::Broken("the session stream closed".to_owned());
                    }
                },
                message = responses.message(), if pending.len() < PENDING_MAX => match message {
                    Ok(Some(proto::GroupResponse { kind: Some(ResponseKind::Assignment(a)) })) => {
                        self.latest.send_if_modified(|latest| {
                            let newer = a.generation > latest.generation;
                            latest.generation = latest.generation.max(a.generation);
                            newer
                        });
                        pending.push_back(SessionEvent::Assignment {
                            generation: a.generation,
                            assigned: a.assigned.into_iter().map(from_proto_partition).collect(),
                            revoke: a.revoke.into_iter().map(from_proto_partition).collect(),
                        });
                    }
                    Ok(Some(other)) => {
                        tracing::debug!(?other, "unexpected group session message ignored");
                    }
                    Ok(None) => return Ended::Broken("the broker ended the session".to_owned()),
                    Err(status) => return Ended::Broken(format!(
                        "{:?}: {}", status.code(), status.message()
                    )),
                },
            }
        }
    }
}

/// Between sessions: returns once the member asked to leave (answering
/// it) or is gone; acknowledgements meant for the dead session are dropped.
async fn wait_for_leave(commands: &mut mpsc::Receiver<SessionCommand>) {
    loop {
        match commands.recv().await {
            None => return,
            Some(SessionCommand::Leave { done }) => {
                let _ = done.send(());
                return;
            }
            Some(SessionCommand::Revoked { .. }) => {}
        }
    }
}

/// Sends `leave`, closes the request side and waits (bounded) for the
/// broker to end the stream, so the member is gone when this returns.
async fn leave(
    requests: mpsc::Sender<proto::GroupRequest>,
    responses: &mut Streaming<proto::GroupResponse>,
) {
    let leave = proto::GroupRequest {
        kind: Some(RequestKind::Leave(proto::LeaveGroup {})),
    };
    if requests.send(leave).await.is_err() {
        return;
    }
    drop(requests);
    let _ = timeout(LEAVE_WAIT_MAX, async {
        while let Ok(Some(_)) = responses.message().await {}
    })
    .await;
}

/// The broker's interval; a third of the session timeout if it gave none.
fn heartbeat_interval(joined: &proto::Joined) -> Duration {
    let ms = match (joined.heartbeat_interval_ms, joined.session_timeout_ms) {
        (0, 0) => 1000,
        (0, session) => (session / 3).max(1),
        (interval, _) => interval,
    };
    Duration::from_millis(u64::from(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_follows_the_broker() {
        let joined = |interval, session| proto::Joined {
            member_id: "m".into(),
            generation: 1,
            heartbeat_interval_ms: interval,
            session_timeout_ms: session,
        };
        assert_eq!(
            heartbeat_interval(&joined(100, 300)),
            Duration::from_millis(100)
        );
        assert_eq!(
            heartbeat_interval(&joined(0, 300)),
            Duration::from_millis(100)
        );
        assert_eq!(heartbeat_interval(&joined(0, 0)), Duration::from_secs(1));
    }
}

//! The member's state and the rebalance protocol, shared by both ways of
//! consuming (the `Stream` and `run`): which partitions it owns, its member
//! id and generation, the internal [`Consumer`] that reads them, and what
//! happens on each session event.
//!
//! Invariants: a partition leaves the consumer's assignment before any
//! work on it is waited for, so no record of it is handed out after its
//! revocation began; the revocation is acknowledged only after that work
//! ended and what it finished was committed (`Work::revoke`); a newly
//! assigned partition is sought to its committed offset before a record of
//! it can be handed out. The identity lock is never held across an await.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::client::{GroupClient, PartitionOffset, TopicPartition};
use super::error::GroupError;
use super::session::{Latest, SessionCommand, SessionEvent};
use crate::consumer::{ConsumedRecord, Consumer, Delivery, SeekTo};
use crate::error::ClientError;
use crate::resilience::Backoff;
use crate::undecodable::SkippedCallback;

/// Attempts of a `FetchOffsets` call during a rebalance before giving up.
const FETCH_OFFSETS_ATTEMPTS: u32 = 5;
/// Attempts of a commit fenced by generations that keep moving on.
const COMMIT_ATTEMPTS: u32 = 4;
/// How long a fenced commit waits for the newer generation to arrive.
const FENCED_WAIT: Duration = Duration::from_millis(500);

/// A rebalance callback.
pub(crate) type PartitionsCallback = Arc<dyn Fn(&[TopicPartition]) + Send + Sync>;
/// A commit callback.
pub(crate) type OffsetsCallback = Arc<dyn Fn(&[PartitionOffset]) + Send + Sync>;

/// The user's callbacks; cloned out of the lock before being called.
#[derive(Default)]
pub(crate) struct Callbacks {
    pub assigned: Option<PartitionsCallback>,
    pub revoked: Option<PartitionsCallback>,
    pub committed: Option<OffsetsCallback>,
    pub skipped: Option<SkippedCallback>,
}

/// How a consumer is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// Finish in-flight work, commit, leave.
    Shutdown,
    /// Drop everything at once, without commit or leave (a test hook).
    Abort,
}

/// Who the member is right now.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    /// The number of the session the member id belongs to.
    pub session: u64,
    /// `None` between a lost session and the next join.
    pub member_id: Option<String>,
    pub generation: u64,
    /// Partitions owned, those being revoked included.
    pub owned: BTreeSet<TopicPartition>,
}

/// Commits in the member's name; cheap to clone.
#[derive(Clone)]
pub(crate) struct Committer {
    pub client: GroupClient,
    pub group: Arc<str>,
    /// Read by every commit, written by the member on session events.
    pub identity: Arc<Mutex<Identity>>,
    /// Set by the builder methods, read on events and commits.
    pub callbacks: Arc<Mutex<Callbacks>>,
    /// What the session task read last; borrowed after `identity` is
    /// locked, never across an await.
    pub latest: watch::Receiver<Latest>,
}

impl Committer {
    /// Commits `offsets` under the current member id and generation. A
    /// commit fenced because the broker moved the member to a newer
    /// generation it had not read yet is sent again once it has.
    pub async fn commit(&self, offsets: &[PartitionOffset]) -> Result<(), GroupError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            let (session, member_id, generation) = self.current()?;
            let result = self
                .client
                .commit_offsets(&self.group, &member_id, generation, offsets)
                .await;
            match result {
                Ok(()) => break,
                Err(error)
                    if error.kind() == crate::ErrorKind::Fenced
                        && attempt < COMMIT_ATTEMPTS
                        && self.newer_generation(session, generation).await =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let callback = self.callbacks.lock().committed.clone();
        if let Some(callback) = callback {
            callback(offsets);
        }
        Ok(())
    }

    /// The session, member id and generation to commit under.
    fn current(&self) -> Result<(u64, String, u64), GroupError> {
        let identity = self.identity.lock();
        let Some(member_id) = identity.member_id.clone() else {
            return Err(ClientError::new(
                "commit_offsets",
                crate::StatusCode::FailedPrecondition,
                "not a member of the group right now (the session is being re-joined)",
            )
            .into());
        };
        let latest = self.latest.borrow();
        // The broker fences all but the member's newest generation; it may
        // be one the member has not processed yet. That is safe: a
        // partition the member still holds is in it, assigned or revoking.
        if latest.session == identity.session {
            Ok((
                identity.session,
                latest.member_id.clone(),
                latest.generation.max(identity.generation),
            ))
        } else {
            Ok((identity.session, member_id, identity.generation))
        }
    }

    /// Whether the session reads a generation newer than `generation`
    /// within `FENCED_WAIT` (the broker sends it as it fences the old one).
    async fn newer_generation(&self, session: u64, generation: u64) -> bool {
        let mut latest = self.latest.clone();
        let newer = timeout(
            FENCED_WAIT,
            latest.wait_for(|l| l.session != session || l.generation > generation),
        )
        .await;
        matches!(newer, Ok(Ok(l)) if l.session == session)
    }
}

/// What consuming does with partitions, beyond reading them: `run` has
/// handlers in flight to wait for and progress to commit; the stream has
/// neither (the application commits).
pub(crate) trait Work {
    /// `partitions` were taken away (no record of them is handed out any
    /// more); returns once nothing works on them and what was finished is
    /// committed. `lost`: the member is gone, commits would be refused.
    async fn revoke(&mut self, committer: &Committer, partitions: &[TopicPartition], lost: bool);

    /// `partitions` were newly assigned, with their committed offsets.
    fn assign(&mut self, partitions: &[(TopicPartition, Option<i64>)]);
}

/// The stream's work: none.
impl Work for () {
    async fn revoke(&mut self, _: &Committer, _: &[TopicPartition], _: bool) {}
    fn assign(&mut self, _: &[(TopicPartition, Option<i64>)]) {}
}

/// The member: its consumer, the session's events, and its identity.
pub(crate) struct Member {
    pub consumer: Consumer,
    /// From the session task; bounded by `session::EVENTS_MAX`.
    pub events: mpsc::Receiver<SessionEvent>,
    /// To the session task; bounded by `session::COMMANDS_MAX`.
    pub commands: mpsc::Sender<SessionCommand>,
    pub committer: Committer,
    /// Asks the stream to end (shutdown); `run` watches its own copy.
    pub stop: watch::Receiver<Stop>,
    pub backoff: Backoff,
}

impl Member {
    /// The stream's next item: a record, or the error that stopped a
    /// partition or the member; session events and skipped batches (their
    /// callback) are dealt with on the way.
    /// `None` once the member was asked to stop or its session ended.
    pub async fn next_record(&mut self) -> Option<Result<ConsumedRecord, GroupError>> {
        loop {
            if *self.stop.borrow() != Stop::Run {
                return None;
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => {}
                event = self.events.recv() => {
                    let event = event?;
                    if let Err(error) = self.handle_event(event, &mut ()).await {
                        return Some(Err(error));
                    }
                }
                delivery = self.consumer.next_delivery() => match delivery {
                    Some(Ok(Delivery::Record(record))) => return Some(Ok(record)),
                    Some(Ok(Delivery::Skipped(batch))) => {
                        let callback = self.committer.callbacks.lock().skipped.clone();
                        if let Some(callback) = callback {
                            callback(&batch);
                        }
                    }
                    Some(Err(error)) => return Some(Err(error.into())),
                    None => return None,
                },
            }
        }
    }

    /// Applies one session event; `work` stops and starts what runs on partitions.
    pub async fn handle_event(
        &mut self,
        event: SessionEvent,
        work: &mut impl Work,
    ) -> Result<(), GroupError> {
        match event {
            SessionEvent::Joined {
                session,
                member_id,
                generation,
            } => {
                let mut identity = self.committer.identity.lock();
                identity.session = session;
                identity.member_id = Some(member_id);
                identity.generation = generation;
                Ok(())
            }
            SessionEvent::Assignment {
                generation,
                assigned,
                revoke,
            } => self.rebalance(generation, assigned, revoke, work).await,
            SessionEvent::Lost { reason } => {
                let owned: Vec<TopicPartition> = {
                    let mut identity = self.committer.identity.lock();
                    identity.member_id = None;
                    identity.owned.iter().cloned().collect()
                };
                tracing::info!(group = %self.committer.group, %reason, partitions = owned.len(), "group session lost");
                self.take_away(&owned, true, work).await;
                Ok(())
            }
            SessionEvent::Failed(error) => Err(error.into()),
        }
    }

    /// Follows an assignment: gives up what it no longer owns (and
    /// acknowledges the revocation), then takes what is new.
    async fn rebalance(
        &mut self,
        generation: u64,
        assigned: Vec<TopicPartition>,
        revoke: Vec<TopicPartition>,
        work: &mut impl Work,
    ) -> Result<(), GroupError> {
        let revoke_set: BTreeSet<&TopicPartition> = revoke.iter().collect();
        let kept: BTreeSet<TopicPartition> = assigned
            .into_iter()
            .filter(|p| !revoke_set.contains(p))
            .collect();
        let (session, taken) = {
            let mut identity = self.committer.identity.lock();
            identity.generation = generation;
            let taken: Vec<TopicPartition> = identity.owned.difference(&kept).cloned().collect();
            (identity.session, taken)
        };
        tracing::info!(
            group = %self.committer.group,
            generation,
            assigned = kept.len(),
            revoked = taken.len(),
            "assignment"
        );
        self.take_away(&taken, false, work).await;
        if !revoke.is_empty() {
            // The session task drops it if the session it is for has ended.
            let _ = self
                .commands
                .send(SessionCommand::Revoked {
                    session,
                    generation,
                    partitions: revoke,
                })
                .await;
        }
        let new: Vec<TopicPartition> = {
            let identity = self.committer.identity.lock();
            kept.difference(&identity.owned).cloned().collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let committed = self.committed_offsets(&new).await?;
        let all: Vec<(String, u32)> = {
            let mut identity = self.committer.identity.lock();
            identity.owned.extend(new.iter().cloned());
            identity
                .owned
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect()
        };
        self.consumer.assign(&all);
        let mut started = Vec::with_capacity(new.len());
        for partition in new {
            let offset = committed
                .iter()
                .find(|c| c.topic == partition.topic && c.partition == partition.partition)
                .map(|c| c.offset);
            if let Some(offset) = offset {
                // Seeking to an explicit offset asks nothing of the broker.
                self.consumer
                    .seek(
                        &partition.topic,
                        partition.partition,
                        SeekTo::Offset(offset),
                    )
                    .await
                    .map_err(|e| {
                        ClientError::Protocol(format!("seeking a partition just assigned: {e}"))
                    })?;
            }
            started.push((partition, offset));
        }
        work.assign(&started);
        let callback = self.committer.callbacks.lock().assigned.clone();
        if let Some(callback) = callback {
            let partitions: Vec<TopicPartition> = started.into_iter().map(|(p, _)| p).collect();
            callback(&partitions);
        }
        Ok(())
    }

    /// Stops reading `partitions`, lets `work` finish and commit them, and
    /// calls the revocation callback.
    async fn take_away(&mut self, partitions: &[TopicPartition], lost: bool, work: &mut impl Work) {
        if partitions.is_empty() {
            return;
        }
        let kept: Vec<(String, u32)> = {
            let identity = self.committer.identity.lock();
            identity
                .owned
                .iter()
                .filter(|p| !partitions.contains(p))
                .map(|p| (p.topic.clone(), p.partition))
                .collect()
        };
        self.consumer.assign(&kept);
        work.revoke(&self.committer, partitions, lost).await;
        {
            let mut identity = self.committer.identity.lock();
            for partition in partitions {
                identity.owned.remove(partition);
            }
        }
        let callback = self.committer.callbacks.lock().revoked.clone();
        if let Some(callback) = callback {
            callback(partitions);
        }
    }

    /// The group's committed offsets of `partitions`, retrying what may pass.
    async fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let client = &self.committer.client;
        let mut attempt = 0;
        loop {
            match client
                .fetch_offsets(&self.committer.group, partitions)
                .await
            {
                Ok(offsets) => return Ok(offsets),
                Err(e) if e.is_retryable() && attempt + 1 < FETCH_OFFSETS_ATTEMPTS => {
                    tracing::warn!(group = %self.committer.group, error = %e, "fetching committed offsets failed; retrying");
                    tokio::time::sleep(self.backoff.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

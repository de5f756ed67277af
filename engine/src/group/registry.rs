//! `Groups`: the groups that have members, each a `Coordinator` behind its
//! own lock with its members' outbound queues, plus the committed offsets.
//!
//! A group is live while it has members; when the last one leaves it is
//! dropped from `live` (its offsets stay in the store). Lock order: `live`,
//! then a group's `state`; neither is held across an await. Events are
//! queued with `try_send` under the group's lock, so every member sees its
//! assignments in generation order. A member whose queue is full or closed
//! is removed on the spot.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::coordinator::{Coordinator, Fenced, Member, Outgoing};
use super::offsets::OffsetStore;
use super::{MemberEvent, RemovalReason, TopicPartition};
use crate::config::GroupSettings;
use crate::error::GroupError;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Groups {
    pub(crate) settings: GroupSettings,
    /// Groups with members, by name. Held briefly; taken before a group's lock.
    live: Mutex<HashMap<String, Arc<Group>>>,
    pub(crate) offsets: OffsetStore,
    metrics: Arc<Metrics>,
    /// The broker's background token: ends the session timers.
    pub(crate) stop: CancellationToken,
    /// When the broker opened: groups are not expired during
    /// `settings.expiry_grace` after it.
    started: Instant,
}

#[derive(Debug)]
pub(crate) struct Group {
    name: String,
    /// The state machine and the members' queues. Held briefly, never
    /// across an await; taken after `Groups::live`.
    state: Mutex<GroupState>,
    /// Wakes the session timer: a new member's deadline may come first.
    pub(crate) wake: Notify,
}

impl Group {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// When the session timer should look again.
    pub(crate) fn timer(&self) -> Timer {
        let state = self.state.lock();
        match (state.closed, state.coordinator.next_deadline()) {
            (true, _) => Timer::Closed,
            (false, None) => Timer::Idle,
            (false, Some(deadline)) => Timer::At(deadline),
        }
    }
}

/// What a group's session timer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The group left `live`: the timer ends.
    Closed,
    /// No member: nothing to expire.
    Idle,
    /// The earliest session deadline.
    At(Instant),
}

#[derive(Debug, Default)]
struct GroupState {
    coordinator: Coordinator,
    links: HashMap<String, MemberLink>,
    /// Set once the group left `live`; a join that finds it closed retries.
    closed: bool,
}

#[derive(Debug)]
struct MemberLink {
    /// The member's outbound queue, bounded by `member_queue_max`; its last
    /// slot is kept for the final `Removed`.
    events: mpsc::Sender<MemberEvent>,
    removed: CancellationToken,
}

/// A group's state as `describe` needs it.
#[derive(Debug, Clone)]
pub(crate) struct GroupSnapshot {
    pub(crate) generation: u64,
    pub(crate) rebalancing: bool,
    pub(crate) members: Vec<(String, Member)>,
}

impl Groups {
    pub(crate) fn new(
        settings: GroupSettings,
        offsets: OffsetStore,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            settings,
            live: Mutex::new(HashMap::new()),
            offsets,
            metrics,
            stop,
            started: Instant::now(),
        }
    }

    /// Whether groups may be expired yet (see `GroupSettings::expiry_grace`).
    pub(crate) fn past_expiry_grace(&self) -> bool {
        self.started.elapsed() >= self.settings.expiry_grace
    }

    /// Drops the metric series of a group that is gone.
    pub(crate) fn forget_metrics(&self, group: &str) {
        self.metrics
            .group_rebalances
            .remove(&crate::metrics::GroupLabels {
                group: group.to_owned(),
            });
    }

    /// Adds a member; returns its session, and the group if this join
    /// created it (its session timer must be started).
    pub(crate) fn join(
        self: &Arc<Self>,
        group: &str,
        client_id: &str,
        topics: &BTreeSet<String>,
        session_timeout: Duration,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<(MemberSession, Option<Arc<Group>>), GroupError> {
        // Before the member is in: an expiry that finds no member then sees
        // the group active (see `Broker::expire_groups`).
        self.offsets.note_active(group);
        let member_id = uuid::Uuid::new_v4().to_string();
        let queue = self.settings.member_queue_max;
        let (events, receiver) = mpsc::channel(queue);
        let removed = CancellationToken::new();
        // A few rounds at most: a group closes only when its last member leaves.
        for _ in 0..100 {
            let (entry, created) = {
                let mut live = self.live.lock();
                if let Some(existing) = live.get(group) {
                    (existing.clone(), None)
                } else {
                    let fresh = Arc::new(Group {
                        name: group.to_owned(),
                        state: Mutex::new(GroupState::default()),
                        wake: Notify::new(),
                    });
                    live.insert(group.to_owned(), fresh.clone());
                    (fresh.clone(), Some(fresh))
                }
            };
            let mut state = entry.state.lock();
            if state.closed {
                continue;
            }
            let members = state.coordinator.members().len();
            if members >= self.settings.members_max {
                drop(state);
                self.release_if_empty(&entry);
                return Err(GroupError::Full {
                    group: group.to_owned(),
                    members_max: self.settings.members_max,
                });
            }
            let generation_before = state.coordinator.generation();
            let out = state.coordinator.join(
                &member_id,
                client_id.to_owned(),
                topics.clone(),
                session_timeout,
                partitions,
                Instant::now(),
            );
            let joined = MemberEvent::Joined {
                member_id: member_id.clone(),
                generation: state.coordinator.generation(),
                heartbeat_interval: session_timeout / 3,
                session_timeout,
            };
            events
                .try_send(joined)
                .expect("a new queue has room for `Joined`");
            state.links.insert(
                member_id.clone(),
                MemberLink {
                    events: events.clone(),
                    removed: removed.clone(),
                },
            );
            tracing::info!(group, member_id, ?topics, "member joined");
            self.deliver(&entry, &mut state, out, generation_before);
            drop(state);
            entry.wake.notify_one();
            drop(events);
            return Ok((
                MemberSession {
                    groups: self.clone(),
                    group: entry,
                    member_id,
                    events: Some(receiver),
                    removed,
                    session_timeout,
                },
                created,
            ));
        }
        Err(GroupError::Contended(group.to_owned()))
    }

    /// Runs `change` on a group's state machine and delivers what it
    /// returns; then drops the group from `live` if it has no members left.
    fn change(&self, group: &Arc<Group>, change: impl FnOnce(&mut GroupState) -> Vec<Outgoing>) {
        let empty = {
            let mut state = group.state.lock();
            let before = state.coordinator.generation();
            let out = change(&mut state);
            self.deliver(group, &mut state, out, before);
            state.coordinator.is_empty()
        };
        if empty {
            self.release_if_empty(group);
        }
    }

    /// Queues assignments; removes members whose queue is full or closed
    /// (which may produce more assignments, queued in turn). Counts the
    /// rebalances since `generation_before`.
    fn deliver(
        &self,
        group: &Group,
        state: &mut GroupState,
        out: Vec<Outgoing>,
        generation_before: u64,
    ) {
        let mut queue: VecDeque<Outgoing> = out.into();
        while let Some(next) = queue.pop_front() {
            let Some(link) = state.links.get(&next.member_id) else {
                continue;
            };
            let reason = if link.events.is_closed() {
                Some(RemovalReason::StreamEnded)
            } else if link.events.capacity() <= 1 {
                Some(RemovalReason::OutboundFull {
                    queued: self.settings.member_queue_max,
                })
            } else {
                link.events
                    .try_send(MemberEvent::Assignment(next.assignment))
                    .err()
                    .map(|_| RemovalReason::StreamEnded)
            };
            if let Some(reason) = reason {
                queue.extend(remove_locked(group, state, &next.member_id, reason));
            }
        }
        let generation = state.coordinator.generation();
        if generation > generation_before {
            self.metrics
                .group_rebalances
                .get_or_create(&crate::metrics::GroupLabels {
                    group: group.name.clone(),
                })
                .inc_by(generation - generation_before);
            tracing::info!(
                group = group.name,
                generation,
                members = state.coordinator.members().len(),
                "rebalance"
            );
        }
    }

    /// Drops a group without members from `live`.
    fn release_if_empty(&self, group: &Arc<Group>) {
        let mut live = self.live.lock();
        let mut state = group.state.lock();
        if state.coordinator.is_empty() && !state.closed {
            // Its offsets' retention counts from now; the session timer
            // records this durably.
            self.offsets.note_active(&group.name);
            state.closed = true;
            if live.get(&group.name).is_some_and(|g| Arc::ptr_eq(g, group)) {
                live.remove(&group.name);
            }
            drop(state);
            group.wake.notify_one();
        }
    }

    /// Removes members whose session expired; with `partitions`, also
    /// follows topic changes.
    pub(crate) fn tick(
        &self,
        group: &Arc<Group>,
        now: Instant,
        partitions: Option<&BTreeMap<String, u32>>,
    ) {
        self.change(group, |state| {
            let mut out = Vec::new();
            for member_id in state.coordinator.expired(now) {
                let timeout = state
                    .coordinator
                    .member(&member_id)
                    .map_or(Duration::ZERO, |m| m.session_timeout);
                tracing::info!(
                    group = group.name,
                    member_id,
                    timeout_ms = timeout.as_millis() as u64,
                    "member's session expired"
                );
                out.extend(remove_locked(
                    group,
                    state,
                    &member_id,
                    RemovalReason::SessionTimeout { timeout },
                ));
            }
            if let Some(partitions) = partitions {
                out.extend(state.coordinator.refresh(partitions));
            }
            out
        });
    }

    pub(crate) fn live(&self, group: &str) -> Option<Arc<Group>> {
        self.live.lock().get(group).cloned()
    }

    /// Every live group: name, member count, whether it is rebalancing.
    pub(crate) fn live_summaries(&self) -> Vec<(String, usize, bool)> {
        let groups: Vec<Arc<Group>> = self.live.lock().values().cloned().collect();
        groups
            .iter()
            .map(|g| {
                let state = g.state.lock();
                (
                    g.name.clone(),
                    state.coordinator.members().len(),
                    state.coordinator.is_rebalancing(),
                )
            })
            .collect()
    }

    pub(crate) fn snapshot(&self, group: &str) -> Option<GroupSnapshot> {
        let group = self.live(group)?;
        let state = group.state.lock();
        Some(GroupSnapshot {
            generation: state.coordinator.generation(),
            rebalancing: state.coordinator.is_rebalancing(),
            members: state
                .coordinator
                .members()
                .iter()
                .map(|(id, m)| (id.clone(), m.clone()))
                .collect(),
        })
    }

    pub(crate) fn ownership(&self, group: &str) -> (u64, Vec<(TopicPartition, String, bool)>) {
        let Some(group) = self.live(group) else {
            return (0, Vec::new());
        };
        let state = group.state.lock();
        (
            state.coordinator.generation(),
            state.coordinator.ownership(),
        )
    }

    pub(crate) fn member_count(&self, group: &str) -> usize {
        self.live(group)
            .map_or(0, |g| g.state.lock().coordinator.members().len())
    }

    /// Checks that `member_id` may commit `partitions` in `generation`.
    pub(crate) fn check_commit<'a>(
        &self,
        group: &str,
        member_id: &str,
        generation: u64,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<(), GroupError> {
        let fenced = |reason: String| GroupError::CommitFenced {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            reason,
        };
        let unknown = || {
            fenced(
                "it is not a member of the group (it left, was removed after its session timeout, or never joined); join again"
                    .to_owned(),
            )
        };
        let live = self.live(group).ok_or_else(unknown)?;
        let state = live.state.lock();
        match state
            .coordinator
            .check_commit(member_id, generation, partitions)
        {
            Ok(()) => Ok(()),
            Err(Fenced::UnknownMember) => Err(unknown()),
            Err(Fenced::StaleGeneration { member, group }) => Err(fenced(format!(
                "the request names generation {generation}, but the member's current generation is {member} (the group is at {group}); commit with the generation of the latest assignment"
            ))),
            Err(Fenced::NotOwned(tp)) => Err(fenced(format!(
                "it does not own {tp} in generation {generation}"
            ))),
        }
    }
}

/// Removes a member under its group's lock: its queue gets `Removed` (in the
/// slot kept for it) and its session is told; returns the assignments the
/// rebalance produced.
fn remove_locked(
    group: &Group,
    state: &mut GroupState,
    member_id: &str,
    reason: RemovalReason,
) -> Vec<Outgoing> {
    if let Some(link) = state.links.remove(member_id) {
        tracing::info!(group = group.name, member_id, ?reason, "member removed");
        // Fails only if the session is gone already.
        let _ = link.events.try_send(MemberEvent::Removed(reason));
        link.removed.cancel();
    }
    state.coordinator.remove(member_id)
}

/// One member's session: its events, and the calls it makes. Dropping it
/// removes the member (if still there).
#[derive(Debug)]
pub struct MemberSession {
    groups: Arc<Groups>,
    group: Arc<Group>,
    member_id: String,
    events: Option<mpsc::Receiver<MemberEvent>>,
    removed: CancellationToken,
    session_timeout: Duration,
}

impl MemberSession {
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn group(&self) -> &str {
        &self.group.name
    }

    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The member's events: `Joined`, then assignments, and `Removed` last.
    /// The queue is handed out once.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<MemberEvent>> {
        self.events.take()
    }

    /// Resolves once the member was removed, for whatever reason.
    pub async fn removed(&self) {
        self.removed.cancelled().await;
    }

    pub fn is_removed(&self) -> bool {
        self.removed.is_cancelled()
    }

    /// Extends the session; false if the member was removed.
    pub fn heartbeat(&self) -> bool {
        self.group
            .state
            .lock()
            .coordinator
            .heartbeat(&self.member_id, Instant::now())
    }

    /// Acknowledges a revocation; false if the member was removed.
    pub fn revocation_done(&self, generation: u64, partitions: &[TopicPartition]) -> bool {
        let mut present = false;
        self.groups.change(&self.group, |state| {
            let out = state.coordinator.revocation_done(
                &self.member_id,
                generation,
                partitions,
                Instant::now(),
            );
            present = out.is_some();
            out.unwrap_or_default()
        });
        present
    }

    /// Removes the member now.
    pub fn leave(&self, reason: RemovalReason) {
        self.groups.change(&self.group, |state| {
            remove_locked(&self.group, state, &self.member_id, reason)
        });
    }
}

impl Drop for MemberSession {
    fn drop(&mut self) {
        if !self.removed.is_cancelled() {
            self.leave(RemovalReason::StreamEnded);
        }
    }
}

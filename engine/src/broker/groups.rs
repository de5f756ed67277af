//! The group operations on `Broker`, as gRPC and embedders call them:
//! joining, committing and fetching offsets, and group administration. The
//! groups themselves (`crate::group`) know nothing of `Broker`; this is
//! where they meet the topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::{Broker, OffsetSpec};
use crate::error::{GroupError, Invalid, NotFound, OutOfRange};
use crate::group::GROUP_LAG_SERIES_MAX;
use crate::group::registry::{Group, Groups, Timer};
use crate::group::{
    CLIENT_ID_LEN_MAX, GroupInfo, GroupMetrics, GroupState, GroupSummary, JoinSpec, MemberInfo,
    MemberSession, OffsetReplication, PartitionLagInfo, ReplicatedGroup, ResetTo, TopicPartition,
    validate_group_name,
};

impl Broker {
    /// Adds a member to a group (created on first join). The session's
    /// events start with `Joined` and its first assignment.
    pub fn join_group(self: &Arc<Self>, spec: JoinSpec) -> Result<MemberSession, GroupError> {
        if self.is_stopping() {
            return Err(GroupError::ShuttingDown);
        }
        let settings = &self.groups().settings;
        validate_group_name(&spec.group)?;
        let topics_max = settings.topics_per_member_max;
        if spec.topics.is_empty() || spec.topics.len() > topics_max {
            return Err(Invalid::new(
                "topics",
                format!(
                    "a member subscribes to 1 to {topics_max} topics, got {}",
                    spec.topics.len()
                ),
            )
            .into());
        }
        let partitions = self.topic_partitions();
        let mut topics = BTreeSet::new();
        for topic in spec.topics {
            if !partitions.contains_key(&topic) {
                return Err(NotFound::Topic(topic).into());
            }
            topics.insert(topic);
        }
        if spec.client_id.chars().count() > CLIENT_ID_LEN_MAX {
            return Err(Invalid::new(
                "client_id",
                format!("is longer than {CLIENT_ID_LEN_MAX} characters"),
            )
            .into());
        }
        let session_timeout = match spec.session_timeout {
            None => settings.session_timeout,
            Some(t)
                if (settings.session_timeout_min..=settings.session_timeout_max).contains(&t) =>
            {
                t
            }
            Some(t) => {
                return Err(Invalid::new(
                    "session_timeout_ms",
                    format!(
                        "must be 0 (the broker's default, {} ms) or between {} and {} ms, got {}",
                        settings.session_timeout.as_millis(),
                        settings.session_timeout_min.as_millis(),
                        settings.session_timeout_max.as_millis(),
                        t.as_millis()
                    ),
                )
                .into());
            }
        };
        let (session, created) = self.groups().join(
            &spec.group,
            &spec.client_id,
            &topics,
            session_timeout,
            &partitions,
        )?;
        if let Some(group) = created {
            spawn_session_timer(Arc::downgrade(self), self.groups().clone(), group);
        }
        Ok(session)
    }

    /// In a cluster: committed offsets are made durable through
    /// `replication` (the metadata group) instead of the broker's own
    /// store.
    pub fn replicate_offsets_through(&self, replication: Arc<dyn OffsetReplication>) {
        self.groups().offsets.replicate_through(replication);
    }

    /// In a cluster: this broker starts coordinating `groups` (what the
    /// replication holds of them becomes the committed offsets it serves,
    /// each group counted active now). Call before the replication's
    /// `lease` names them.
    pub fn load_replicated_offsets(&self, groups: Vec<ReplicatedGroup>) {
        self.groups().offsets.take_groups(groups);
    }

    /// In a cluster: forgets the offsets of the groups the replication's
    /// `lease` no longer names (it serves and expires them no more).
    /// Commits under way change nothing here after.
    pub async fn forget_unkept_offsets(&self) {
        self.groups().offsets.forget_unkept().await;
    }

    /// Commits offsets (the next offset to consume) for partitions the
    /// member holds in its current generation; all or nothing.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: u64,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<(), GroupError> {
        validate_group_name(group)?;
        // In a cluster this broker may hold no replica of a partition, or
        // one behind its leader: it cannot check an offset against the
        // end, and takes it as Kafka does.
        let replicated = self.groups().offsets.is_replicated();
        for (tp, offset) in &offsets {
            if *offset < 0 {
                return Err(Invalid::new(
                    "offsets",
                    format!("the offset for {tp} must be >= 0, got {offset}"),
                )
                .into());
            }
            if replicated {
                continue;
            }
            let (end, _) = self
                .list_offsets(&tp.topic, tp.partition, OffsetSpec::Latest)
                .await?;
            if *offset > end {
                let (start, _) = self
                    .list_offsets(&tp.topic, tp.partition, OffsetSpec::Earliest)
                    .await?;
                return Err(OutOfRange {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    start_offset: start,
                    end_offset: end,
                }
                .into());
            }
        }
        let groups = self.groups();
        {
            let _writes = groups.offsets.writes.lock().await;
            groups.check_commit(
                group,
                member_id,
                generation,
                offsets.iter().map(|(tp, _)| tp),
            )?;
            groups.offsets.stage(group, offsets).await?;
        }
        // Outside the lock: concurrent commits share the sync.
        groups.offsets.sync().await
    }

    /// Committed offsets of `partitions` (all of them when empty); partitions
    /// without one are absent.
    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>, GroupError> {
        validate_group_name(group)?;
        let committed = self.groups().offsets.get(group);
        Ok(if partitions.is_empty() {
            committed.into_iter().collect()
        } else {
            partitions
                .iter()
                .filter_map(|tp| committed.get(tp).map(|&o| (tp.clone(), o)))
                .collect()
        })
    }

    /// Groups with members or committed offsets, by name.
    pub fn list_groups(&self) -> Vec<GroupSummary> {
        let mut groups: BTreeMap<String, GroupSummary> = self
            .groups()
            .offsets
            .groups()
            .into_iter()
            .map(|name| {
                let summary = GroupSummary {
                    name: name.clone(),
                    state: GroupState::Empty,
                    members: 0,
                };
                (name, summary)
            })
            .collect();
        for (name, members, rebalancing) in self.groups().live_summaries() {
            let state = state_of(members, rebalancing);
            groups.insert(
                name.clone(),
                GroupSummary {
                    name,
                    state,
                    members,
                },
            );
        }
        groups.into_values().collect()
    }

    /// Members, assignments, and per partition the committed offset, end
    /// offset, lag and owner. `None` if the group has neither members nor
    /// committed offsets.
    pub fn describe_group(&self, name: &str) -> Option<GroupInfo> {
        let snapshot = self.groups().snapshot(name);
        let committed = self.groups().offsets.get(name);
        if snapshot.is_none() && committed.is_empty() {
            return None;
        }
        let (generation, rebalancing, members) = snapshot
            .map(|s| (s.generation, s.rebalancing, s.members))
            .unwrap_or_default();
        let mut owners: BTreeMap<TopicPartition, String> = BTreeMap::new();
        let mut subscribed: BTreeSet<&String> = BTreeSet::new();
        for (id, m) in &members {
            for tp in m.assigned.iter().chain(m.revoking.keys()) {
                owners.insert(tp.clone(), id.clone());
            }
            subscribed.extend(&m.topics);
        }
        let partitions = self
            .partition_states()
            .into_iter()
            .filter(|(topic, partition, _)| {
                subscribed.contains(topic)
                    || committed.contains_key(&TopicPartition::new(topic.clone(), *partition))
            })
            .map(|(topic, partition, info)| {
                let tp = TopicPartition::new(topic, partition);
                let committed_offset = committed.get(&tp).copied();
                PartitionLagInfo {
                    owner: owners.get(&tp).cloned(),
                    lag: lag(committed_offset, info.start_offset, info.end_offset),
                    committed_offset,
                    end_offset: info.end_offset,
                    partition: tp,
                }
            });
        let mut partitions: Vec<PartitionLagInfo> = partitions.collect();
        partitions.sort_by(|a, b| a.partition.cmp(&b.partition));
        Some(GroupInfo {
            name: name.to_owned(),
            state: state_of(members.len(), rebalancing),
            generation,
            members: members
                .into_iter()
                .map(|(member_id, m)| MemberInfo {
                    member_id,
                    client_id: m.client_id,
                    topics: m.topics.into_iter().collect(),
                    assigned: m.assigned.into_iter().collect(),
                    revoking: m.revoking.into_keys().collect(),
                })
                .collect(),
            partitions,
        })
    }

    /// The group's generation and every held partition with its holder and
    /// whether it is being revoked (for tests of the one-owner invariant).
    pub fn group_ownership(&self, name: &str) -> (u64, Vec<(TopicPartition, String, bool)>) {
        self.groups().ownership(name)
    }

    /// Deletes a group without members, with its committed offsets.
    pub async fn delete_group(&self, name: &str) -> Result<(), GroupError> {
        validate_group_name(name)?;
        let groups = self.groups();
        let _writes = groups.offsets.writes.lock().await;
        self.check_group_empty(name, "deleting it")?;
        if !groups.offsets.has_group(name) {
            return Err(NotFound::Group(name.to_owned()).into());
        }
        groups.offsets.delete(name).await?;
        groups.forget_metrics(name);
        tracing::info!(group = name, "group deleted");
        Ok(())
    }

    /// Deletes every group without members whose last activity is older
    /// than `offsets_retention`, with its committed offsets. Returns the
    /// groups expired.
    pub async fn expire_groups(&self, now_ms: i64) -> Vec<String> {
        let groups = self.groups();
        let Some(retention) = groups.settings.offsets_retention else {
            return Vec::new();
        };
        if !groups.past_expiry_grace() {
            return Vec::new();
        }
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms.saturating_sub(retention_ms);
        let mut expired = Vec::new();
        for name in groups.offsets.inactive_since(before) {
            let _writes = groups.offsets.writes.lock().await;
            // In a cluster only a group's coordinator expires it.
            if !groups.offsets.keeps(&name) {
                continue;
            }
            // Checked again under the lock: a member may have joined, or
            // committed, since the list was made. Members first: a join
            // notes the group active before its member is in.
            if groups.member_count(&name) > 0 {
                continue;
            }
            let still_inactive = groups
                .offsets
                .last_active_ms(&name)
                .is_some_and(|at| at <= before);
            if !still_inactive {
                continue;
            }
            match groups.offsets.delete(&name).await {
                Ok(()) => {
                    groups.forget_metrics(&name);
                    tracing::info!(group = %name, retention_ms, "group expired: no members and no commit within the offsets retention");
                    expired.push(name);
                }
                Err(e) => {
                    tracing::warn!(group = %name, error = %e, "cannot expire the group");
                    break;
                }
            }
        }
        expired
    }

    /// Sets a group's committed offsets for a topic's `partitions` (all
    /// when empty) while it has no members.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, i64)>, GroupError> {
        validate_group_name(group)?;
        let count = self.describe_topic(topic)?.partitions.len() as u32;
        let partitions: Vec<u32> = if partitions.is_empty() {
            (0..count).collect()
        } else {
            partitions
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let (start, _) = self
                .list_offsets(topic, partition, OffsetSpec::Earliest)
                .await?;
            let (end, _) = self
                .list_offsets(topic, partition, OffsetSpec::Latest)
                .await?;
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Timestamp(ts) => {
                    match self
                        .list_offsets(topic, partition, OffsetSpec::Timestamp(ts))
                        .await?
                    {
                        (-1, _) => end,
                        (found, _) => found,
                    }
                }
                ResetTo::Offset(offset) if (start..=end).contains(&offset) => offset,
                ResetTo::Offset(offset) => {
                    return Err(OutOfRange {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                        start_offset: start,
                        end_offset: end,
                    }
                    .into());
                }
            };
            offsets.push((TopicPartition::new(topic, partition), offset));
        }
        let groups = self.groups();
        let _writes = groups.offsets.writes.lock().await;
        self.check_group_empty(group, "resetting its offsets")?;
        groups.offsets.put(group, offsets.clone()).await?;
        tracing::info!(group, topic, ?to, "group offsets reset");
        Ok(offsets)
    }

    /// Members per live group, and lag per partition of every group, for
    /// the metrics read at scrape time.
    pub(crate) fn group_metrics(&self) -> GroupMetrics {
        let members: Vec<(String, usize)> = self
            .groups()
            .live_summaries()
            .into_iter()
            .map(|(name, members, _)| (name, members))
            .collect();
        let live: BTreeSet<&str> = members.iter().map(|(name, _)| name.as_str()).collect();
        let mut names: Vec<String> = self.list_groups().into_iter().map(|g| g.name).collect();
        names.sort_unstable();
        // Live groups first, then by name (the sort is stable).
        names.sort_by_key(|name| !live.contains(name.as_str()));
        let mut lag = Vec::new();
        let mut lag_groups_omitted = 0;
        for name in names {
            let Some(info) = self.describe_group(&name) else {
                continue;
            };
            if lag.len() + info.partitions.len() > GROUP_LAG_SERIES_MAX {
                lag_groups_omitted += 1;
                continue;
            }
            lag.extend(
                info.partitions
                    .into_iter()
                    .map(|p| (name.clone(), p.partition, p.lag)),
            );
        }
        GroupMetrics {
            members,
            lag,
            lag_groups_omitted,
        }
    }

    /// Every topic's partition count.
    pub(crate) fn topic_partitions(&self) -> BTreeMap<String, u32> {
        self.list_topics().into_iter().collect()
    }

    fn check_group_empty(&self, group: &str, action: &'static str) -> Result<(), GroupError> {
        match self.groups().member_count(group) {
            0 => Ok(()),
            members => Err(GroupError::NotEmpty {
                group: group.to_owned(),
                members,
                action,
            }),
        }
    }
}

fn state_of(members: usize, rebalancing: bool) -> GroupState {
    match (members, rebalancing) {
        (0, _) => GroupState::Empty,
        (_, true) => GroupState::Rebalancing,
        (_, false) => GroupState::Stable,
    }
}

fn lag(committed: Option<i64>, start: i64, end: i64) -> i64 {
    (end - committed.unwrap_or(start)).max(0)
}

/// Removes the group's members whose session expired, at their deadline,
/// and every `topology_check_interval` follows partitions added to (or
/// topics deleted from) its subscriptions. Ends when the group closes or
/// the broker stops.
fn spawn_session_timer(broker: Weak<Broker>, groups: Arc<Groups>, group: Arc<Group>) {
    let every = groups.settings.topology_check_interval;
    tokio::spawn(async move {
        let mut next_refresh = Instant::now() + every;
        loop {
            let wake = match group.timer() {
                Timer::Closed => {
                    // The last member left: the group's offsets expire a
                    // retention period from now, not from its last commit.
                    if let Err(e) = groups.offsets.mark_active(group.name()).await {
                        tracing::warn!(group = group.name(), error = %e, "cannot record when the group's last member left");
                    }
                    return;
                }
                Timer::Idle => next_refresh,
                Timer::At(deadline) => deadline.min(next_refresh),
            };
            tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
                () = group.wake.notified() => {}
                () = groups.stop.cancelled() => return,
            }
            let now = Instant::now();
            let partitions = if now >= next_refresh {
                next_refresh = now + every;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                Some(broker.topic_partitions())
            } else {
                None
            };
            groups.tick(&group, now, partitions.as_ref());
        }
    });
}

//! What the group operations answer with: a group's state, its members,
//! and its lag per partition, as `DescribeGroup` and `ListGroups` show them.

use super::TopicPartition;

/// "empty", "stable" or "rebalancing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (the group has committed offsets).
    Empty,
    /// Every member holds exactly its target.
    Stable,
    /// Some member owes a revocation or waits for partitions.
    Rebalancing,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Stable => "stable",
            Self::Rebalancing => "rebalancing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    pub state: GroupState,
    pub members: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub state: GroupState,
    pub generation: u64,
    pub members: Vec<MemberInfo>,
    pub partitions: Vec<PartitionLagInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub assigned: Vec<TopicPartition>,
    /// Asked to give up, not yet acknowledged.
    pub revoking: Vec<TopicPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLagInfo {
    pub partition: TopicPartition,
    pub committed_offset: Option<i64>,
    pub end_offset: i64,
    /// From the committed offset, or from the start offset if none.
    pub lag: i64,
    /// The member holding it (assigned or revoking).
    pub owner: Option<String>,
}

/// Figures the metrics read at scrape time.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupMetrics {
    /// Members of each live group.
    pub(crate) members: Vec<(String, usize)>,
    /// Lag of each group on each partition it consumes or committed, for
    /// as many groups as fit in `GROUP_LAG_SERIES_MAX` series.
    pub(crate) lag: Vec<(String, TopicPartition, i64)>,
    /// Groups whose lag is left out to stay within the bound.
    pub(crate) lag_groups_omitted: usize,
}

/// Most `brook_group_lag` series one scrape exports: a broker with many
/// groups (or groups over many partitions) must not make `/metrics`
/// unbounded. Groups with members come first, then the others by name.
pub(crate) const GROUP_LAG_SERIES_MAX: usize = 10_000;

/// Where `reset_group_offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch); the end
    /// offset when there is none.
    Timestamp(i64),
    Offset(i64),
}

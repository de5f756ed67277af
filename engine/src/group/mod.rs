//! Consumer groups: members join with subscriptions, the broker assigns
//! partitions (server-side, incremental, sticky), members acknowledge
//! revocations, and commit offsets fenced by member id and generation.
//!
//! - `assignment.rs`: the target assignment, a pure function.
//! - `coordinator.rs`: one group's state machine (members, ownership,
//!   revocation handshake, generations, session deadlines); no I/O.
//! - `registry.rs`: `Groups`, the live groups with their members' outbound
//!   queues and one session timer task per group.
//! - `offsets.rs`: committed offsets, in the `MetaStore` and mirrored in memory.
//! - `info.rs`: what describing and listing groups answer with.
//!
//! The operations on `Broker` that use them are in `crate::broker::groups`.
//!
//! Invariants: no partition is held (assigned or being revoked) by two
//! members at once; a partition moves to its new owner only after the old
//! owner acknowledged the revocation or was removed. This module knows
//! neither protobuf nor the store behind `MetaStore`.

mod assignment;
mod coordinator;
mod info;
mod offsets;
pub(crate) mod registry;

pub use coordinator::Assignment;
pub(crate) use info::{GROUP_LAG_SERIES_MAX, GroupMetrics};
pub use info::{GroupInfo, GroupState, GroupSummary, MemberInfo, PartitionLagInfo, ResetTo};
pub(crate) use offsets::OffsetStore;
pub use offsets::{OffsetReplication, ReplicatedGroup};
pub(crate) use registry::Groups;
pub use registry::MemberSession;

use std::fmt;
use std::time::Duration;

use crate::error::{GroupError, Invalid};

/// Longest group name.
pub const GROUP_NAME_LEN_MAX: usize = 249;
/// Longest `client_id` a member may show.
pub const CLIENT_ID_LEN_MAX: usize = 255;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic `{}` partition {}", self.topic, self.partition)
    }
}

/// What a member asks for when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSpec {
    pub group: String,
    pub topics: Vec<String>,
    /// `None`: the broker's default.
    pub session_timeout: Option<Duration>,
    pub client_id: String,
}

/// What the broker sends a member, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// First event of every session.
    Joined {
        member_id: String,
        generation: u64,
        heartbeat_interval: Duration,
        session_timeout: Duration,
    },
    /// The member's partitions changed.
    Assignment(Assignment),
    /// Last event: the member is no longer part of the group.
    Removed(RemovalReason),
}

/// Why a member left its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalReason {
    /// It sent `leave`.
    Left,
    /// Its request stream ended or broke.
    StreamEnded,
    /// It was silent for longer than its session timeout.
    SessionTimeout { timeout: Duration },
    /// It did not read its queued events.
    OutboundFull { queued: usize },
    /// The broker is stopping.
    ShuttingDown,
    /// In a cluster: the broker stopped coordinating the groups (another
    /// broker leads the cluster's metadata now); the reason names it.
    CoordinatorMoved(String),
    /// It broke the session protocol (the message says how).
    Protocol(String),
}

impl RemovalReason {
    /// The error the member's session ends with; `None` ends it normally.
    pub fn error(&self, group: &str, member_id: &str) -> Option<GroupError> {
        let removed = |reason: String| GroupError::MemberRemoved {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            reason,
        };
        match self {
            Self::Left | Self::StreamEnded => None,
            Self::SessionTimeout { timeout } => Some(removed(format!(
                "no heartbeat within its session timeout of {} ms",
                timeout.as_millis()
            ))),
            Self::OutboundFull { queued } => Some(removed(format!(
                "it did not read its assignments ({queued} queued, the limit)"
            ))),
            Self::ShuttingDown => Some(GroupError::ShuttingDown),
            Self::CoordinatorMoved(reason) => Some(GroupError::NotCoordinator(reason.clone())),
            Self::Protocol(reason) => Some(Invalid::new("session", reason.clone()).into()),
        }
    }
}

/// Checks a group name: 1 to 249 characters, none of them a control character
/// (the store separates names with NUL).
pub fn validate_group_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::new("group", "must not be empty"));
    }
    let chars = name.chars().count();
    if chars > GROUP_NAME_LEN_MAX {
        return Err(Invalid::new(
            "group",
            format!("is {chars} characters long, over the limit of {GROUP_NAME_LEN_MAX}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid::new(
            "group",
            format!("must not contain control characters, got {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        assert!(validate_group_name("orders-consumers.v2:eu").is_ok());
        assert!(validate_group_name("").is_err());
        assert!(validate_group_name("a\0b").is_err());
        assert!(validate_group_name(&"g".repeat(GROUP_NAME_LEN_MAX)).is_ok());
        assert!(validate_group_name(&"g".repeat(GROUP_NAME_LEN_MAX + 1)).is_err());
    }
}

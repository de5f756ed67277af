//! The cluster's metadata as the metadata group's state machine holds it:
//! the brokers and where each topic's partitions have their replicas. A
//! pure function of the commands applied, in order, so every broker that
//! applied the same log holds the same state.

use std::collections::{BTreeMap, BTreeSet};

use brook_engine::TopicOverrides;
use brook_engine::acl::AclBinding;
use brook_engine::quota::{QUOTAS_MAX, QuotaLimits};
use serde::{Deserialize, Serialize};

use crate::command::{MetaCommand, MetaResponse};
use crate::coordinators::CoordinatorLease;
use crate::types::NodeId;

/// The most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 100_000;
/// The replication factor a topic gets when its creator names none, or
/// fewer brokers when there are fewer.
pub const DEFAULT_REPLICATION_FACTOR_MAX: u32 = 3;
/// The longest topic name, in bytes.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// How many of the partitions a broker holds a refusal to remove it names.
const PARTITIONS_NAMED_MAX: usize = 10;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub address: String,
    /// Which start of the broker registered last (see
    /// `MetaCommand::RegisterBroker`).
    #[serde(default)]
    pub incarnation: u64,
}

/// A topic and where its partitions live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicAssignment {
    /// Unique across the cluster's history: a topic deleted and created
    /// again under its name has a new id, which tells a broker that missed
    /// the deletion that the topic it holds is the old one.
    #[serde(default)]
    pub id: u64,
    pub replication_factor: u32,
    pub overrides: TopicOverrides,
    /// Per partition, its replicas; the first is the preferred leader.
    pub replicas: Vec<Vec<NodeId>>,
    /// Partitions being moved, and the replicas each is moving to.
    #[serde(default)]
    pub moves: BTreeMap<u32, Vec<NodeId>>,
    /// Partitions moved at least once: their groups were formed long
    /// ago, and a replica starting now joins them rather than forming
    /// them (only the replicas a partition was created with form it).
    #[serde(default)]
    pub moved: BTreeSet<u32>,
}

impl TopicAssignment {
    /// The brokers that hold a replica of `partition` or are to hold one:
    /// its replicas, and while it moves, those it moves to.
    pub fn holders(&self, partition: u32) -> impl Iterator<Item = NodeId> + '_ {
        let current = self.replicas.get(partition as usize).into_iter().flatten();
        let target = self.moves.get(&partition).into_iter().flatten();
        current
            .chain(target.filter(move |id| {
                !self
                    .replicas
                    .get(partition as usize)
                    .is_some_and(|replicas| replicas.contains(id))
            }))
            .copied()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    pub topics: BTreeMap<String, TopicAssignment>,
    /// The id the next topic created gets.
    #[serde(default)]
    pub next_topic_id: u64,
    /// The ACLs every broker enforces.
    #[serde(default)]
    pub acls: BTreeSet<AclBinding>,
    /// Client quotas every broker enforces, by principal, and the default.
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaLimits>,
    #[serde(default)]
    pub default_quota: Option<QuotaLimits>,
    /// Consumer groups' committed offsets, by group.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupOffsets>,
    /// Brokers removed from the cluster (a removed broker started again
    /// with its old settings must not register, and be given partitions).
    #[serde(default)]
    pub removed: BTreeSet<NodeId>,
    /// Who coordinates each slot of consumer groups (see
    /// `crate::coordinators`).
    #[serde(default)]
    pub coordinators: BTreeMap<u32, CoordinatorLease>,
}

/// A consumer group's committed offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// By topic, then partition: the next offset to consume.
    pub offsets: BTreeMap<String, BTreeMap<u32, i64>>,
    /// When the group was last active (ms since the epoch).
    pub active_ms: i64,
}

impl ClusterState {
    /// Applies one command; the answer says what it did.
    pub fn apply(&mut self, command: &MetaCommand) -> MetaResponse {
        match command {
            MetaCommand::RegisterBroker {
                id,
                address,
                incarnation,
            } => {
                if self.removed.contains(id) {
                    return MetaResponse::BrokerRemoved { id: *id };
                }
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        address: address.clone(),
                        incarnation: *incarnation,
                    },
                );
                MetaResponse::Done
            }
            MetaCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                overrides,
            } => self.create_topic(name, *partitions, *replication_factor, *overrides),
            MetaCommand::DeleteTopic { name } => {
                if self.topics.remove(name).is_some() {
                    MetaResponse::Done
                } else {
                    MetaResponse::NoSuchTopic { name: name.clone() }
                }
            }
            MetaCommand::AddPartitions { name, partitions } => {
                self.add_partitions(name, *partitions)
            }
            MetaCommand::AlterTopic { name, overrides } => match self.topics.get_mut(name) {
                Some(topic) => {
                    topic.overrides = topic.overrides.merged(*overrides);
                    MetaResponse::Done
                }
                None => MetaResponse::NoSuchTopic { name: name.clone() },
            },
            MetaCommand::CommitOffsets {
                group,
                offsets,
                at_ms,
                epoch,
            } => {
                if let Some(refused) = self.fence_group(group, *epoch) {
                    return refused;
                }
                let committed = self.groups.entry(group.clone()).or_default();
                for (topic, partition, offset) in offsets {
                    committed
                        .offsets
                        .entry(topic.clone())
                        .or_default()
                        .insert(*partition, *offset);
                }
                committed.active_ms = committed.active_ms.max(*at_ms);
                MetaResponse::Done
            }
            MetaCommand::MarkGroupActive {
                group,
                at_ms,
                epoch,
            } => {
                if let Some(refused) = self.fence_group(group, *epoch) {
                    return refused;
                }
                if let Some(committed) = self.groups.get_mut(group) {
                    committed.active_ms = committed.active_ms.max(*at_ms);
                }
                MetaResponse::Done
            }
            MetaCommand::DeleteGroup { group, epoch } => {
                if let Some(refused) = self.fence_group(group, *epoch) {
                    return refused;
                }
                self.groups.remove(group);
                MetaResponse::Done
            }
            MetaCommand::AssignCoordinators { slots } => self.assign_coordinators(slots),
            MetaCommand::AddAcl { acl } => {
                self.acls.insert(acl.clone());
                MetaResponse::Done
            }
            MetaCommand::RemoveAcl { acl } => MetaResponse::AclRemoved {
                existed: self.acls.remove(acl),
            },
            MetaCommand::SetQuota { principal, limits } => {
                self.set_quota(principal.as_ref(), *limits)
            }
            MetaCommand::ReassignPartitions { topic, partitions } => {
                self.reassign(topic, partitions)
            }
            MetaCommand::FinishReassignment {
                topic,
                topic_id,
                partition,
                replicas,
            } => {
                if let Some(assignment) = self.topics.get_mut(topic)
                    && assignment.id == *topic_id
                    && assignment.moves.get(partition) == Some(replicas)
                    && let Some(current) = assignment.replicas.get_mut(*partition as usize)
                {
                    current.clone_from(replicas);
                    assignment.moves.remove(partition);
                    assignment.moved.insert(*partition);
                }
                MetaResponse::Done
            }
            MetaCommand::RemoveBroker { id } => self.remove_broker(*id),
            MetaCommand::AdmitBroker { id } => {
                self.removed.remove(id);
                MetaResponse::Done
            }
            MetaCommand::RemoveQuota { principal } => {
                let removed = match principal {
                    Some(principal) => self.quotas.remove(principal).is_some(),
                    None => self.default_quota.take().is_some(),
                };
                if removed {
                    MetaResponse::Done
                } else {
                    MetaResponse::NoSuchQuota
                }
            }
        }
    }

    /// Sets a quota, within the number of quotas a broker keeps (the
    /// default one counted).
    fn set_quota(&mut self, principal: Option<&String>, limits: QuotaLimits) -> MetaResponse {
        let present = match principal {
            Some(principal) => self.quotas.contains_key(principal),
            None => self.default_quota.is_some(),
        };
        let count = self.quotas.len() + usize::from(self.default_quota.is_some());
        if !present && count >= QUOTAS_MAX {
            return MetaResponse::TooManyQuotas { max: QUOTAS_MAX };
        }
        match principal {
            Some(principal) => {
                self.quotas.insert(principal.clone(), limits);
            }
            None => self.default_quota = Some(limits),
        }
        MetaResponse::Done
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        overrides: TopicOverrides,
    ) -> MetaResponse {
        if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
            return invalid("name", format!("must be 1 to {TOPIC_NAME_BYTES_MAX} bytes"));
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return invalid("partitions", format!("must be 1 to {PARTITIONS_MAX}"));
        }
        if self.topics.contains_key(name) {
            return MetaResponse::TopicExists {
                name: name.to_owned(),
            };
        }
        let registered = self.brokers.len() as u32;
        let replication_factor = match replication_factor {
            0 => registered.clamp(1, DEFAULT_REPLICATION_FACTOR_MAX),
            chosen => chosen,
        };
        if replication_factor > registered {
            return MetaResponse::NotEnoughBrokers {
                needed: replication_factor,
                registered,
            };
        }
        let replicas = place(
            name,
            partitions,
            replication_factor,
            &self.brokers.keys().copied().collect::<Vec<_>>(),
        );
        let id = self.next_topic_id;
        self.next_topic_id += 1;
        self.topics.insert(
            name.to_owned(),
            TopicAssignment {
                id,
                replication_factor,
                overrides,
                replicas,
                moves: BTreeMap::new(),
                moved: BTreeSet::new(),
            },
        );
        MetaResponse::Done
    }

    /// Records where partitions are to move; each target is checked
    /// before any is recorded.
    fn reassign(&mut self, name: &str, partitions: &[(u32, Vec<NodeId>)]) -> MetaResponse {
        let Some(topic) = self.topics.get(name) else {
            return MetaResponse::NoSuchTopic {
                name: name.to_owned(),
            };
        };
        for (partition, replicas) in partitions {
            let count = topic.replicas.len();
            if *partition as usize >= count {
                return invalid(
                    "partition",
                    format!(
                        "topic `{name}` has partitions 0 to {}, got {partition}",
                        count - 1
                    ),
                );
            }
            if replicas.is_empty() {
                return invalid("replicas", format!("partition {partition}: none given"));
            }
            let distinct: BTreeSet<&NodeId> = replicas.iter().collect();
            if distinct.len() != replicas.len() {
                return invalid(
                    "replicas",
                    format!("partition {partition}: a broker is named twice in {replicas:?}"),
                );
            }
            if let Some(unknown) = replicas.iter().find(|id| !self.brokers.contains_key(id)) {
                return invalid(
                    "replicas",
                    format!("partition {partition}: broker {unknown} is not in the cluster"),
                );
            }
        }
        let Some(topic) = self.topics.get_mut(name) else {
            return MetaResponse::NoSuchTopic {
                name: name.to_owned(),
            };
        };
        for (partition, replicas) in partitions {
            if topic.replicas.get(*partition as usize) == Some(replicas) {
                topic.moves.remove(partition);
            } else {
                topic.moves.insert(*partition, replicas.clone());
            }
        }
        MetaResponse::Done
    }

    /// Takes a broker that holds no replica out of the brokers.
    fn remove_broker(&mut self, id: NodeId) -> MetaResponse {
        if !self.brokers.contains_key(&id) {
            return MetaResponse::NoSuchBroker { id };
        }
        let held: Vec<String> = self
            .topics
            .iter()
            .flat_map(|(name, topic)| {
                (0..topic.replicas.len() as u32)
                    .filter(move |partition| topic.holders(*partition).any(|holder| holder == id))
                    .map(move |partition| format!("{name}/{partition}"))
            })
            .collect();
        if !held.is_empty() {
            return MetaResponse::BrokerHoldsReplicas {
                id,
                count: held.len(),
                partitions: held.into_iter().take(PARTITIONS_NAMED_MAX).collect(),
            };
        }
        self.brokers.remove(&id);
        self.removed.insert(id);
        MetaResponse::Done
    }
}

impl ClusterState {
    /// Grows a topic; the new partitions are placed as they would have
    /// been had the topic been created with them.
    fn add_partitions(&mut self, name: &str, partitions: u32) -> MetaResponse {
        if partitions > PARTITIONS_MAX {
            return invalid("partitions", format!("must be 1 to {PARTITIONS_MAX}"));
        }
        let brokers: Vec<NodeId> = self.brokers.keys().copied().collect();
        let Some(topic) = self.topics.get_mut(name) else {
            return MetaResponse::NoSuchTopic {
                name: name.to_owned(),
            };
        };
        let current = topic.replicas.len();
        if partitions as usize <= current {
            return invalid(
                "partitions",
                format!(
                    "topic `{name}` has {current} partitions; the new count must be larger, got {partitions}"
                ),
            );
        }
        if topic.replication_factor as usize > brokers.len() {
            return MetaResponse::NotEnoughBrokers {
                needed: topic.replication_factor,
                registered: brokers.len() as u32,
            };
        }
        let placed = place(name, partitions, topic.replication_factor, &brokers);
        topic.replicas.extend(placed.into_iter().skip(current));
        MetaResponse::Done
    }
}

fn invalid(field: &str, reason: String) -> MetaResponse {
    MetaResponse::Invalid {
        field: field.to_owned(),
        reason,
    }
}

/// Each partition's replicas: `replication_factor` consecutive brokers
/// (in id order, wrapping), the first one moving by one broker per
/// partition so that preferred leaders spread evenly, and each topic
/// starting at a broker chosen from its name so that topics with few
/// partitions do not all lead on the first broker.
fn place(
    name: &str,
    partitions: u32,
    replication_factor: u32,
    brokers: &[NodeId],
) -> Vec<Vec<NodeId>> {
    let count = brokers.len();
    let start = crc32fast::hash(name.as_bytes()) as usize % count.max(1);
    (0..partitions as usize)
        .map(|partition| {
            (0..replication_factor as usize)
                .map(|replica| brokers[(start + partition + replica) % count])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers(ids: &[NodeId]) -> ClusterState {
        let mut state = ClusterState::default();
        for id in ids {
            state.apply(&MetaCommand::RegisterBroker {
                id: *id,
                address: format!("b{id}:9420"),
                incarnation: 1,
            });
        }
        state
    }

    fn create(name: &str, partitions: u32, replication_factor: u32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.to_owned(),
            partitions,
            replication_factor,
            overrides: TopicOverrides::default(),
        }
    }

    #[test]
    fn replicas_are_distinct_brokers_and_leaders_spread_evenly() {
        let mut state = with_brokers(&[1, 2, 3]);
        assert_eq!(state.apply(&create("orders", 6, 3)), MetaResponse::Done);
        let topic = &state.topics["orders"];
        let mut leaders = BTreeMap::new();
        for replicas in &topic.replicas {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct, vec![1, 2, 3], "{replicas:?}");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn the_default_replication_factor_is_three_or_every_broker_and_ids_are_never_reused() {
        let mut state = with_brokers(&[1, 2]);
        assert_eq!(state.apply(&create("a", 1, 0)), MetaResponse::Done);
        assert_eq!(state.topics["a"].replication_factor, 2);
        let mut state = with_brokers(&[1, 2, 3, 4]);
        assert_eq!(state.apply(&create("a", 1, 0)), MetaResponse::Done);
        assert_eq!(state.topics["a"].replication_factor, 3);
        let first = state.topics["a"].id;
        state.apply(&MetaCommand::DeleteTopic { name: "a".into() });
        assert_eq!(state.apply(&create("a", 1, 0)), MetaResponse::Done);
        assert_ne!(state.topics["a"].id, first);
    }

    #[test]
    fn a_replication_factor_beyond_the_brokers_is_refused() {
        let mut state = with_brokers(&[1, 2]);
        assert_eq!(
            state.apply(&create("orders", 1, 3)),
            MetaResponse::NotEnoughBrokers {
                needed: 3,
                registered: 2
            }
        );
        assert!(state.topics.is_empty());
    }

    #[test]
    fn names_and_counts_are_checked_and_duplicates_refused() {
        let mut state = with_brokers(&[1]);
        assert!(matches!(
            state.apply(&create("", 1, 1)),
            MetaResponse::Invalid { .. }
        ));
        assert!(matches!(
            state.apply(&create("t", 0, 1)),
            MetaResponse::Invalid { .. }
        ));
        assert_eq!(state.apply(&create("t", 1, 1)), MetaResponse::Done);
        assert_eq!(
            state.apply(&create("t", 1, 1)),
            MetaResponse::TopicExists { name: "t".into() }
        );
        assert_eq!(
            state.apply(&MetaCommand::DeleteTopic { name: "t".into() }),
            MetaResponse::Done
        );
        assert_eq!(
            state.apply(&MetaCommand::DeleteTopic { name: "t".into() }),
            MetaResponse::NoSuchTopic { name: "t".into() }
        );
    }

    #[test]
    fn quotas_are_set_replaced_removed_and_bounded() {
        let mut state = ClusterState::default();
        let limits = |rate| QuotaLimits {
            produce_bytes_per_second: Some(rate),
            fetch_bytes_per_second: None,
        };
        let set = |principal: Option<&str>, rate| MetaCommand::SetQuota {
            principal: principal.map(str::to_owned),
            limits: limits(rate),
        };
        assert_eq!(state.apply(&set(None, 1)), MetaResponse::Done);
        assert_eq!(state.apply(&set(Some("a"), 2)), MetaResponse::Done);
        assert_eq!(state.apply(&set(Some("a"), 3)), MetaResponse::Done);
        assert_eq!(state.quotas["a"], limits(3));
        assert_eq!(state.default_quota, Some(limits(1)));
        let remove = |principal: Option<&str>| MetaCommand::RemoveQuota {
            principal: principal.map(str::to_owned),
        };
        assert_eq!(state.apply(&remove(None)), MetaResponse::Done);
        assert_eq!(state.apply(&remove(None)), MetaResponse::NoSuchQuota);
        for i in 1..QUOTAS_MAX {
            state.quotas.insert(format!("p{i}"), limits(1));
        }
        // Full: a new principal is refused, a known one may change.
        assert_eq!(
            state.apply(&set(Some("new"), 1)),
            MetaResponse::TooManyQuotas { max: QUOTAS_MAX }
        );
        assert_eq!(
            state.apply(&set(None, 1)),
            MetaResponse::TooManyQuotas { max: QUOTAS_MAX }
        );
        assert_eq!(state.apply(&set(Some("a"), 4)), MetaResponse::Done);
    }

    #[test]
    fn added_partitions_are_placed_as_at_creation() {
        let mut grown = with_brokers(&[1, 2, 3, 4]);
        assert_eq!(grown.apply(&create("t", 2, 3)), MetaResponse::Done);
        let add = |partitions| MetaCommand::AddPartitions {
            name: "t".to_owned(),
            partitions,
        };
        assert_eq!(grown.apply(&add(5)), MetaResponse::Done);
        let mut created = with_brokers(&[1, 2, 3, 4]);
        created.apply(&create("t", 5, 3));
        assert_eq!(grown.topics["t"].replicas, created.topics["t"].replicas);
        assert!(matches!(grown.apply(&add(5)), MetaResponse::Invalid { .. }));
        assert_eq!(
            grown.apply(&MetaCommand::AddPartitions {
                name: "missing".to_owned(),
                partitions: 2,
            }),
            MetaResponse::NoSuchTopic {
                name: "missing".to_owned()
            }
        );
    }

    fn reassign(topic: &str, partition: u32, replicas: &[NodeId]) -> MetaCommand {
        MetaCommand::ReassignPartitions {
            topic: topic.to_owned(),
            partitions: vec![(partition, replicas.to_vec())],
        }
    }

    #[test]
    fn a_move_is_checked_recorded_and_finished_only_as_recorded() {
        let mut state = with_brokers(&[1, 2, 3, 4]);
        state.apply(&create("t", 2, 3));
        let before = state.topics["t"].clone();
        for refused in [
            reassign("t", 2, &[1, 2, 3]),
            reassign("t", 0, &[]),
            reassign("t", 0, &[1, 1, 2]),
            reassign("t", 0, &[1, 2, 9]),
        ] {
            assert!(
                matches!(state.apply(&refused), MetaResponse::Invalid { .. }),
                "{refused:?}"
            );
        }
        assert!(matches!(
            state.apply(&reassign("missing", 0, &[1])),
            MetaResponse::NoSuchTopic { .. }
        ));
        assert_eq!(state.topics["t"], before, "a refused move changes nothing");

        assert_eq!(
            state.apply(&reassign("t", 0, &[4, 2, 3])),
            MetaResponse::Done
        );
        assert_eq!(state.topics["t"].moves[&0], vec![4, 2, 3]);
        let holders: BTreeSet<NodeId> = state.topics["t"].holders(0).collect();
        let mut expected: BTreeSet<NodeId> = before.replicas[0].iter().copied().collect();
        expected.insert(4);
        assert_eq!(
            holders, expected,
            "old and new replicas hold it while it moves"
        );

        let finish = |topic_id, replicas: &[NodeId]| MetaCommand::FinishReassignment {
            topic: "t".to_owned(),
            topic_id,
            partition: 0,
            replicas: replicas.to_vec(),
        };
        // Another target, or another topic of the name: nothing happens.
        let id = state.topics["t"].id;
        state.apply(&finish(id, &[4, 3, 2]));
        state.apply(&finish(id + 1, &[4, 2, 3]));
        assert_eq!(state.topics["t"].replicas, before.replicas);
        state.apply(&finish(id, &[4, 2, 3]));
        let topic = &state.topics["t"];
        assert_eq!(topic.replicas[0], vec![4, 2, 3]);
        assert!(topic.moves.is_empty());
        assert!(topic.moved.contains(&0) && !topic.moved.contains(&1));

        // Naming the current replicas stops a move.
        state.apply(&reassign("t", 1, &[1, 4, 2]));
        let current = state.topics["t"].replicas[1].clone();
        state.apply(&reassign("t", 1, &current));
        assert!(state.topics["t"].moves.is_empty());
    }

    #[test]
    fn a_broker_is_removed_only_once_it_holds_nothing_and_registers_again_only_once_admitted() {
        let mut state = with_brokers(&[1, 2, 3, 4]);
        state.apply(&create("t", 1, 3));
        let holder = state.topics["t"].replicas[0][0];
        let spare = (1..=4)
            .find(|id| !state.topics["t"].replicas[0].contains(id))
            .expect("a broker without a replica");
        let remove = |id| MetaCommand::RemoveBroker { id };
        assert!(matches!(
            state.apply(&remove(holder)),
            MetaResponse::BrokerHoldsReplicas { count: 1, .. }
        ));
        // A broker a partition moves to holds it already.
        let mut target = state.topics["t"].replicas[0].clone();
        target[2] = spare;
        state.apply(&reassign("t", 0, &target));
        match state.apply(&remove(spare)) {
            MetaResponse::BrokerHoldsReplicas { partitions, .. } => {
                assert_eq!(partitions, vec!["t/0".to_owned()]);
            }
            other => panic!("removed a broker a partition moves to: {other:?}"),
        }
        state.apply(&reassign("t", 0, &state.topics["t"].replicas[0].clone()));
        assert_eq!(state.apply(&remove(spare)), MetaResponse::Done);
        assert!(!state.brokers.contains_key(&spare));
        assert_eq!(
            state.apply(&remove(spare)),
            MetaResponse::NoSuchBroker { id: spare }
        );
        let register = MetaCommand::RegisterBroker {
            id: spare,
            address: "again:9420".to_owned(),
            incarnation: 2,
        };
        assert_eq!(
            state.apply(&register),
            MetaResponse::BrokerRemoved { id: spare }
        );
        assert!(!state.brokers.contains_key(&spare));
        state.apply(&MetaCommand::AdmitBroker { id: spare });
        assert_eq!(state.apply(&register), MetaResponse::Done);
        assert!(state.brokers.contains_key(&spare));
    }
}

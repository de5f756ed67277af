//! Where consumer groups are coordinated in a cluster. Groups fall into
//! [`COORDINATOR_SLOTS`] slots by their name's CRC-32; the metadata group
//! records which broker coordinates each slot, under an epoch that grows
//! with every new assignment of the slot. A group's offsets change only
//! through commands that carry the epoch of its slot's coordinator, and the
//! state machine refuses any other: a broker that no longer coordinates a
//! slot (it was cut off, and the slot given to another) cannot have a
//! commit land after its successor loaded the offsets.
//!
//! - [`coordinator_slot`]: a group's slot, the same on every broker and
//!   client.
//! - [`plan_coordinators`]: what the metadata leader reassigns, a pure
//!   function of what it sees.
//! - [`LeaseBoard`]: what this broker coordinates, and when the metadata
//!   leader last confirmed that it may.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::command::MetaResponse;
use crate::state::ClusterState;
use crate::types::NodeId;

/// How many slots consumer groups fall into: the finest share of the
/// groups a broker can coordinate.
pub const COORDINATOR_SLOTS: u32 = 16;

/// The slot of consumer group `group`: the CRC-32 (IEEE) of its name's
/// UTF-8 bytes, modulo [`COORDINATOR_SLOTS`].
pub fn coordinator_slot(group: &str) -> u32 {
    crc32fast::hash(group.as_bytes()) % COORDINATOR_SLOTS
}

/// Who coordinates a slot, and since which assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorLease {
    pub broker: NodeId,
    /// Grows by one with every assignment of the slot.
    pub epoch: u64,
}

impl ClusterState {
    /// Who coordinates `group` now, if any broker was given its slot.
    pub fn coordinator_of(&self, group: &str) -> Option<CoordinatorLease> {
        self.coordinators.get(&coordinator_slot(group)).copied()
    }

    /// Gives each slot to its broker under a new epoch; slots out of range,
    /// and brokers not registered, are passed over.
    pub(crate) fn assign_coordinators(&mut self, slots: &[(u32, NodeId)]) -> MetaResponse {
        for (slot, broker) in slots {
            if *slot >= COORDINATOR_SLOTS || !self.brokers.contains_key(broker) {
                continue;
            }
            let epoch = self.coordinators.get(slot).map_or(0, |lease| lease.epoch) + 1;
            self.coordinators.insert(
                *slot,
                CoordinatorLease {
                    broker: *broker,
                    epoch,
                },
            );
        }
        MetaResponse::Done
    }

    /// The refusal of a change to `group`'s offsets made under `epoch`,
    /// unless that is its slot's epoch now. `None` (an entry written before
    /// slots had epochs) is taken as it was then.
    pub(crate) fn fence_group(&self, group: &str, epoch: Option<u64>) -> Option<MetaResponse> {
        let epoch = epoch?;
        let lease = self.coordinator_of(group);
        if lease.is_some_and(|lease| lease.epoch == epoch) {
            return None;
        }
        Some(MetaResponse::NotCoordinator {
            group: group.to_owned(),
            coordinator: lease.map(|lease| lease.broker),
        })
    }
}

/// What the metadata leader knows of the brokers when it plans.
#[derive(Debug, Default)]
pub struct CoordinatorView {
    /// Brokers that answered the leader lately.
    pub live: BTreeSet<NodeId>,
    /// Live brokers that have answered for long enough to be given slots
    /// taken from others for balance.
    pub settled: BTreeSet<NodeId>,
    /// Slots whose coordinator answers but has not taken them for longer
    /// than it takes to apply an assignment (it was cut off from the
    /// leader, and gave them up).
    pub abandoned: BTreeSet<u32>,
    /// Whether a slot may be moved between live brokers for balance now.
    pub may_balance: bool,
}

/// The slots to give to another broker, and to which: every slot without
/// a live coordinator goes to the live broker with the fewest slots; then,
/// when allowed, one slot moves from the busiest settled broker to the
/// idlest when they differ by more than one. Stable: it changes nothing
/// in a cluster that is balanced and whole.
pub fn plan_coordinators(
    current: &BTreeMap<u32, CoordinatorLease>,
    view: &CoordinatorView,
) -> Vec<(u32, NodeId)> {
    if view.live.is_empty() {
        return Vec::new();
    }
    let mut load: BTreeMap<NodeId, u32> = view.live.iter().map(|id| (*id, 0)).collect();
    let mut orphans = Vec::new();
    for slot in 0..COORDINATOR_SLOTS {
        match current.get(&slot) {
            Some(lease) if view.live.contains(&lease.broker) && !view.abandoned.contains(&slot) => {
                *load.entry(lease.broker).or_default() += 1;
            }
            _ => orphans.push(slot),
        }
    }
    let mut plan = Vec::new();
    for slot in orphans {
        let Some((&idlest, _)) = load.iter().min_by_key(|(id, count)| (**count, **id)) else {
            break;
        };
        *load.entry(idlest).or_default() += 1;
        plan.push((slot, idlest));
    }
    if plan.is_empty() && view.may_balance {
        let settled = load.iter().filter(|(id, _)| view.settled.contains(id));
        let busiest = load
            .iter()
            .max_by_key(|(id, count)| (**count, std::cmp::Reverse(**id)));
        let idlest = settled.min_by_key(|(id, count)| (**count, **id));
        if let (Some((&from, &most)), Some((&to, &fewest))) = (busiest, idlest)
            && most > fewest + 1
            && let Some(slot) = (0..COORDINATOR_SLOTS)
                .rev()
                .find(|slot| current.get(slot).is_some_and(|lease| lease.broker == from))
        {
            plan.push((slot, to));
        }
    }
    plan
}

/// What this broker coordinates, for the metadata leader to see, and when
/// the leader last confirmed it may: a broker that has not heard from a
/// leader in touch with a majority stops coordinating before the leader
/// gives its slots to another.
#[derive(Debug)]
pub struct LeaseBoard {
    inner: Mutex<Leases>,
}

impl Default for LeaseBoard {
    fn default() -> Self {
        // Answers are numbered from a point no earlier start of this
        // broker is likely to have reached, so that a leader echoing an
        // answer of an earlier start finds no match.
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| u64::try_from(since.as_nanos()).unwrap_or(1))
            .max(1);
        Self {
            inner: Mutex::new(Leases {
                held: BTreeMap::new(),
                confirmations: VecDeque::new(),
                answers: VecDeque::new(),
                next_answer: first,
            }),
        }
    }
}

#[derive(Debug)]
struct Leases {
    /// Slot → the epoch it is coordinated under here.
    held: BTreeMap<u32, u64>,
    /// The metadata leader's latest asks, oldest first: as of when each
    /// confirms, the term it leads in, and how far it had applied.
    confirmations: VecDeque<Confirmation>,
    /// The latest answers given, oldest first: their numbers and when.
    answers: VecDeque<(u64, Instant)>,
    next_answer: u64,
}

/// How many of the leader's asks, and of the answers, are kept: more than
/// come in a second.
const CONFIRMATIONS_KEPT: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Confirmation {
    at: Instant,
    term: u64,
    applied: u64,
}

impl LeaseBoard {
    /// The slots coordinated here now, with their epochs.
    pub fn held(&self) -> BTreeMap<u32, u64> {
        self.inner.lock().held.clone()
    }

    /// This broker coordinates `held` from now on.
    pub fn set_held(&self, held: BTreeMap<u32, u64>) {
        self.inner.lock().held = held;
    }

    /// The metadata leader of `term`, having applied the entries up to
    /// `applied`, asked, being in touch with a majority, having heard this
    /// broker's answer `answered` (`None` from a leader that does not
    /// say). It confirms as of when that answer was given: an ask that
    /// took long to arrive confirms no more than the leader knew. An
    /// answer this broker does not know of (0, none yet, or one too old)
    /// confirms nothing, nor does an older term than one heard before.
    pub fn confirm(&self, term: u64, applied: u64, answered: Option<u64>) {
        let mut inner = self.inner.lock();
        if inner
            .confirmations
            .back()
            .is_some_and(|heard| heard.term > term)
        {
            return;
        }
        let at = match answered {
            None => Instant::now(),
            Some(answer) => match inner.answers.iter().find(|(number, _)| *number == answer) {
                Some((_, at)) => *at,
                None => return,
            },
        };
        inner
            .confirmations
            .push_back(Confirmation { at, term, applied });
        while inner.confirmations.len() > CONFIRMATIONS_KEPT {
            inner.confirmations.pop_front();
        }
    }

    /// Numbers an answer given now, for the leader to echo.
    pub fn answer(&self) -> u64 {
        let mut inner = self.inner.lock();
        let number = inner.next_answer;
        inner.next_answer = number.wrapping_add(1).max(1);
        inner.answers.push_back((number, Instant::now()));
        while inner.answers.len() > CONFIRMATIONS_KEPT {
            inner.answers.pop_front();
        }
        number
    }

    /// Whether the metadata leader asked within `within` having applied
    /// no more than this broker has now (`applied_here`): then what this
    /// broker's state says of coordinators is as recent as the leader's
    /// was then. Any such ask counts, not only the latest: the leader is
    /// usually a little ahead, and its latest ask may come before this
    /// broker has applied what the leader had.
    pub fn reached_within(&self, within: Duration, applied_here: u64) -> bool {
        self.inner
            .lock()
            .confirmations
            .iter()
            .any(|heard| heard.at.elapsed() <= within && heard.applied <= applied_here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(owners: &[NodeId]) -> BTreeMap<u32, CoordinatorLease> {
        owners
            .iter()
            .enumerate()
            .map(|(slot, broker)| {
                (
                    slot as u32,
                    CoordinatorLease {
                        broker: *broker,
                        epoch: 1,
                    },
                )
            })
            .collect()
    }

    fn view(live: &[NodeId], may_balance: bool) -> CoordinatorView {
        CoordinatorView {
            live: live.iter().copied().collect(),
            settled: live.iter().copied().collect(),
            abandoned: BTreeSet::new(),
            may_balance,
        }
    }

    fn counts(
        current: &BTreeMap<u32, CoordinatorLease>,
        plan: &[(u32, NodeId)],
    ) -> BTreeMap<NodeId, u32> {
        let mut owners: BTreeMap<u32, NodeId> = current
            .iter()
            .map(|(slot, lease)| (*slot, lease.broker))
            .collect();
        owners.extend(plan.iter().copied());
        let mut counts = BTreeMap::new();
        for broker in owners.values() {
            *counts.entry(*broker).or_default() += 1;
        }
        counts
    }

    #[test]
    fn slots_are_spread_from_nothing() {
        let plan = plan_coordinators(&BTreeMap::new(), &view(&[1, 2, 3], false));
        assert_eq!(plan.len(), COORDINATOR_SLOTS as usize);
        let counts = counts(&BTreeMap::new(), &plan);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![6, 5, 5]);
    }

    #[test]
    fn a_dead_brokers_slots_go_to_the_live_ones_and_nothing_else_moves() {
        let owners: Vec<NodeId> = (0..COORDINATOR_SLOTS)
            .map(|s| u64::from(s % 3) + 1)
            .collect();
        let current = leases(&owners);
        let plan = plan_coordinators(&current, &view(&[1, 3], true));
        assert!(plan.iter().all(|(slot, _)| owners[*slot as usize] == 2));
        assert_eq!(plan.len(), 5);
        assert_eq!(counts(&current, &plan), BTreeMap::from([(1, 8), (3, 8)]));
    }

    #[test]
    fn a_balanced_whole_cluster_is_left_alone() {
        let owners: Vec<NodeId> = (0..COORDINATOR_SLOTS)
            .map(|s| u64::from(s % 3) + 1)
            .collect();
        assert!(plan_coordinators(&leases(&owners), &view(&[1, 2, 3], true)).is_empty());
    }

    #[test]
    fn a_returning_broker_gets_slots_back_one_at_a_time_once_settled() {
        let mut current = leases(&[1; COORDINATOR_SLOTS as usize]);
        let mut unsettled = view(&[1, 2], true);
        unsettled.settled.remove(&2);
        assert!(plan_coordinators(&current, &unsettled).is_empty());
        let mut moves = 0;
        loop {
            let plan = plan_coordinators(&current, &view(&[1, 2], true));
            if plan.is_empty() {
                break;
            }
            assert_eq!(plan.len(), 1);
            for (slot, broker) in plan {
                current.insert(slot, CoordinatorLease { broker, epoch: 2 });
            }
            moves += 1;
            assert!(moves <= COORDINATOR_SLOTS);
        }
        assert_eq!(counts(&current, &[]), BTreeMap::from([(1, 8), (2, 8)]));
        assert!(plan_coordinators(&current, &view(&[1, 2], false)).is_empty());
    }

    #[test]
    fn an_abandoned_slot_is_given_again() {
        let owners: Vec<NodeId> = (0..COORDINATOR_SLOTS)
            .map(|s| u64::from(s % 2) + 1)
            .collect();
        let mut seen = view(&[1, 2], false);
        seen.abandoned.insert(3);
        // Its own broker has the fewest slots without it, and takes it anew.
        assert_eq!(plan_coordinators(&leases(&owners), &seen), vec![(3, 2)]);
    }

    /// A commit made under an epoch its slot has moved past is refused,
    /// and changes nothing; one under the current epoch lands.
    #[test]
    fn changes_to_a_group_are_fenced_by_its_slots_epoch() {
        use crate::command::MetaCommand;
        let mut state = ClusterState::default();
        for id in [1, 2] {
            state.apply(&MetaCommand::RegisterBroker {
                id,
                address: format!("b{id}:1"),
                incarnation: 1,
            });
        }
        let slot = coordinator_slot("g");
        let commit = |epoch, offset| MetaCommand::CommitOffsets {
            group: "g".to_owned(),
            offsets: vec![("t".to_owned(), 0, offset)],
            at_ms: 1,
            epoch: Some(epoch),
        };
        assert_eq!(
            state.apply(&commit(1, 5)),
            MetaResponse::NotCoordinator {
                group: "g".to_owned(),
                coordinator: None
            },
            "no broker coordinates the slot yet"
        );
        state.apply(&MetaCommand::AssignCoordinators {
            slots: vec![(slot, 1), (COORDINATOR_SLOTS, 1), (slot ^ 1, 9)],
        });
        assert_eq!(
            state.coordinator_of("g"),
            Some(CoordinatorLease {
                broker: 1,
                epoch: 1
            })
        );
        assert_eq!(
            state.coordinators.len(),
            1,
            "bad slots and brokers are passed over"
        );
        assert_eq!(state.apply(&commit(1, 5)), MetaResponse::Done);
        state.apply(&MetaCommand::AssignCoordinators {
            slots: vec![(slot, 2)],
        });
        assert_eq!(
            state.apply(&commit(1, 9)),
            MetaResponse::NotCoordinator {
                group: "g".to_owned(),
                coordinator: Some(2)
            }
        );
        for stale in [
            MetaCommand::DeleteGroup {
                group: "g".to_owned(),
                epoch: Some(1),
            },
            MetaCommand::MarkGroupActive {
                group: "g".to_owned(),
                at_ms: 99,
                epoch: Some(1),
            },
        ] {
            assert!(matches!(
                state.apply(&stale),
                MetaResponse::NotCoordinator { .. }
            ));
        }
        assert_eq!(state.groups["g"].offsets["t"][&0], 5);
        assert_eq!(state.groups["g"].active_ms, 1);
        assert_eq!(state.apply(&commit(2, 9)), MetaResponse::Done);
        assert_eq!(state.groups["g"].offsets["t"][&0], 9);
        // Entries written before slots had epochs apply as they did.
        let unfenced = MetaCommand::DeleteGroup {
            group: "g".to_owned(),
            epoch: None,
        };
        assert_eq!(state.apply(&unfenced), MetaResponse::Done);
        assert!(state.groups.is_empty());
    }

    /// The leader's latest ask may be ahead of this broker; an earlier
    /// one it has reached keeps it in touch, for as long as it is recent.
    #[test]
    fn an_ask_reached_keeps_a_broker_in_touch_though_the_latest_is_ahead() {
        let board = LeaseBoard::default();
        assert!(!board.reached_within(Duration::from_secs(1), 100));
        board.confirm(2, 10, None);
        board.confirm(2, 12, None);
        assert!(board.reached_within(Duration::from_secs(1), 11));
        assert!(!board.reached_within(Duration::from_secs(1), 9));
        assert!(!board.reached_within(Duration::ZERO, 11));
        // A deposed leader's ask counts for nothing.
        board.confirm(1, 0, None);
        assert!(!board.reached_within(Duration::from_secs(1), 9));
        for applied in 20..60 {
            board.confirm(3, applied, None);
        }
        assert!(!board.reached_within(Duration::from_secs(1), 40));
        assert!(board.reached_within(Duration::from_secs(1), 44));
    }

    /// An ask confirms as of the answer it echoes: one delayed on its way
    /// does not keep a broker in touch longer than the leader knew it.
    #[test]
    fn an_ask_confirms_as_of_the_answer_the_leader_had_heard() {
        let board = LeaseBoard::default();
        let within = Duration::from_millis(200);
        board.confirm(2, 10, Some(0));
        assert!(
            !board.reached_within(within, 10),
            "a leader that heard no answer yet confirms nothing"
        );
        let first = board.answer();
        board.confirm(2, 10, Some(first));
        assert!(board.reached_within(within, 10));
        std::thread::sleep(within + Duration::from_millis(50));
        let second = board.answer();
        // Arriving now, an ask that echoes the old answer confirms as of
        // then, which is too long ago.
        board.confirm(2, 10, Some(first));
        assert!(!board.reached_within(within, 10), "a delayed ask");
        board.confirm(2, 10, Some(second.wrapping_add(7)));
        assert!(!board.reached_within(within, 10), "an answer never given");
        board.confirm(2, 10, Some(second));
        assert!(board.reached_within(within, 10));
        std::thread::sleep(within + Duration::from_millis(50));
        board.confirm(2, 10, None);
        assert!(
            board.reached_within(within, 10),
            "a leader that does not echo confirms as of the ask's arrival"
        );
    }

    #[test]
    fn slots_are_the_same_for_every_caller() {
        assert_eq!(coordinator_slot("orders"), crc32fast::hash(b"orders") % 16);
        assert!((0..1000).all(|i| coordinator_slot(&format!("g{i}")) < COORDINATOR_SLOTS));
    }
}

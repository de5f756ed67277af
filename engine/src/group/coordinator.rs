//! One group's state machine: its members (subscriptions, session
//! deadlines), the target assignment, and what each member actually holds.
//! It does no I/O and knows no gRPC: operations return the assignments to
//! send, and the caller delivers them.
//!
//! The protocol is incremental (as Kafka's KIP-848): on a target change, a
//! member holding partitions it should no longer own is sent an assignment
//! with them in `revoke` (its `assigned` keeps the rest); a partition is
//! handed to its new owner only once the old owner acknowledged the
//! revocation or was removed. Everyone else keeps consuming.
//!
//! The generation grows on every target change. A member's generation is
//! that of the latest assignment it was sent; commits must name it.
//!
//! Invariant (`check_invariants`, run after every change): no partition is
//! held, assigned or being revoked, by two members at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::TopicPartition;
use super::assignment::{MemberInput, assign};

/// A member's partitions as of `generation`: it owns `assigned` (all of
/// them) and must stop consuming and acknowledge `revoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub generation: u64,
    pub assigned: Vec<TopicPartition>,
    pub revoke: Vec<TopicPartition>,
}

/// An assignment to deliver to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub member_id: String,
    pub assignment: Assignment,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout: Duration,
    pub deadline: Instant,
    /// What it should own once every handshake is done.
    pub target: BTreeSet<TopicPartition>,
    /// What it owns and may consume (as last sent).
    pub assigned: BTreeSet<TopicPartition>,
    /// Asked to give up, not yet acknowledged, with the generation that asked.
    pub revoking: BTreeMap<TopicPartition, u64>,
    /// Generation of the latest assignment it was sent.
    pub generation: u64,
}

/// Why a commit is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    UnknownMember,
    StaleGeneration { member: u64, group: u64 },
    NotOwned(TopicPartition),
}

#[derive(Debug, Clone, Default)]
pub struct Coordinator {
    generation: u64,
    members: BTreeMap<String, Member>,
    /// Partition counts of the subscribed topics the target was computed for.
    partitions: BTreeMap<String, u32>,
}

impl Coordinator {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.get(member_id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether some member still waits for partitions or owes a revocation.
    pub fn is_rebalancing(&self) -> bool {
        self.members
            .values()
            .any(|m| !m.revoking.is_empty() || m.target != m.assigned)
    }

    /// Adds a member and rebalances. The new member's first assignment is
    /// always among the returned ones (first), even when empty.
    pub fn join(
        &mut self,
        member_id: &str,
        client_id: String,
        topics: BTreeSet<String>,
        session_timeout: Duration,
        partitions: &BTreeMap<String, u32>,
        now: Instant,
    ) -> Vec<Outgoing> {
        assert!(
            !self.members.contains_key(member_id),
            "member ids are unique"
        );
        self.members.insert(
            member_id.to_owned(),
            Member {
                client_id,
                topics,
                session_timeout,
                deadline: now + session_timeout,
                target: BTreeSet::new(),
                assigned: BTreeSet::new(),
                revoking: BTreeMap::new(),
                generation: 0,
            },
        );
        self.rebalance(partitions, true);
        let mut out = self.reconcile(Some(member_id));
        if let Some(first) = out.iter().position(|o| o.member_id == member_id) {
            let own = out.remove(first);
            out.insert(0, own);
        }
        out
    }

    /// Extends a member's session; false if it is not a member.
    pub fn heartbeat(&mut self, member_id: &str, now: Instant) -> bool {
        match self.members.get_mut(member_id) {
            Some(member) => {
                member.deadline = now + member.session_timeout;
                true
            }
            None => false,
        }
    }

    /// A member gave up `partitions` (asked by `generation`); they go to
    /// their new owners. Partitions it is not revoking, or whose revocation
    /// a later generation asked for, are ignored. `None` if not a member.
    pub fn revocation_done(
        &mut self,
        member_id: &str,
        generation: u64,
        partitions: &[TopicPartition],
        now: Instant,
    ) -> Option<Vec<Outgoing>> {
        let member = self.members.get_mut(member_id)?;
        member.deadline = now + member.session_timeout;
        let mut released = false;
        for tp in partitions {
            if member
                .revoking
                .get(tp)
                .is_some_and(|&asked| asked <= generation)
            {
                member.revoking.remove(tp);
                released = true;
            }
        }
        Some(if released {
            self.reconcile(None)
        } else {
            Vec::new()
        })
    }

    /// Removes a member (leave, stream end, timeout): its partitions are
    /// free at once. Empty if it was not a member. The partition counts are
    /// those of the last rebalance (`refresh` catches up with changes).
    pub fn remove(&mut self, member_id: &str) -> Vec<Outgoing> {
        if self.members.remove(member_id).is_none() {
            return Vec::new();
        }
        let partitions = std::mem::take(&mut self.partitions);
        self.rebalance(&partitions, true);
        self.reconcile(None)
    }

    /// Members whose session deadline passed.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| m.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The earliest session deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.members.values().map(|m| m.deadline).min()
    }

    /// Rebalances if the subscribed topics' partition counts changed
    /// (partitions added, a topic deleted or created).
    pub fn refresh(&mut self, partitions: &BTreeMap<String, u32>) -> Vec<Outgoing> {
        if self.relevant(partitions) == self.partitions {
            return Vec::new();
        }
        self.rebalance(partitions, false);
        self.reconcile(None)
    }

    /// Checks a commit: the member exists, names its current generation,
    /// and holds every partition.
    pub fn check_commit<'a>(
        &self,
        member_id: &str,
        generation: u64,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<(), Fenced> {
        let member = self.members.get(member_id).ok_or(Fenced::UnknownMember)?;
        if member.generation != generation {
            return Err(Fenced::StaleGeneration {
                member: member.generation,
                group: self.generation,
            });
        }
        for tp in partitions {
            if !member.assigned.contains(tp) && !member.revoking.contains_key(tp) {
                return Err(Fenced::NotOwned(tp.clone()));
            }
        }
        Ok(())
    }

    /// Every held partition with its holder and whether it is being revoked.
    pub fn ownership(&self) -> Vec<(TopicPartition, String, bool)> {
        let mut owners = Vec::new();
        for (id, member) in &self.members {
            owners.extend(
                member
                    .assigned
                    .iter()
                    .map(|tp| (tp.clone(), id.clone(), false)),
            );
            owners.extend(
                member
                    .revoking
                    .keys()
                    .map(|tp| (tp.clone(), id.clone(), true)),
            );
        }
        owners.sort();
        owners
    }

    /// Panics if a partition is held by two members, or a member both owns
    /// and revokes one, or owns one outside its target.
    pub fn check_invariants(&self) {
        let mut holders: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        for (id, member) in &self.members {
            assert!(
                member.assigned.is_subset(&member.target),
                "member `{id}` owns partitions outside its target"
            );
            for tp in member.assigned.iter().chain(member.revoking.keys()) {
                if let Some(other) = holders.insert(tp, id) {
                    panic!("{tp} is held by both `{other}` and `{id}`");
                }
            }
            assert!(
                member.generation <= self.generation,
                "member `{id}` is ahead of its group"
            );
        }
    }

    /// The subscribed topics' partition counts.
    fn relevant(&self, partitions: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let subscribed: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        partitions
            .iter()
            .filter(|(topic, _)| subscribed.contains(topic))
            .map(|(topic, &n)| (topic.clone(), n))
            .collect()
    }

    /// Computes the target anew. The generation grows if membership changed
    /// or the target did.
    fn rebalance(&mut self, partitions: &BTreeMap<String, u32>, membership_changed: bool) {
        self.partitions = self.relevant(partitions);
        let ids: Vec<&String> = self.members.keys().collect();
        let inputs: Vec<MemberInput<'_>> = self
            .members
            .values()
            .map(|m| MemberInput {
                topics: &m.topics,
                owned: &m.target,
            })
            .collect();
        let targets = assign(&inputs, &self.partitions);
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        let mut changed = membership_changed;
        for (id, target) in ids.iter().zip(targets) {
            let member = self
                .members
                .get_mut(id)
                .expect("ids were read from members");
            if member.target != target {
                member.target = target;
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
        }
    }

    /// Moves members' holdings toward the target: asks for revocations, and
    /// hands out partitions nobody holds any more. Returns an assignment for
    /// every member whose holdings changed (and for `always`).
    fn reconcile(&mut self, always: Option<&str>) -> Vec<Outgoing> {
        let generation = self.generation;
        let before: BTreeMap<String, (BTreeSet<TopicPartition>, usize)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), (m.assigned.clone(), m.revoking.len())))
            .collect();
        for member in self.members.values_mut() {
            let lost: Vec<TopicPartition> = member
                .assigned
                .difference(&member.target)
                .cloned()
                .collect();
            for tp in lost {
                member.assigned.remove(&tp);
                member.revoking.insert(tp, generation);
            }
        }
        let mut held: BTreeSet<TopicPartition> = self
            .members
            .values()
            .flat_map(|m| m.assigned.iter().chain(m.revoking.keys()))
            .cloned()
            .collect();
        for member in self.members.values_mut() {
            let pending: Vec<TopicPartition> = member
                .target
                .difference(&member.assigned)
                .cloned()
                .collect();
            for tp in pending {
                if held.insert(tp.clone()) {
                    member.assigned.insert(tp);
                }
            }
        }
        let mut out = Vec::new();
        for (id, member) in &mut self.members {
            let changed = before.get(id).is_none_or(|(assigned, revoking)| {
                *assigned != member.assigned || *revoking != member.revoking.len()
            });
            if changed || always == Some(id.as_str()) {
                member.generation = generation;
                out.push(Outgoing {
                    member_id: id.clone(),
                    assignment: Assignment {
                        generation,
                        assigned: member.assigned.iter().cloned().collect(),
                        revoke: member.revoking.keys().cloned().collect(),
                    },
                });
            }
        }
        self.check_invariants();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);

    fn partitions(count: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([("t".to_owned(), count)])
    }

    fn join(
        c: &mut Coordinator,
        id: &str,
        p: &BTreeMap<String, u32>,
        now: Instant,
    ) -> Vec<Outgoing> {
        c.join(
            id,
            String::new(),
            BTreeSet::from(["t".to_owned()]),
            SESSION,
            p,
            now,
        )
    }

    /// Acknowledges every revocation until nothing is left to hand over.
    fn settle(c: &mut Coordinator, mut out: Vec<Outgoing>, now: Instant) -> usize {
        let mut revoked = 0;
        for _ in 0..100 {
            let Some(o) = out.pop() else { return revoked };
            if !o.assignment.revoke.is_empty() {
                revoked += o.assignment.revoke.len();
                out.extend(
                    c.revocation_done(
                        &o.member_id,
                        o.assignment.generation,
                        &o.assignment.revoke,
                        now,
                    )
                    .unwrap(),
                );
            }
        }
        panic!("did not settle");
    }

    #[test]
    fn a_join_revokes_only_what_the_newcomer_gets() {
        let p = partitions(12);
        let now = Instant::now();
        let mut c = Coordinator::default();
        for id in ["a", "b", "c"] {
            let out = join(&mut c, id, &p, now);
            settle(&mut c, out, now);
        }
        assert!(!c.is_rebalancing());
        let out = join(&mut c, "d", &p, now);
        // The newcomer first, with nothing yet: all 12 are held by others.
        assert_eq!(out[0].member_id, "d");
        assert!(out[0].assignment.assigned.is_empty());
        let revokes: Vec<_> = out
            .iter()
            .filter(|o| !o.assignment.revoke.is_empty())
            .collect();
        assert_eq!(revokes.len(), 3);
        assert!(
            revokes
                .iter()
                .all(|o| o.assignment.revoke.len() == 1 && o.assignment.assigned.len() == 3)
        );
        assert!(c.is_rebalancing());
        // One acknowledgement hands one partition to `d`.
        let first = revokes[0].clone();
        let handed = c
            .revocation_done(
                &first.member_id,
                first.assignment.generation,
                &first.assignment.revoke,
                now,
            )
            .unwrap();
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].member_id, "d");
        assert_eq!(handed[0].assignment.assigned, first.assignment.revoke);
        let rest: Vec<_> = revokes[1..].iter().map(|o| (*o).clone()).collect();
        settle(&mut c, rest, now);
        assert!(!c.is_rebalancing());
        assert!(c.members().values().all(|m| m.assigned.len() == 3));
    }

    #[test]
    fn a_removed_member_frees_its_partitions_at_once() {
        let p = partitions(4);
        let now = Instant::now();
        let mut c = Coordinator::default();
        let out = join(&mut c, "a", &p, now);
        settle(&mut c, out, now);
        let out = join(&mut c, "b", &p, now);
        // `a` is revoking two for `b`, then dies without acknowledging.
        assert_eq!(
            out.iter().map(|o| o.assignment.revoke.len()).sum::<usize>(),
            2
        );
        let out = c.remove("a");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].member_id, "b");
        assert_eq!(out[0].assignment.assigned.len(), 4);
        assert!(!c.is_rebalancing());
    }

    #[test]
    fn expired_members_and_heartbeats() {
        let p = partitions(2);
        let now = Instant::now();
        let mut c = Coordinator::default();
        join(&mut c, "a", &p, now);
        join(&mut c, "b", &p, now);
        let later = now + SESSION;
        assert!(c.heartbeat("a", now + Duration::from_secs(1)));
        assert_eq!(c.expired(later), vec!["b".to_owned()]);
        assert!(!c.heartbeat("nobody", now));
        assert_eq!(c.next_deadline(), Some(later));
    }

    #[test]
    fn commits_are_fenced_by_member_generation_and_ownership() {
        let p = partitions(2);
        let now = Instant::now();
        let mut c = Coordinator::default();
        let out = join(&mut c, "a", &p, now);
        let generation = out[0].assignment.generation;
        let owned = TopicPartition::new("t", 0);
        assert_eq!(c.check_commit("a", generation, [&owned]), Ok(()));
        assert_eq!(
            c.check_commit("x", generation, [&owned]),
            Err(Fenced::UnknownMember)
        );
        assert!(matches!(
            c.check_commit("a", generation + 1, [&owned]),
            Err(Fenced::StaleGeneration { .. })
        ));
        let other = TopicPartition::new("t", 9);
        assert_eq!(
            c.check_commit("a", generation, [&other]),
            Err(Fenced::NotOwned(other))
        );
        // `b` joins: `a` revokes one and gets a new generation; the old one is stale.
        let out = join(&mut c, "b", &p, now);
        let a = out.iter().find(|o| o.member_id == "a").unwrap();
        assert!(a.assignment.generation > generation);
        assert!(c.check_commit("a", generation, [&owned]).is_err());
        let revoking = &a.assignment.revoke[0];
        assert_eq!(
            c.check_commit("a", a.assignment.generation, [revoking]),
            Ok(())
        );
    }

    #[test]
    fn refresh_follows_added_partitions_and_deleted_topics() {
        let now = Instant::now();
        let mut c = Coordinator::default();
        let out = join(&mut c, "a", &partitions(1), now);
        settle(&mut c, out, now);
        assert!(c.refresh(&partitions(1)).is_empty());
        let out = c.refresh(&partitions(3));
        assert_eq!(out[0].assignment.assigned.len(), 3);
        let out = c.refresh(&BTreeMap::new());
        assert_eq!(out[0].assignment.revoke.len(), 3);
        settle(&mut c, out, now);
        assert!(c.members()["a"].assigned.is_empty());
    }

    #[test]
    fn a_stale_acknowledgement_is_ignored() {
        let p = partitions(2);
        let now = Instant::now();
        let mut c = Coordinator::default();
        let out = join(&mut c, "a", &p, now);
        settle(&mut c, out, now);
        let out = join(&mut c, "b", &p, now);
        let a = out.iter().find(|o| o.member_id == "a").unwrap();
        let older = a.assignment.generation - 1;
        let handed = c
            .revocation_done("a", older, &a.assignment.revoke, now)
            .unwrap();
        assert!(handed.is_empty());
        assert!(c.is_rebalancing());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Remove(usize),
        Acknowledge(usize),
        Resize(u32, u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1u8..4).prop_map(Op::Join),
            (0usize..8).prop_map(Op::Remove),
            (0usize..8).prop_map(Op::Acknowledge),
            (0u32..6, 0u32..6).prop_map(|(a, b)| Op::Resize(a, b)),
        ]
    }

    proptest::proptest! {
        /// Any sequence of joins, removals, acknowledgements and topic
        /// changes keeps one holder per partition (checked inside every
        /// change), and once every revocation is acknowledged the group
        /// settles with every member holding exactly its target.
        #[test]
        fn any_history_keeps_one_holder_and_settles(ops in proptest::collection::vec(op(), 1..40)) {
            let now = Instant::now();
            let mut c = Coordinator::default();
            let mut partitions = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 2)]);
            let mut next_id = 0;
            for op in ops {
                let ids: Vec<String> = c.members().keys().cloned().collect();
                match op {
                    Op::Join(mask) => {
                        let topics = ["a", "b"]
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, t)| (*t).to_owned())
                            .collect();
                        next_id += 1;
                        let id = format!("m{next_id}");
                        let out = c.join(&id, String::new(), topics, SESSION, &partitions, now);
                        proptest::prop_assert_eq!(&out[0].member_id, &id);
                    }
                    Op::Remove(i) if !ids.is_empty() => {
                        c.remove(&ids[i % ids.len()]);
                    }
                    Op::Acknowledge(i) if !ids.is_empty() => {
                        let id = &ids[i % ids.len()];
                        let member = &c.members()[id];
                        let revoking: Vec<_> = member.revoking.keys().cloned().collect();
                        let generation = member.generation;
                        c.revocation_done(id, generation, &revoking, now);
                    }
                    Op::Resize(a, b) => {
                        partitions = [("a", a), ("b", b)]
                            .into_iter()
                            .filter(|(_, n)| *n > 0)
                            .map(|(t, n)| (t.to_owned(), n))
                            .collect();
                        c.refresh(&partitions);
                    }
                    Op::Remove(_) | Op::Acknowledge(_) => {}
                }
            }
            for _ in 0..10 {
                let ids: Vec<String> = c.members().keys().cloned().collect();
                for id in ids {
                    let member = &c.members()[&id];
                    let revoking: Vec<_> = member.revoking.keys().cloned().collect();
                    let generation = member.generation;
                    c.revocation_done(&id, generation, &revoking, now);
                }
            }
            proptest::prop_assert!(!c.is_rebalancing());
            let held: usize = c.members().values().map(|m| m.assigned.len()).sum();
            let wanted: u32 = partitions
                .iter()
                .filter(|(t, _)| c.members().values().any(|m| m.topics.contains(*t)))
                .map(|(_, n)| n)
                .sum();
            proptest::prop_assert_eq!(held, wanted as usize);
        }
    }
}

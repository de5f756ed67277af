//! The target assignment of a group, as a pure function of its members
//! (their subscriptions and the partitions they own now) and the partition
//! counts of the topics.
//!
//! Guarantees (checked by the tests below, proptest included):
//! - every partition of a subscribed topic goes to exactly one member
//!   subscribed to that topic; nothing else is assigned;
//! - members with the same subscriptions get counts that differ by at most one;
//! - sticky: a member keeps what it owns unless balance needs it elsewhere,
//!   and balance takes only from members above their share, so a join moves
//!   only what the newcomer gets (3 members on 12 partitions, a 4th joins:
//!   exactly 3 move, one from each);
//! - stable: assigning again from the result changes nothing.
//!
//! Steps: keep what each member owns and may still own; give each free
//! partition to the least loaded eligible member; then, while some member
//! has two more than an eligible other, move one partition from the most
//! loaded (preferring one it did not own before). Every move lowers the sum
//! of squared counts, so the loop ends.

use std::collections::{BTreeMap, BTreeSet};

use super::TopicPartition;

/// One member as the assignor sees it; members are told apart by their
/// position in the slice.
#[derive(Debug, Clone, Copy)]
pub struct MemberInput<'a> {
    pub topics: &'a BTreeSet<String>,
    /// What it owns now (partitions it may no longer own are ignored).
    pub owned: &'a BTreeSet<TopicPartition>,
}

/// Each member's target, in the order of `members`. `partitions` maps a topic
/// to its partition count; subscribed topics missing from it are ignored.
pub fn assign(
    members: &[MemberInput<'_>],
    partitions: &BTreeMap<String, u32>,
) -> Vec<BTreeSet<TopicPartition>> {
    let mut target: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); members.len()];
    // Partitions a member got in this run without owning them before:
    // moving them again costs no revocation.
    let mut fresh: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); members.len()];
    let exists = |tp: &TopicPartition| partitions.get(&tp.topic).is_some_and(|&n| tp.partition < n);

    let mut taken = BTreeSet::new();
    for (i, member) in members.iter().enumerate() {
        for tp in member.owned {
            if member.topics.contains(&tp.topic) && exists(tp) && taken.insert(tp.clone()) {
                target[i].insert(tp.clone());
            }
        }
    }

    // Members subscribed to each topic.
    let mut eligible: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, member) in members.iter().enumerate() {
        for topic in member.topics {
            if partitions.contains_key(topic) {
                eligible.entry(topic.as_str()).or_default().push(i);
            }
        }
    }
    // Partitions with fewer candidates first, so they are not crowded out.
    let mut topics: Vec<(&str, &Vec<usize>)> = eligible.iter().map(|(t, m)| (*t, m)).collect();
    topics.sort_by_key(|(topic, candidates)| (candidates.len(), *topic));
    for (topic, candidates) in topics {
        for partition in 0..partitions[topic] {
            let tp = TopicPartition::new(topic, partition);
            if taken.contains(&tp) {
                continue;
            }
            let &least = candidates
                .iter()
                .min_by_key(|&&i| (target[i].len(), i))
                .expect("a topic in `eligible` has a subscriber");
            target[least].insert(tp.clone());
            fresh[least].insert(tp.clone());
            taken.insert(tp);
        }
    }

    let total: usize = target.iter().map(BTreeSet::len).sum();
    // Each move lowers the sum of squared counts by at least 2.
    let moves_max = total * total / 2 + 1;
    let classes = classes(members);
    let mut moves = 0;
    while move_one(members, &classes, &mut target, &mut fresh) {
        moves += 1;
        assert!(moves <= moves_max, "balancing did not converge");
    }
    target
}

/// Members grouped by identical subscriptions.
fn classes<'a>(members: &[MemberInput<'a>]) -> Vec<(&'a BTreeSet<String>, Vec<usize>)> {
    let mut classes: Vec<(&BTreeSet<String>, Vec<usize>)> = Vec::new();
    for (i, member) in members.iter().enumerate() {
        match classes
            .iter_mut()
            .find(|(topics, _)| *topics == member.topics)
        {
            Some((_, indices)) => indices.push(i),
            None => classes.push((member.topics, vec![i])),
        }
    }
    classes
}

/// Moves one partition from the most loaded member that has two more than
/// an eligible member to the least loaded such member. False when balanced.
fn move_one(
    members: &[MemberInput<'_>],
    classes: &[(&BTreeSet<String>, Vec<usize>)],
    target: &mut [BTreeSet<TopicPartition>],
    fresh: &mut [BTreeSet<TopicPartition>],
) -> bool {
    let mut donors: Vec<usize> = (0..members.len()).collect();
    donors.sort_by_key(|&i| (std::cmp::Reverse(target[i].len()), i));
    // The least loaded member of each class: the best receiver it offers.
    let receivers: Vec<(&BTreeSet<String>, usize)> = classes
        .iter()
        .map(|(topics, indices)| {
            let least = indices
                .iter()
                .copied()
                .min_by_key(|&i| (target[i].len(), i))
                .expect("a class has a member");
            (*topics, least)
        })
        .collect();
    for donor in donors {
        let load = target[donor].len();
        let best = receivers
            .iter()
            .filter(|(_, r)| *r != donor && target[*r].len() + 2 <= load)
            .filter(|(topics, _)| target[donor].iter().any(|tp| topics.contains(&tp.topic)))
            .min_by_key(|(_, r)| (target[*r].len(), *r));
        let Some(&(topics, receiver)) = best else {
            continue;
        };
        let movable = |tp: &&TopicPartition| topics.contains(&tp.topic);
        let tp = fresh[donor]
            .iter()
            .rev()
            .find(movable)
            .or_else(|| target[donor].iter().rev().find(movable))
            .cloned()
            .expect("the receiver was chosen because one partition fits");
        target[donor].remove(&tp);
        fresh[donor].remove(&tp);
        target[receiver].insert(tp.clone());
        fresh[receiver].insert(tp);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A member: id, subscriptions, owned partitions.
    type Row = (String, BTreeSet<String>, BTreeSet<TopicPartition>);

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    fn run(members: &[Row], partitions: &BTreeMap<String, u32>) -> Vec<BTreeSet<TopicPartition>> {
        let inputs: Vec<MemberInput<'_>> = members
            .iter()
            .map(|(_, topics, owned)| MemberInput { topics, owned })
            .collect();
        assign(&inputs, partitions)
    }

    #[test]
    fn a_fourth_member_takes_three_partitions_one_from_each() {
        let partitions = BTreeMap::from([("t".to_owned(), 12)]);
        let mut members: Vec<_> = (0..3)
            .map(|i| (format!("m{i}"), topics(&["t"]), BTreeSet::new()))
            .collect();
        let first = run(&members, &partitions);
        assert!(first.iter().all(|t| t.len() == 4));
        for (member, target) in members.iter_mut().zip(&first) {
            member.2 = target.clone();
        }
        members.push(("m3".into(), topics(&["t"]), BTreeSet::new()));
        let second = run(&members, &partitions);
        assert!(second.iter().all(|t| t.len() == 3), "{second:?}");
        for i in 0..3 {
            assert!(
                second[i].is_subset(&first[i]),
                "member {i} got something new"
            );
            assert_eq!(first[i].difference(&second[i]).count(), 1);
        }
    }

    #[test]
    fn a_leaving_member_spreads_only_its_partitions() {
        let partitions = BTreeMap::from([("t".to_owned(), 12)]);
        let members: Vec<_> = (0..4)
            .map(|i| (format!("m{i}"), topics(&["t"]), BTreeSet::new()))
            .collect();
        let first = run(&members, &partitions);
        let rest: Vec<_> = members[..3]
            .iter()
            .zip(&first)
            .map(|(m, t)| (m.0.clone(), m.1.clone(), t.clone()))
            .collect();
        let second = run(&rest, &partitions);
        for i in 0..3 {
            assert!(first[i].is_subset(&second[i]));
            assert_eq!(second[i].len(), 4);
        }
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let partitions = BTreeMap::from([("a".to_owned(), 4), ("b".to_owned(), 2)]);
        let members = vec![
            ("x".to_owned(), topics(&["a"]), BTreeSet::new()),
            ("y".to_owned(), topics(&["a", "b"]), BTreeSet::new()),
            ("z".to_owned(), topics(&["missing"]), BTreeSet::new()),
        ];
        let target = run(&members, &partitions);
        assert!(target[0].iter().all(|tp| tp.topic == "a"));
        assert_eq!(target[0].len() + target[1].len(), 6);
        assert_eq!(target[0].len(), 3);
        assert!(target[2].is_empty());
    }

    #[test]
    fn vanished_and_foreign_partitions_are_dropped() {
        let partitions = BTreeMap::from([("a".to_owned(), 2)]);
        let owned = BTreeSet::from([
            TopicPartition::new("a", 1),
            TopicPartition::new("a", 7),
            TopicPartition::new("gone", 0),
        ]);
        let members = vec![("x".to_owned(), topics(&["a"]), owned)];
        let target = run(&members, &partitions);
        assert_eq!(
            target[0],
            BTreeSet::from([TopicPartition::new("a", 0), TopicPartition::new("a", 1)])
        );
    }

    /// Topics `t0..` with their counts, and members with subscriptions (bit
    /// masks over the topics) and owned partitions (any, even invalid).
    fn scenario() -> impl Strategy<Value = (BTreeMap<String, u32>, Vec<Row>)> {
        (prop::collection::vec(1u32..13, 1..4), 1usize..7).prop_flat_map(|(counts, members)| {
            let topic_count = counts.len();
            let member = (
                1u32..(1 << topic_count),
                prop::collection::btree_set((0..topic_count + 1, 0u32..14), 0..10),
            );
            (Just(counts), prop::collection::vec(member, members)).prop_map(|(counts, members)| {
                let partitions: BTreeMap<String, u32> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (format!("t{i}"), n))
                    .collect();
                let members = members
                    .into_iter()
                    .enumerate()
                    .map(|(i, (mask, owned))| {
                        let topics = (0..counts.len())
                            .filter(|t| mask & (1 << t) != 0)
                            .map(|t| format!("t{t}"))
                            .collect();
                        let owned = owned
                            .into_iter()
                            .map(|(t, p)| TopicPartition::new(format!("t{t}"), p))
                            .collect();
                        (format!("m{i}"), topics, owned)
                    })
                    .collect();
                (partitions, members)
            })
        })
    }

    /// What each member may keep: its valid owned partitions, the first
    /// claimer winning a duplicate.
    fn valid_owned(
        members: &[Row],
        partitions: &BTreeMap<String, u32>,
    ) -> Vec<BTreeSet<TopicPartition>> {
        let mut seen = BTreeSet::new();
        members
            .iter()
            .map(|(_, topics, owned)| {
                owned
                    .iter()
                    .filter(|tp| {
                        topics.contains(&tp.topic)
                            && partitions.get(&tp.topic).is_some_and(|&n| tp.partition < n)
                            && seen.insert((*tp).clone())
                    })
                    .cloned()
                    .collect()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn assignment_is_complete_exclusive_and_eligible((partitions, members) in scenario()) {
            let target = run(&members, &partitions);
            let mut seen = BTreeSet::new();
            for ((_, topics, _), assigned) in members.iter().zip(&target) {
                for tp in assigned {
                    prop_assert!(topics.contains(&tp.topic), "{tp} to a non-subscriber");
                    prop_assert!(partitions[&tp.topic] > tp.partition);
                    prop_assert!(seen.insert(tp.clone()), "{tp} assigned twice");
                }
            }
            for (topic, &count) in &partitions {
                let subscribed = members.iter().any(|(_, t, _)| t.contains(topic));
                for p in 0..count {
                    prop_assert_eq!(seen.contains(&TopicPartition::new(topic.clone(), p)), subscribed);
                }
            }
        }

        #[test]
        fn same_subscriptions_differ_by_at_most_one((partitions, members) in scenario()) {
            let target = run(&members, &partitions);
            for (i, a) in members.iter().enumerate() {
                for (j, b) in members.iter().enumerate() {
                    if a.1 == b.1 {
                        prop_assert!(target[i].len() <= target[j].len() + 1,
                            "{} has {}, {} has {}", a.0, target[i].len(), b.0, target[j].len());
                    }
                }
            }
        }

        #[test]
        fn assigning_again_changes_nothing((partitions, members) in scenario()) {
            let first = run(&members, &partitions);
            let again: Vec<_> = members
                .iter()
                .zip(&first)
                .map(|((id, topics, _), owned)| (id.clone(), topics.clone(), owned.clone()))
                .collect();
            prop_assert_eq!(run(&again, &partitions), first);
        }

        #[test]
        fn one_subscription_keeps_each_members_share((partitions, members) in scenario()) {
            // Everyone subscribes to every topic: a member keeps what it owns
            // up to the lower share, and only members above it give any up.
            let all: BTreeSet<String> = partitions.keys().cloned().collect();
            let members: Vec<_> = members
                .into_iter()
                .map(|(id, _, owned)| (id, all.clone(), owned))
                .collect();
            let target = run(&members, &partitions);
            let total: u32 = partitions.values().sum();
            let share = total as usize / members.len();
            for (owned, assigned) in valid_owned(&members, &partitions).iter().zip(&target) {
                let kept = owned.intersection(assigned).count();
                prop_assert!(kept >= owned.len().min(share), "kept {kept} of {}, share {share}", owned.len());
                if owned.len() <= share + 1 {
                    prop_assert_eq!(kept, owned.len().min(assigned.len()));
                }
            }
        }
    }
}

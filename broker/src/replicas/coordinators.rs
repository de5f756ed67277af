//! On the metadata leader: which broker coordinates each slot of consumer
//! groups. Four times a second the leader asks every registered broker
//! which slots it coordinates (`RaftService.Coordination`), which also
//! confirms that it may go on (`groups.rs`). A slot whose broker has not
//! answered for three seconds, or answers without having taken the slot
//! for as long, goes to the live broker with the fewest; a broker that
//! has answered for ten seconds (back from a restart, or added) is given
//! slots from the busiest, one every two seconds, until they are even.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_cluster::coordinators::{CoordinatorView, plan_coordinators};
use brook_cluster::{MetaCommand, NodeId};
use tokio_util::sync::CancellationToken;

use super::Replicas;
use super::groups::{CONFIRMATION_SILENCE_MAX, Held};

/// How often the leader asks the brokers.
const ASK_EVERY: Duration = Duration::from_millis(250);
/// How long a broker has to answer.
const ANSWER_WITHIN: Duration = Duration::from_millis(250);
/// How long a broker may go unheard, or not take a slot given to it,
/// before its slots go to others: well beyond the silence after which it
/// stops coordinating them itself.
const SILENT_MAX: Duration = Duration::from_secs(3);
/// How long a broker answers before it is given slots taken from others.
const SETTLED_AFTER: Duration = Duration::from_secs(10);
/// The least time between two slots moved for balance.
const BALANCE_EVERY: Duration = Duration::from_secs(2);

const _: () = assert!(SILENT_MAX.as_millis() >= 3 * CONFIRMATION_SILENCE_MAX.as_millis());

/// What the leader heard from the brokers since it started leading.
#[derive(Debug)]
struct Hearing {
    /// The term it leads in.
    term: u64,
    /// Per broker: when it last answered (the leadership's start counts as
    /// an answer, so that a new leader does not take every slot at once),
    /// since when it has answered without a silence, and what it holds.
    brokers: HashMap<NodeId, Heard>,
    /// Slots whose broker was seen not holding them, and since when.
    unheld: HashMap<u32, Instant>,
    last_balance: Instant,
}

#[derive(Debug)]
struct Heard {
    last: Instant,
    since: Instant,
    held: Held,
    /// The number of its latest answer (0: none yet), which the next ask
    /// echoes: the broker counts the ask as a confirmation as of then.
    answer: u64,
}

impl Hearing {
    fn new(term: u64) -> Self {
        Self {
            term,
            brokers: HashMap::new(),
            unheld: HashMap::new(),
            last_balance: Instant::now(),
        }
    }

    /// What broker `id` answered (what it holds and the answer's number),
    /// or that it did not.
    fn heard(&mut self, id: NodeId, answered: Option<(Held, u64)>, now: Instant, start: Instant) {
        let entry = self.brokers.entry(id).or_insert(Heard {
            last: start,
            since: now,
            held: Held::new(),
            answer: 0,
        });
        match answered {
            Some((held, answer)) => {
                if now.duration_since(entry.last) > SILENT_MAX {
                    entry.since = now;
                }
                entry.last = now;
                entry.held = held;
                entry.answer = answer;
            }
            None if now.duration_since(entry.last) > SILENT_MAX => entry.held.clear(),
            None => {}
        }
    }
}

impl Replicas {
    /// Until `stop`: while this broker leads the metadata group, gives the
    /// slots of consumer groups to live brokers.
    pub(super) async fn assign_coordinators(self: Arc<Self>, stop: CancellationToken) {
        let mut hearing: Option<(Hearing, Instant)> = None;
        let mut channels: HashMap<String, tonic::transport::Channel> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(ASK_EVERY) => {}
                () = stop.cancelled() => return,
            }
            if !self.meta.is_leading(CONFIRMATION_SILENCE_MAX) {
                hearing = None;
                continue;
            }
            let term = self.meta.term();
            if hearing.as_ref().is_none_or(|(h, _)| h.term != term) {
                hearing = Some((Hearing::new(term), Instant::now()));
            }
            let Some((hearing, start)) = hearing.as_mut() else {
                continue;
            };
            self.hear_brokers(hearing, *start, &mut channels).await;
            if !self.ready_to_assign(*start) {
                continue;
            }
            let plan = self.plan(hearing);
            if plan.is_empty() {
                continue;
            }
            match self
                .meta
                .propose(MetaCommand::AssignCoordinators {
                    slots: plan.clone(),
                })
                .await
            {
                Ok(_) => {
                    for (slot, _) in &plan {
                        hearing.unheld.remove(slot);
                    }
                    tracing::info!(
                        ?plan,
                        "slots of consumer groups given to brokers (slot, broker)"
                    );
                }
                Err(e) => tracing::debug!(error = %e, "could not give slots of consumer groups"),
            }
        }
    }

    /// Asks every registered broker (this one answers for itself).
    async fn hear_brokers(
        &self,
        hearing: &mut Hearing,
        start: Instant,
        channels: &mut HashMap<String, tonic::transport::Channel>,
    ) {
        let me = self.meta.id();
        let brokers: BTreeMap<NodeId, String> = self.meta.read_state(|state| {
            state
                .brokers
                .iter()
                .map(|(id, broker)| (*id, broker.address.clone()))
                .collect()
        });
        channels.retain(|address, _| brokers.values().any(|known| known == address));
        let asked = (self.meta.term(), self.meta.applied_index());
        let asks = brokers
            .iter()
            .filter(|(id, _)| **id != me)
            .filter_map(|(id, address)| {
                let channel = if let Some(channel) = channels.get(address) {
                    channel.clone()
                } else {
                    let channel = self.meta.peer_channel(address)?;
                    channels.insert(address.clone(), channel.clone());
                    channel
                };
                let meta = self.meta.clone();
                let answered = hearing.brokers.get(id).map_or(0, |heard| heard.answer);
                Some(async move {
                    (
                        *id,
                        meta.ask_coordination(channel, asked, answered, ANSWER_WITHIN)
                            .await,
                    )
                })
            });
        let answers = futures::future::join_all(asks).await;
        let now = Instant::now();
        hearing.brokers.retain(|id, _| brokers.contains_key(id));
        for (id, held) in answers {
            hearing.heard(id, held, now, start);
        }
        if brokers.contains_key(&me) {
            let held = self.coordinating.borrow().clone();
            hearing.heard(me, Some((held, 0)), now, start);
        }
    }

    /// Whether slots may be given now: not in a new cluster until every
    /// voter of the metadata group has registered (or a few seconds went
    /// by), so that they are spread over all of them at once rather than
    /// given to the first and moved one by one.
    fn ready_to_assign(&self, leading_since: Instant) -> bool {
        if leading_since.elapsed() >= SILENT_MAX {
            return true;
        }
        let voters = brook_cluster::membership::voters(self.meta.raft());
        self.meta.read_state(|state| {
            !state.coordinators.is_empty() || voters.iter().all(|id| state.brokers.contains_key(id))
        })
    }

    /// What to reassign, from what the leader heard.
    fn plan(&self, hearing: &mut Hearing) -> Vec<(u32, NodeId)> {
        let now = Instant::now();
        let live: BTreeSet<NodeId> = hearing
            .brokers
            .iter()
            .filter(|(_, heard)| now.duration_since(heard.last) <= SILENT_MAX)
            .map(|(id, _)| *id)
            .collect();
        let settled: BTreeSet<NodeId> = hearing
            .brokers
            .iter()
            .filter(|(id, heard)| {
                live.contains(id) && now.duration_since(heard.since) >= SETTLED_AFTER
            })
            .map(|(id, _)| *id)
            .collect();
        let current = self.meta.read_state(|state| state.coordinators.clone());
        let mut abandoned = BTreeSet::new();
        for (slot, lease) in &current {
            let taken = hearing
                .brokers
                .get(&lease.broker)
                .is_some_and(|heard| heard.held.get(slot) == Some(&lease.epoch));
            if taken || !live.contains(&lease.broker) {
                hearing.unheld.remove(slot);
                continue;
            }
            let since = *hearing.unheld.entry(*slot).or_insert(now);
            if now.duration_since(since) > SILENT_MAX {
                abandoned.insert(*slot);
            }
        }
        let may_balance = now.duration_since(hearing.last_balance) >= BALANCE_EVERY;
        let view = CoordinatorView {
            live,
            settled,
            abandoned,
            may_balance,
        };
        let plan = plan_coordinators(&current, &view);
        if may_balance && !plan.is_empty() {
            hearing.last_balance = now;
        }
        plan
    }
}

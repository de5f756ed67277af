//! Whether this broker's replicas have caught up with their leaders, for
//! `/ready`. A replica has once it leads, or once it has applied as far as
//! its leader had applied when asked (a `Ping` of the leader's broker gives
//! every group's high watermark there). The answer is kept: a follower a
//! few records behind under load is not catching up again, and a probe
//! must not flap.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use brook_cluster::NodeId;
use tokio_util::sync::CancellationToken;

use super::{RaftReplication, Replicas};

/// How often replicas that have not caught up are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a leader's broker has to answer.
const PING_WITHIN: Duration = Duration::from_millis(500);

type Partition = (String, u32);

#[derive(Debug, Default)]
pub(super) struct CatchUp {
    caught_up: HashSet<Partition>,
    /// The high watermark a replica must reach: its leader's when asked.
    targets: HashMap<Partition, i64>,
}

impl Replicas {
    /// The partitions this broker holds a replica of that have not caught
    /// up since it started: not started yet, or behind their leader (or
    /// waiting to hear of one).
    pub fn catching_up(&self) -> Vec<String> {
        let state = self.meta.state();
        let me = self.meta.id();
        let running = self.running.lock();
        let catch_up = self.catch_up.lock();
        let foreign = self.foreign.lock();
        let mut behind = Vec::new();
        for (topic, assignment) in &state.topics {
            if foreign.contains(topic) {
                continue;
            }
            for index in 0..assignment.replicas.len() as u32 {
                let key = (topic.clone(), index);
                let done = match running.get(&key) {
                    Some(Some(_)) => catch_up.caught_up.contains(&key),
                    Some(None) => true,
                    None => !assignment.holders(index).any(|id| id == me),
                };
                if !done {
                    behind.push(format!("{topic}/{index}"));
                }
            }
        }
        behind
    }

    /// Until `stop`: marks replicas caught up as they get there.
    pub(super) async fn watch_catch_up(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.check_catch_up().await;
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn check_catch_up(&self) {
        let me = self.meta.id();
        let pending: Vec<(Partition, Arc<RaftReplication>)> = {
            let running = self.running.lock();
            let catch_up = self.catch_up.lock();
            running
                .iter()
                .filter(|(key, _)| !catch_up.caught_up.contains(*key))
                .filter_map(|(key, replication)| Some((key.clone(), replication.clone()?)))
                .collect()
        };
        if pending.is_empty() {
            return;
        }
        // Per leader's broker, the partitions that still need a target.
        let mut to_ask: HashMap<NodeId, Vec<(Partition, String)>> = HashMap::new();
        {
            let mut catch_up = self.catch_up.lock();
            for (key, replication) in &pending {
                let replica = replication.replica();
                let applied = replica.log().high_watermark();
                match replica.leader() {
                    Some(leader) if leader == me => {
                        catch_up.caught_up.insert(key.clone());
                    }
                    Some(leader) => match catch_up.targets.get(key) {
                        Some(target) if applied >= *target => {
                            catch_up.targets.remove(key);
                            catch_up.caught_up.insert(key.clone());
                        }
                        Some(_) => {}
                        None => to_ask
                            .entry(leader)
                            .or_default()
                            .push((key.clone(), replica.group().to_owned())),
                    },
                    None => {}
                }
            }
        }
        if to_ask.is_empty() {
            return;
        }
        let state = self.meta.state();
        for (leader, partitions) in to_ask {
            let Some(broker) = state.brokers.get(&leader) else {
                continue;
            };
            let Some(answer) = self.meta.ping(&broker.address, PING_WITHIN).await else {
                continue;
            };
            let mut catch_up = self.catch_up.lock();
            for (key, group) in partitions {
                if let Some(target) = answer.high_watermarks.get(&group) {
                    catch_up.targets.insert(key, *target);
                }
            }
        }
    }

    /// Forgets what was known of a topic's replicas (it was dropped here).
    pub(super) fn forget_catch_up(&self, topic: &str) {
        let mut catch_up = self.catch_up.lock();
        catch_up.caught_up.retain(|(t, _)| t != topic);
        catch_up.targets.retain(|(t, _), _| t != topic);
    }

    /// Forgets what was known of one replica (it left this broker).
    pub(super) fn forget_replica_catch_up(&self, topic: &str, partition: u32) {
        let key = (topic.to_owned(), partition);
        let mut catch_up = self.catch_up.lock();
        catch_up.caught_up.remove(&key);
        catch_up.targets.remove(&key);
    }
}

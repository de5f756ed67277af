//! Where a partition's requests go in a cluster: to the broker that leads
//! it, as the client learnt it from the brokers themselves (a broker that
//! does not lead a partition names the one that does in its refusal;
//! `DescribeCluster` names every partition's leader), over a connection per
//! broker made on first use.
//!
//! A broker alone leads all its partitions: nothing is ever learnt, and
//! every request goes to the broker the client connected to.
//!
//! Invariants: the lock is never held across an `.await`; a broker whose
//! connection failed leads nothing in the table until a broker names it
//! again, and is not picked while others are not known to be down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::client::{Client, without_scheme};
use crate::cluster::ClusterDescription;
use crate::error::ClientError;

/// How long a broker whose connection failed is passed over (named as a
/// leader or not: its peers name it until they notice it is gone).
const DOWN_FOR: Duration = Duration::from_secs(1);
/// How many groups' coordinators a client remembers.
const COORDINATORS_KEPT_MAX: usize = 10_000;

/// What the client knows of the cluster; shared by a client's clones.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    state: Mutex<Known>,
    /// Connections to other brokers than the one the client connected to.
    clients: tokio::sync::Mutex<HashMap<Arc<str>, Client>>,
}

#[derive(Debug, Default)]
struct Known {
    /// Each partition's leader's address.
    leaders: HashMap<(Arc<str>, u32), Arc<str>>,
    /// Every broker address heard of, in the order heard of.
    brokers: Vec<Arc<str>>,
    /// Brokers whose connection failed, and when.
    down: HashMap<Arc<str>, Instant>,
    /// The broker that coordinates each consumer group, when a cluster
    /// named one.
    coordinators: HashMap<String, Arc<str>>,
}

impl Known {
    fn is_down(&self, address: &str, now: Instant) -> bool {
        self.down
            .get(without_scheme(address))
            .is_some_and(|since| now.duration_since(*since) < DOWN_FOR)
    }

    fn hear_of(&mut self, address: &Arc<str>) {
        if !self.brokers.iter().any(|known| known == address) {
            self.brokers.push(address.clone());
        }
    }
}

impl Routing {
    /// Where requests for partition `key` (topic, index) go: its leader when known
    /// and not down, else the first broker not known to be down, starting
    /// with `bootstrap`.
    pub(crate) fn target(&self, key: &(Arc<str>, u32), bootstrap: &Arc<str>) -> Arc<str> {
        let now = Instant::now();
        let known = self.state.lock();
        if let Some(leader) = known.leaders.get(key)
            && !known.is_down(leader, now)
        {
            return leader.clone();
        }
        Self::any_up(&known, bootstrap, now)
    }

    /// A broker not known to be down, `bootstrap` first.
    pub(crate) fn any_broker(&self, bootstrap: &Arc<str>) -> Arc<str> {
        Self::any_up(&self.state.lock(), bootstrap, Instant::now())
    }

    fn any_up(known: &Known, bootstrap: &Arc<str>, now: Instant) -> Arc<str> {
        std::iter::once(bootstrap)
            .chain(known.brokers.iter())
            .find(|address| !known.is_down(address, now))
            .unwrap_or(bootstrap)
            .clone()
    }

    /// A broker named `leader` as the leader of `topic`/`partition`;
    /// whether it is taken: a broker whose connection failed a moment ago
    /// is not (its peers name it until their election).
    pub(crate) fn learn(&self, topic: &str, partition: u32, leader: &str) -> bool {
        let leader: Arc<str> = Arc::from(leader);
        let mut known = self.state.lock();
        known.hear_of(&leader);
        if known.is_down(&leader, Instant::now()) {
            return false;
        }
        known.leaders.insert((Arc::from(topic), partition), leader);
        true
    }

    /// What a broker said of the cluster: its brokers and every leader.
    pub(crate) fn learn_cluster(&self, cluster: &ClusterDescription) {
        if !cluster.clustered {
            return;
        }
        let addresses: HashMap<u64, Arc<str>> = cluster
            .brokers
            .iter()
            .map(|broker| (broker.id, Arc::from(broker.address.as_str())))
            .collect();
        let mut known = self.state.lock();
        for address in addresses.values() {
            known.hear_of(address);
        }
        let now = Instant::now();
        for partition in &cluster.partitions {
            if let Some(leader) = addresses.get(&partition.leader)
                && !known.is_down(leader, now)
            {
                known.leaders.insert(
                    (Arc::from(partition.topic.as_str()), partition.partition),
                    leader.clone(),
                );
            }
        }
    }

    /// The broker that coordinates `group`, when known and not down.
    pub(crate) fn coordinator(&self, group: &str) -> Option<Arc<str>> {
        let known = self.state.lock();
        known
            .coordinators
            .get(group)
            .filter(|address| !known.is_down(address, Instant::now()))
            .cloned()
    }

    /// The broker a cluster names as `group`'s coordinator (`None`: none
    /// is known, or there is no cluster).
    pub(crate) fn set_coordinator(&self, group: &str, coordinator: Option<Arc<str>>) {
        let mut known = self.state.lock();
        match coordinator {
            Some(address) => {
                known.hear_of(&address);
                // A client that goes through endless group names keeps
                // only the latest ones.
                if known.coordinators.len() >= COORDINATORS_KEPT_MAX {
                    known.coordinators.clear();
                }
                known.coordinators.insert(group.to_owned(), address);
            }
            None => {
                known.coordinators.remove(group);
            }
        }
    }

    /// The connection to `address` failed: it leads nothing until a broker
    /// names it again, and is passed over for a while.
    pub(crate) fn failed(&self, address: &Arc<str>) {
        let mut known = self.state.lock();
        known.hear_of(address);
        // The same broker may be known with and without a scheme (given by
        // the caller, named by a broker).
        let bare = without_scheme(address);
        known.down.insert(Arc::from(bare), Instant::now());
        known
            .leaders
            .retain(|_, leader| without_scheme(leader) != bare);
    }

    /// Every broker not known to be down, `bootstrap` first: those to ask
    /// about the cluster, in turn.
    pub(crate) fn brokers_up(&self, bootstrap: &Arc<str>) -> Vec<Arc<str>> {
        let known = self.state.lock();
        let now = Instant::now();
        let mut up: Vec<Arc<str>> = Vec::new();
        for address in std::iter::once(bootstrap).chain(known.brokers.iter()) {
            if !known.is_down(address, now)
                && !up
                    .iter()
                    .any(|seen| without_scheme(seen) == without_scheme(address))
            {
                up.push(address.clone());
            }
        }
        up
    }

    /// The client for the broker at `address`, connected on first use with
    /// `via`'s options.
    pub(crate) async fn client_at(
        &self,
        via: &Client,
        address: &Arc<str>,
    ) -> Result<Client, ClientError> {
        if let Some(client) = self.clients.lock().await.get(address) {
            return Ok(client.clone());
        }
        let client = Client::connect_with(address.to_string(), via.options.clone()).await?;
        self.clients
            .lock()
            .await
            .entry(address.clone())
            .or_insert(client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap() -> Arc<str> {
        Arc::from("b1:9420")
    }

    fn key(partition: u32) -> (Arc<str>, u32) {
        (Arc::from("t"), partition)
    }

    #[test]
    fn a_named_leader_is_where_the_partition_goes_until_it_fails() {
        let routing = Routing::default();
        assert_eq!(routing.target(&key(0), &bootstrap()), bootstrap());
        assert!(routing.learn("t", 0, "b2:9420"));
        assert_eq!(&*routing.target(&key(0), &bootstrap()), "b2:9420");
        // Other partitions still go to the broker connected to.
        assert_eq!(routing.target(&key(1), &bootstrap()), bootstrap());
        routing.failed(&Arc::from("b2:9420"));
        assert_eq!(routing.target(&key(0), &bootstrap()), bootstrap());
        // Its peers name it until their election: not taken meanwhile.
        assert!(!routing.learn("t", 0, "b2:9420"));
        assert_eq!(routing.target(&key(0), &bootstrap()), bootstrap());
    }

    #[test]
    fn with_the_broker_connected_to_down_another_known_one_is_asked() {
        let routing = Routing::default();
        assert!(routing.learn("t", 0, "b2:9420"));
        routing.failed(&bootstrap());
        assert_eq!(&*routing.any_broker(&bootstrap()), "b2:9420");
        assert_eq!(&*routing.target(&key(1), &bootstrap()), "b2:9420");
        // Every broker down: the one connected to, rather than none.
        routing.failed(&Arc::from("b2:9420"));
        assert_eq!(routing.any_broker(&bootstrap()), bootstrap());
    }
}

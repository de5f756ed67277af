//! Several real brokers in the calling process, forming one cluster on
//! loopback: for tests of what a cluster does (replication, failover, a
//! broker cut off from its peers) without starting processes.
//!
//! Each broker is an [`EmbeddedBroker`] with `node_id` and `peers` set, its
//! data in a directory of its own under one temporary directory, on a port
//! bound before any broker starts so that every broker can name every
//! other. Brokers call each other through a network the test controls
//! ([`EmbeddedCluster::isolate`]); clients reach them directly.

mod network;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_cluster::network::client::TcpConnector;
use brook_engine::ClusterConfig;
use brook_engine::config::BrokerConfig;
use tokio::net::TcpListener;

use crate::embedded::{EmbeddedBroker, PeerNetwork, StartError};
use crate::http::Readiness;
use crate::server::{PEER_CONNECT_TIMEOUT, ServeError};
use network::{FaultyConnector, Links};

/// How long [`EmbeddedClusterBuilder::start`] waits for every broker to
/// be ready.
const FORMING_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is checked while waiting.
const READY_POLL: Duration = Duration::from_millis(20);

/// Brokers of a cluster running in this process. Dropping it stops them
/// all; the temporary directory (if it made one) is removed.
#[derive(Debug)]
pub struct EmbeddedCluster {
    /// By node id: 1 to N.
    members: BTreeMap<u64, Member>,
    links: Arc<Links>,
    /// Held so the directories live as long as the brokers.
    _temp_dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
struct Member {
    addr: SocketAddr,
    config: BrokerConfig,
    peers: PeerNetwork,
    /// `None` while stopped.
    broker: Option<EmbeddedBroker>,
}

/// How to start an [`EmbeddedCluster`].
#[derive(Debug)]
pub struct EmbeddedClusterBuilder {
    brokers: u64,
    spares: u64,
    config: BrokerConfig,
    data_dir: Option<PathBuf>,
}

impl Default for EmbeddedClusterBuilder {
    fn default() -> Self {
        Self {
            brokers: 3,
            spares: 0,
            config: BrokerConfig::default(),
            data_dir: None,
        }
    }
}

impl EmbeddedClusterBuilder {
    /// How many brokers (3 unless told otherwise; at least 1).
    #[must_use]
    pub fn brokers(mut self, brokers: u64) -> Self {
        self.brokers = brokers.max(1);
        self
    }

    /// Brokers beyond the cluster's, not started: each gets its id (after
    /// the cluster's), port and directory, and joins the running cluster
    /// (`join`) once started with [`EmbeddedCluster::restart`] and added.
    #[must_use]
    pub fn spares(mut self, spares: u64) -> Self {
        self.spares = spares;
        self
    }

    /// Every broker starts from this configuration; its data directory,
    /// listen address and cluster settings are replaced.
    #[must_use]
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps broker N's data in `dir/N` (and leaves it there) instead of
    /// a temporary directory.
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Starts every broker and waits until each is ready (joined: its
    /// registration applied, so a topic created from then on can be
    /// placed on every broker).
    pub async fn start(self) -> Result<EmbeddedCluster, StartError> {
        let (root, temp_dir) = if let Some(dir) = self.data_dir {
            (dir, None)
        } else {
            let dir = tempfile::Builder::new()
                .prefix("brook-cluster-")
                .tempdir()
                .map_err(|source| StartError::Io {
                    what: "create a temporary data directory".to_owned(),
                    source,
                })?;
            (dir.path().to_owned(), Some(dir))
        };
        let mut listeners = BTreeMap::new();
        for id in 1..=self.brokers + self.spares {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|source| StartError::Io {
                    what: "bind a loopback port".to_owned(),
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| StartError::Io {
                what: "read the bound address".to_owned(),
                source,
            })?;
            listeners.insert(id, (addr, listener));
        }
        let everyone: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, (addr, _))| (*id, addr.to_string()))
            .collect();
        let brokers: Arc<HashMap<String, u64>> = Arc::new(
            everyone
                .iter()
                .map(|(id, address)| (address.clone(), *id))
                .collect(),
        );
        let founders: BTreeMap<u64, String> = everyone
            .iter()
            .filter(|(id, _)| **id <= self.brokers)
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        let links = Arc::new(Links::default());
        let mut members = BTreeMap::new();
        for (id, (addr, listener)) in listeners {
            let spare = id > self.brokers;
            let mut peers = founders.clone();
            peers.insert(id, addr.to_string());
            let mut config = self.config.clone();
            config.data_dir = root.join(id.to_string());
            config.cluster = Some(
                ClusterConfig::new(id, peers)
                    .map_err(StartError::Config)?
                    .joining(spare),
            );
            let peers = PeerNetwork(Arc::new(FaultyConnector {
                from: id,
                brokers: brokers.clone(),
                links: links.clone(),
                tcp: TcpConnector::plain(PEER_CONNECT_TIMEOUT),
            }));
            let broker = if spare {
                // Its port is free again until it starts.
                drop(listener);
                None
            } else {
                let broker = EmbeddedBroker::builder()
                    .config(config.clone())
                    .data_dir(config.data_dir.clone())
                    .listener(listener)
                    .peers(peers.clone())
                    .start()
                    .await?;
                Some(broker)
            };
            members.insert(
                id,
                Member {
                    addr,
                    config,
                    peers,
                    broker,
                },
            );
        }
        let cluster = EmbeddedCluster {
            members,
            links,
            _temp_dir: temp_dir,
        };
        cluster.wait_ready(FORMING_TIMEOUT).await?;
        Ok(cluster)
    }
}

impl EmbeddedCluster {
    /// Starts three brokers in a temporary directory.
    pub async fn start() -> Result<Self, StartError> {
        Self::builder().start().await
    }

    pub fn builder() -> EmbeddedClusterBuilder {
        EmbeddedClusterBuilder::default()
    }

    /// The brokers' node ids, 1 to N.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.keys().copied()
    }

    /// Broker `id`'s gRPC endpoint (`http://127.0.0.1:<port>`), whether
    /// it runs or not.
    pub fn endpoint(&self, id: u64) -> Option<String> {
        self.members
            .get(&id)
            .map(|member| format!("http://{}", member.addr))
    }

    /// Every broker's endpoint, by id: what a client bootstraps from.
    pub fn endpoints(&self) -> Vec<String> {
        self.ids().filter_map(|id| self.endpoint(id)).collect()
    }

    /// Broker `id`, unless it is stopped.
    pub fn broker(&self, id: u64) -> Option<&EmbeddedBroker> {
        self.members.get(&id)?.broker.as_ref()
    }

    /// Cuts broker `id` off from every other broker: its calls to them,
    /// and theirs to it, fail (connections made before included) until
    /// [`heal`](Self::heal). Clients still reach it.
    pub fn isolate(&self, id: u64) {
        self.links.isolate(id);
    }

    /// Lets broker `id` reach its peers again.
    pub fn heal(&self, id: u64) {
        self.links.heal(id);
    }

    /// Stops broker `id` gracefully (as SIGTERM would); its data stays.
    pub async fn stop(&mut self, id: u64) -> Result<(), ServeError> {
        match self.members.get_mut(&id).and_then(|m| m.broker.take()) {
            Some(broker) => broker.shutdown().await,
            None => Ok(()),
        }
    }

    /// Starts broker `id` again, on its address and from its data, or a
    /// spare for the first time (a no-op while it runs).
    pub async fn restart(&mut self, id: u64) -> Result<(), StartError> {
        let Some(member) = self.members.get_mut(&id) else {
            return Ok(());
        };
        if member.broker.is_some() {
            return Ok(());
        }
        let broker = EmbeddedBroker::builder()
            .config(member.config.clone())
            .data_dir(member.config.data_dir.clone())
            .listen(member.addr)
            .peers(member.peers.clone())
            .start()
            .await?;
        member.broker = Some(broker);
        Ok(())
    }

    /// Stops every broker gracefully.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.links.heal_all();
        let mut first_error = None;
        let ids: Vec<u64> = self.ids().collect();
        for id in ids {
            if let Err(e) = self.stop(id).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Waits until every running broker is ready: joined, its replicas
    /// caught up.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        for (id, member) in &self.members {
            let Some(broker) = &member.broker else {
                continue;
            };
            while broker.readiness() != Readiness::Ready {
                if Instant::now() >= deadline {
                    return Err(StartError::NotFormed {
                        timeout,
                        broker: *id,
                    });
                }
                tokio::time::sleep(READY_POLL).await;
            }
        }
        Ok(())
    }
}

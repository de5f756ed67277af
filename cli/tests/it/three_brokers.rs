//! Three `brook serve` processes on loopback forming a cluster, for the
//! tests that stop, kill and restart its brokers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use brook_client::{Client, ClientError, ClientOptions, ClusterDescription, TopicConfig};

use crate::common::{self, Server};

/// How long one step (a leader elected, a broker back) may take.
pub const STEP_LIMIT: Duration = Duration::from_secs(30);

pub struct Cluster {
    /// The brokers' data directories, removed when dropped.
    dir: tempfile::TempDir,
    addresses: Vec<String>,
    peers: String,
    /// Given to every broker besides its id and peers.
    flags: Vec<String>,
    /// How the harness's own clients connect.
    options: ClientOptions,
    /// Broker N at index N - 1; `None` while it is stopped.
    pub servers: Vec<Option<Server>>,
}

impl Cluster {
    /// Starts brokers 1 to 3 on free loopback ports.
    pub async fn start() -> Cluster {
        Self::start_with(Vec::new(), ClientOptions::default()).await
    }

    /// Starts brokers 1 to 3 with `flags` given to each, reached by the
    /// harness with `options`.
    pub async fn start_with(flags: Vec<String>, options: ClientOptions) -> Cluster {
        let ports = common::free_ports(3);
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers = (1..=3)
            .zip(&addresses)
            .map(|(id, address)| format!("{id}={address}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("a temporary directory"),
            addresses,
            peers,
            flags,
            options,
            servers: Vec::new(),
        };
        for id in 1..=3 {
            let server = cluster.start_broker(id).await;
            cluster.servers.push(Some(server));
        }
        cluster
    }

    /// Starts broker `id` on its files and its port.
    pub async fn start_broker(&self, id: u64) -> Server {
        let index = usize::try_from(id - 1).expect("a small id");
        Server::start_listening(
            &self.dir.path().join(format!("broker-{id}")),
            &self.addresses[index],
            &[
                &["--node-id", &id.to_string(), "--peers", &self.peers][..],
                &self.flags.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
            Stdio::null(),
        )
        .await
    }

    /// A client of broker `id`, with the harness's options.
    pub async fn connect(&self, id: u64) -> Result<Client, ClientError> {
        Client::connect_with(self.address(id), self.options.clone()).await
    }

    /// Broker `id`'s gRPC address.
    pub fn address(&self, id: u64) -> &str {
        &self.addresses[usize::try_from(id - 1).expect("a small id")]
    }

    /// What a running broker says of the cluster.
    pub async fn describe(&self) -> Option<ClusterDescription> {
        for (id, server) in (1..).zip(&self.servers) {
            if server.is_none() {
                continue;
            }
            if let Ok(client) = self.connect(id).await
                && let Ok(cluster) = client.describe_cluster().await
            {
                return Some(cluster);
            }
        }
        None
    }

    /// Waits until a running broker says partition 0 of `topic` has a live
    /// leader and every replica in `caught_up` has its records.
    pub async fn leader(&self, topic: &str, caught_up: &[u64]) -> u64 {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            if let Some(cluster) = self.describe().await
                && let Some(partition) = cluster.partitions.iter().find(|p| p.topic == topic)
                && cluster
                    .brokers
                    .iter()
                    .any(|b| b.id == partition.leader && b.alive)
                && caught_up.iter().all(|id| partition.lag.get(id) == Some(&0))
            {
                return partition.leader;
            }
            assert!(Instant::now() < deadline, "no leader within {STEP_LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Creates `topic` (one partition, three replicas), retried until the
/// brokers have elected a metadata leader and all registered.
pub async fn create_replicated_topic(client: &Client, topic: &str) {
    let deadline = Instant::now() + STEP_LIMIT;
    while let Err(e) = client
        .create_replicated_topic(topic, 1, Some(3), TopicConfig::default())
        .await
    {
        assert!(Instant::now() < deadline, "create the topic: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

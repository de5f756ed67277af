//! `brook cluster`: the brokers of the cluster, which answer, and who
//! leads each partition, as the broker asked sees it (`status`); brokers
//! added and removed.

use std::time::{Duration, Instant};

use anyhow::bail;
use brook_client::Client;
use clap::Subcommand;
use serde_json::json;

use crate::table::table;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The brokers (id, address, alive), the metadata group's leader, and
    /// per partition its leader, replicas and how far each replica is
    /// behind.
    Status {
        /// One JSON object: `brokers: [{id, address, alive}]`,
        /// `partitions: [{topic, partition, leader, replicas, lag}]`,
        /// `metadata_leader`, `answered_by`, `clustered`.
        #[arg(long)]
        json: bool,
    },
    /// Add a broker started with `--join` to the cluster; returns once it
    /// votes in the metadata group. New topics are placed on it from then
    /// on; move existing partitions with `brook topic reassign`.
    AddBroker {
        /// The new broker's id.
        #[arg(long)]
        node_id: u64,
        /// Its gRPC address (HOST:PORT), where the other brokers reach it.
        #[arg(long)]
        address: String,
    },
    /// Remove a broker from the cluster. It must hold no replica: move its
    /// partitions first with `brook topic reassign`, or give
    /// `--move-partitions`.
    RemoveBroker {
        /// The broker's id.
        node_id: u64,
        /// First move every replica it holds to the other live brokers
        /// (each to the one holding the fewest replicas, not already
        /// holding that partition), and wait until they are there.
        #[arg(long)]
        move_partitions: bool,
        /// How long to wait for the moves, in seconds.
        #[arg(long, default_value_t = 600, requires = "move_partitions")]
        timeout_s: u64,
    },
}

pub async fn run(client: &Client, command: ClusterCommand) -> anyhow::Result<()> {
    let json = match command {
        ClusterCommand::Status { json } => json,
        ClusterCommand::AddBroker { node_id, address } => {
            client.add_broker(node_id, &address).await?;
            println!("added broker {node_id} at {address}");
            return Ok(());
        }
        ClusterCommand::RemoveBroker {
            node_id,
            move_partitions,
            timeout_s,
        } => {
            if move_partitions {
                crate::drain::remove_after_moving(client, node_id, Duration::from_secs(timeout_s))
                    .await?;
            } else {
                client.remove_broker(node_id).await?;
            }
            println!("removed broker {node_id}");
            return Ok(());
        }
    };
    let cluster = client.describe_cluster().await?;
    if json {
        let brokers: Vec<_> = cluster
            .brokers
            .iter()
            .map(|b| json!({"id": b.id, "address": b.address, "alive": b.alive}))
            .collect();
        let partitions: Vec<_> = cluster
            .partitions
            .iter()
            .map(|p| {
                let lag: serde_json::Map<String, serde_json::Value> = p
                    .lag
                    .iter()
                    .map(|(id, records)| (id.to_string(), json!(records)))
                    .collect();
                json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "lag": lag,
                    "moving_to": p.moving_to,
                })
            })
            .collect();
        let object = json!({
            "answered_by": cluster.answered_by,
            "clustered": cluster.clustered,
            "metadata_leader": cluster.metadata_leader,
            "metadata_term": cluster.metadata_term,
            "brokers": brokers,
            "partitions": partitions,
        });
        println!("{object}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = cluster
        .brokers
        .iter()
        .map(|b| {
            let role = if cluster.metadata_leader == Some(b.id) {
                "metadata leader"
            } else {
                "-"
            };
            vec![
                b.id.to_string(),
                b.address.clone(),
                if b.alive { "yes" } else { "no" }.to_owned(),
                role.to_owned(),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "ADDRESS", "ALIVE", "ROLE"], &rows));
    if !cluster.partitions.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = cluster
            .partitions
            .iter()
            .map(|p| {
                let lag = p
                    .lag
                    .iter()
                    .map(|(id, records)| format!("{id}:{records}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let replicas = ids(&p.replicas);
                let moving_to = if p.moving_to.is_empty() {
                    "-".to_owned()
                } else {
                    ids(&p.moving_to)
                };
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.leader.to_string(),
                    replicas,
                    lag,
                    moving_to,
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "LEADER",
                    "REPLICAS",
                    "LAG",
                    "MOVING TO"
                ],
                &rows
            )
        );
    }
    Ok(())
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Waits until each partition of `topic` in `targets` has its target
/// replicas and no move under way.
pub async fn wait_until_moved(
    client: &Client,
    topic: &str,
    targets: &[(u32, Vec<u64>)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let cluster = client.describe_cluster().await?;
        let moved = targets.iter().all(|(partition, replicas)| {
            cluster.partitions.iter().any(|p| {
                p.topic == topic
                    && p.partition == *partition
                    && p.replicas == *replicas
                    && p.moving_to.is_empty()
            })
        });
        if moved {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the partitions of {topic} did not reach their new replicas within {} s (see `brook cluster status`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

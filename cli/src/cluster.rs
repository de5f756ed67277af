//! `brook cluster status`: the brokers of the cluster, which answer, and
//! who leads each partition, as the broker asked sees it.

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
}

pub async fn run(client: &Client, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status { json } = command;
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
                let replicas = p
                    .replicas
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.leader.to_string(),
                    replicas,
                    lag,
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["TOPIC", "PARTITION", "LEADER", "REPLICAS", "LAG"], &rows)
        );
    }
    Ok(())
}

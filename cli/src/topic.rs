//! `brook topic`: create, alter, grow, move, list, describe and delete topics
//! through a running broker (and recover a quarantined one offline, `recover.rs`);
//! results as aligned tables on stdout.

use brook_client::{Client, RecordValidation, TopicConfig, TopicDescription};
use clap::Subcommand;

use crate::table::table;

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// How many partitions the topic has.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// In a cluster: how many brokers hold each partition (default:
        /// 3, or every broker when there are fewer).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replication_factor: Option<u32>,
        #[command(flatten)]
        settings: TopicSettingArgs,
    },
    /// Change a topic's settings; those not given stay as they are.
    Alter {
        name: String,
        #[command(flatten)]
        settings: TopicSettingArgs,
        /// Roll to a new segment once the active one is this old.
        #[arg(long)]
        segment_ms: Option<i64>,
    },
    /// Grow a topic to this many partitions. Records stay where they are:
    /// keyed records map to other partitions from then on.
    AddPartitions {
        name: String,
        /// The topic's new partition count, more than it has.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
    },
    /// In a cluster: move partitions to other brokers. The partition's
    /// leader adds the new replicas, waits until they have caught up, and
    /// drops the old ones; produces go on meanwhile.
    Reassign {
        name: String,
        /// A partition to move; repeatable.
        #[arg(long = "partition", required = true)]
        partitions: Vec<u32>,
        /// The brokers the partitions are to be on, by id, the first the
        /// preferred leader.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
        /// Wait until the partitions are on their new replicas.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// List the topics and their partition counts.
    List,
    /// Show a topic's settings and each partition's offsets and size.
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete { name: String },
    /// Bring back a topic the broker quarantined; offline, broker stopped.
    ///
    /// A topic directory the broker found without metadata at start was
    /// moved to `<data dir>/quarantine/`. This re-creates the topic's
    /// metadata (partitions counted from its directories, default
    /// settings) and moves the directory back. Unlike the other `topic`
    /// commands it works on the data directory, not through a broker: stop
    /// the broker first (a running one keeps the metadata locked).
    Recover(crate::recover::RecoverArgs),
}

/// The settings `topic create` and `topic alter` both take.
#[derive(Debug, clap::Args)]
pub struct TopicSettingArgs {
    /// Delete segments whose newest record is older than this; -1 keeps forever.
    #[arg(long, allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition holds more; -1 keeps everything.
    #[arg(long, allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Roll to a new segment at this size.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// The largest record batch the topic accepts.
    #[arg(long)]
    max_message_bytes: Option<u32>,
    /// How much of a produced batch's records the broker checks: full
    /// (decompresses compressed batches) or framing (does not).
    #[arg(long)]
    validate_records: Option<RecordValidation>,
}

impl TopicSettingArgs {
    fn config(self, segment_ms: Option<i64>) -> TopicConfig {
        TopicConfig::default()
            .with_retention_ms(self.retention_ms)
            .with_retention_bytes(self.retention_bytes)
            .with_segment_bytes(self.segment_bytes)
            .with_segment_ms(segment_ms)
            .with_max_message_bytes(self.max_message_bytes)
            .with_validate_records(self.validate_records)
    }
}

pub async fn run(client: &Client, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            settings,
        } => {
            let config = settings.config(None);
            let topic = client
                .create_replicated_topic(&name, partitions, replication_factor, config)
                .await?;
            println!(
                "created topic {} with {} partitions",
                topic.name,
                topic.partitions.len()
            );
        }
        TopicCommand::Alter {
            name,
            settings,
            segment_ms,
        } => {
            let config = settings.config(segment_ms);
            if config == TopicConfig::default() {
                anyhow::bail!(
                    "give at least one setting to change (--retention-ms, --retention-bytes, --segment-bytes, --segment-ms, --max-message-bytes, --validate-records)"
                );
            }
            print!(
                "{}",
                describe(&client.alter_topic_config(&name, config).await?)
            );
        }
        TopicCommand::AddPartitions { name, partitions } => {
            let topic = client.add_partitions(&name, partitions).await?;
            println!(
                "topic {} has {} partitions",
                topic.name,
                topic.partitions.len()
            );
        }
        TopicCommand::Reassign {
            name,
            partitions,
            replicas,
            wait,
            timeout_s,
        } => {
            let targets: Vec<(u32, Vec<u64>)> = partitions
                .iter()
                .map(|partition| (*partition, replicas.clone()))
                .collect();
            client.reassign_partitions(&name, &targets).await?;
            println!("moving {name} partitions {partitions:?} to brokers {replicas:?}");
            if wait {
                crate::cluster::wait_until_moved(
                    client,
                    &name,
                    &targets,
                    std::time::Duration::from_secs(timeout_s),
                )
                .await?;
                println!("moved");
            }
        }
        TopicCommand::List => {
            let rows: Vec<Vec<String>> = client
                .list_topics()
                .await?
                .into_iter()
                .map(|t| vec![t.name, t.partitions.to_string()])
                .collect();
            print!("{}", table(&["TOPIC", "PARTITIONS"], &rows));
        }
        TopicCommand::Describe { name } => {
            print!("{}", describe(&client.describe_topic(&name).await?));
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::Recover(_) => {
            unreachable!("`main` runs `topic recover` without a broker connection")
        }
    }
    Ok(())
}

fn describe(topic: &TopicDescription) -> String {
    let c = &topic.config;
    let mut out = format!(
        "topic {}\nretention_ms={} retention_bytes={} segment_bytes={} segment_ms={} max_message_bytes={} validate_records={}\n\n",
        topic.name,
        c.retention_ms,
        c.retention_bytes,
        c.segment_bytes,
        c.segment_ms,
        c.max_message_bytes,
        c.validate_records.map_or("unknown", RecordValidation::name)
    );
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.start_offset.to_string(),
                p.end_offset.to_string(),
                p.size_bytes.to_string(),
                p.segments.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["PARTITION", "START", "END", "BYTES", "SEGMENTS"],
        &rows,
    ));
    out
}

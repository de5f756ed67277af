//! `brook bench produce`: drives a broker (a running one, or one started in
//! this process on a temporary directory) and prints throughput and
//! acknowledgement latency.

use anyhow::Context as _;
use brook_bench::{ProduceOptions, produce};
use brook_broker::EmbeddedBroker;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as they are acknowledged.
    Produce(ProduceArgs),
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Records to produce.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Partitions of the bench topic (created if missing).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
    /// Produce requests in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// The topic to produce to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Start a broker in this process on a temporary directory instead of
    /// using `--broker`.
    #[arg(long)]
    embedded: bool,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub async fn run(broker: &str, command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Produce(args) = command;
    let options = ProduceOptions {
        topic: args.topic,
        partitions: args.partitions,
        records: args.records,
        record_size: args.record_size,
        batch_records: args.batch_records,
        in_flight: args.in_flight,
    };
    let embedded = if args.embedded {
        Some(
            EmbeddedBroker::start()
                .await
                .context("start an embedded broker")?,
        )
    } else {
        None
    };
    let endpoint = embedded
        .as_ref()
        .map_or_else(|| endpoint_of(broker), EmbeddedBroker::endpoint);
    let report = produce(&endpoint, &options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    if let Some(embedded) = embedded {
        embedded.shutdown().await?;
    }
    Ok(())
}

fn endpoint_of(broker: &str) -> String {
    if broker.contains("://") {
        broker.to_owned()
    } else {
        format!("http://{broker}")
    }
}

//! `brook bench produce | consume | e2e`: drives a broker (a running one,
//! or one started in this process on a temporary directory) through the
//! real client and prints throughput and latency percentiles. The
//! workloads themselves live in `brook-bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use brook_bench::{Amount, BrokerTarget, Mode, Workload};
use brook_broker::FsyncPolicy;
use brook_client::Compression;
use clap::{Args, Subcommand};

use crate::connection::ConnectArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records and measure acknowledgements (send → ack latency).
    Produce(BenchArgs),
    /// Fill a topic (or use what it holds), then measure reading it back.
    Consume(BenchArgs),
    /// Produce and consume at once; latency is send → receive.
    E2e(BenchArgs),
}

#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct BenchArgs {
    /// Records to produce (in total, over all producers).
    #[arg(long, conflicts_with = "duration")]
    records: Option<u64>,
    /// Produce for this many seconds instead of a count of records.
    #[arg(long)]
    duration: Option<f64>,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Concurrent consumers (consume, e2e), sharing the partitions.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Partitions of the bench topic (created if missing).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Give records one of 10,000 keys (the key picks the partition).
    #[arg(long)]
    keyed: bool,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = brook_client::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Producer linger in milliseconds [default: 5, and 0 for e2e].
    #[arg(long)]
    linger_ms: Option<f64>,
    /// Produce requests in flight per producer.
    #[arg(long, default_value_t = brook_client::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Batch compression: none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Records per second over all producers; latency then counts from each
    /// record's intended send time [default: as fast as acknowledged, and
    /// 10000 for e2e].
    #[arg(long)]
    rate: Option<f64>,
    /// Produce over the raw pipelined stream instead of the client's
    /// Producer: the broker's own ceiling.
    #[arg(long)]
    raw: bool,
    /// Consume: read what the topic holds instead of filling it first.
    #[arg(long)]
    existing: bool,
    /// Consumer fetch size in bytes.
    #[arg(long, default_value_t = brook_record::protocol::FETCH_BYTES_DEFAULT)]
    fetch_bytes: u32,
    /// Write this many bytes to another topic first (data already retained).
    #[arg(long, default_value_t = 0)]
    retained_bytes: u64,
    /// The topic to use.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Start a broker in this process (on a temporary directory unless
    /// `--data-dir`) instead of using `--broker`.
    #[arg(long)]
    embedded: bool,
    /// The embedded broker's fsync policy: always, never or interval:<ms>.
    #[arg(long, default_value = "always", requires = "embedded")]
    fsync: FsyncPolicy,
    /// The embedded broker's data directory (kept afterwards).
    #[arg(long, requires = "embedded")]
    data_dir: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

pub async fn run(connect: &ConnectArgs, command: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match command {
        BenchCommand::Produce(args) => (Mode::Produce, args),
        BenchCommand::Consume(args) => (Mode::Consume, args),
        BenchCommand::E2e(args) => (Mode::E2e, args),
    };
    let workload = workload(mode, &args)?;
    let target = if args.embedded {
        BrokerTarget::Embedded {
            fsync: args.fsync,
            data_dir: args.data_dir.clone(),
        }
    } else {
        BrokerTarget::Remote(connect.reachable_broker().await?)
    };
    let options = connect.options()?;
    if args.embedded && options.tls.is_some() {
        bail!("--embedded starts a plaintext broker: leave out the TLS flags");
    }
    let running = target.start().await?;
    let connection = running.connection(options);
    let report = brook_bench::run(mode, &connection, &running.fsync, &workload).await;
    running.stop().await?;
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

fn workload(mode: Mode, args: &BenchArgs) -> anyhow::Result<Workload> {
    let amount = match (args.records, args.duration) {
        (_, Some(seconds)) if seconds.is_finite() && seconds > 0.0 => {
            Amount::Duration(Duration::from_secs_f64(seconds))
        }
        (_, Some(seconds)) => {
            bail!("--duration must be a positive number of seconds, not {seconds}")
        }
        (Some(records), None) => Amount::Records(records),
        (None, None) if mode == Mode::E2e => Amount::Records(100_000),
        (None, None) => Amount::Records(1_000_000),
    };
    let linger_ms = args
        .linger_ms
        .unwrap_or(if mode == Mode::E2e { 0.0 } else { 5.0 });
    if !(linger_ms.is_finite() && linger_ms >= 0.0) {
        bail!("--linger-ms must be a non-negative number");
    }
    let rate = args
        .rate
        .or_else(|| (mode == Mode::E2e).then_some(10_000.0));
    Ok(Workload {
        topic: args.topic.clone(),
        partitions: args.partitions,
        amount,
        record_size: args.record_size,
        producers: args.producers,
        consumers: args.consumers,
        keyed: args.keyed,
        batch_size: args.batch_size,
        linger: Duration::from_secs_f64(linger_ms / 1e3),
        max_in_flight: args.max_in_flight,
        compression: args.compression,
        rate,
        raw: args.raw,
        existing: args.existing,
        fetch_bytes: args.fetch_bytes,
        retained_bytes: args.retained_bytes,
    })
}

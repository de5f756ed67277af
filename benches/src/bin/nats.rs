//! `brook-bench-nats`: the same workloads against NATS JetStream and
//! against an embedded Brook, in one run, printed side by side with the
//! ratio. `benches/compare-nats.sh` starts the NATS server and runs this.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use brook_bench::report::Figures;
use brook_bench::{Amount, BrokerTarget, Mode, Report, Workload, nats};
use brook_broker::FsyncPolicy;
use clap::Parser;
use tokio::runtime::Handle;

#[derive(Debug, Parser)]
#[command(about = "Brook vs NATS JetStream: publish throughput and e2e latency")]
struct Args {
    /// The NATS server (with JetStream enabled).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Records of the 100 B throughput run.
    #[arg(long, default_value_t = 500_000)]
    small_records: u64,
    /// Records of the 1 KiB throughput run.
    #[arg(long, default_value_t = 200_000)]
    large_records: u64,
    /// Records of the e2e latency run.
    #[arg(long, default_value_t = 50_000)]
    e2e_records: u64,
    /// Rate of the e2e latency run, records/s.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// NATS publish acknowledgements outstanding at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Partitions of Brook's topic (NATS's stream is one ordered log).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Runs of each figure; the median is shown.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// One row of the table: a workload's figure for each system.
struct Row {
    what: String,
    nats: f64,
    brook: f64,
    unit: &'static str,
    /// Whether more is better (throughput) or less (latency).
    higher_is_better: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for (size, records) in [(100usize, args.small_records), (1024, args.large_records)] {
        let mut nats_runs = Vec::new();
        let mut brook_runs = Vec::new();
        for _ in 0..args.runs {
            nats_runs.push(nats_publish(&args, records, size).await?);
            brook_runs.push(brook(&args, Mode::Produce, records, size, None).await?);
        }
        rows.push(Row {
            what: format!("publish {size} B, records/s"),
            nats: median(nats_runs.iter().map(|f| f.records as f64 / f.seconds)),
            brook: median(brook_runs.iter().map(|r| r.records_per_sec)),
            unit: "rec/s",
            higher_is_better: true,
        });
        rows.push(Row {
            what: format!("publish {size} B, MB/s"),
            nats: median(nats_runs.iter().map(|f| f.bytes as f64 / f.seconds / 1e6)),
            brook: median(brook_runs.iter().map(|r| r.mb_per_sec)),
            unit: "MB/s",
            higher_is_better: true,
        });
    }
    let mut nats_runs = Vec::new();
    let mut brook_runs = Vec::new();
    for _ in 0..args.runs {
        nats_runs.push(nats::e2e(&args.nats, args.e2e_records, 100, args.window, args.rate).await?);
        brook_runs.push(brook(&args, Mode::E2e, args.e2e_records, 100, Some(args.rate)).await?);
    }
    for (name, quantile, pick) in [
        (
            "p50",
            0.5,
            (|r: &Report| r.p50_ms) as fn(&Report) -> Option<f64>,
        ),
        ("p99", 0.99, |r: &Report| r.p99_ms),
        ("p99.9", 0.999, |r: &Report| r.p999_ms),
    ] {
        rows.push(Row {
            what: format!("e2e {name} at {:.0}/s, ms", args.rate),
            nats: median(
                nats_runs
                    .iter()
                    .map(|f| f.latencies.value_at_quantile(quantile) as f64 / 1000.0),
            ),
            brook: median(brook_runs.iter().filter_map(pick)),
            unit: "ms",
            higher_is_better: false,
        });
    }
    print_table(&args, &rows);
    Ok(())
}

async fn nats_publish(args: &Args, records: u64, size: usize) -> anyhow::Result<Figures> {
    let js = nats::fresh_stream(&args.nats).await?;
    let runtime = Handle::current();
    let window = args.window;
    tokio::task::spawn_blocking(move || {
        nats::publish(&runtime, &js, records, size, window, None, Instant::now())
    })
    .await
    .context("the publisher thread")?
}

async fn brook(
    args: &Args,
    mode: Mode,
    records: u64,
    size: usize,
    rate: Option<f64>,
) -> anyhow::Result<Report> {
    let target = BrokerTarget::Embedded {
        fsync: FsyncPolicy::Always,
        data_dir: None,
    };
    let running = target.start().await?;
    let workload = Workload {
        partitions: args.partitions,
        amount: Amount::Records(records),
        record_size: size,
        rate,
        linger: if mode == Mode::E2e {
            Duration::ZERO
        } else {
            brook_client::DEFAULT_LINGER
        },
        ..Workload::default()
    };
    let report = brook_bench::run(
        mode,
        &running.connection(brook_client::ClientOptions::default()),
        &running.fsync,
        &workload,
    )
    .await;
    running.stop().await?;
    report
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_table(args: &Args, rows: &[Row]) {
    println!(
        "Brook (embedded, fsync always: acknowledged AFTER fsync, {} partition(s), brook_client::Producer)",
        args.partitions
    );
    println!(
        "vs NATS JetStream (file storage, defaults: acknowledged BEFORE fsync, async publish, window {})",
        args.window
    );
    println!("median of {} runs each; one producer; loopback", args.runs);
    println!();
    println!(
        "{:<28} {:>14} {:>14} {:>12}",
        "figure", "NATS", "Brook", "Brook/NATS"
    );
    for row in rows {
        let ratio = row.brook / row.nats;
        let better = if (ratio >= 1.0) == row.higher_is_better {
            "Brook better"
        } else {
            "NATS better"
        };
        println!(
            "{:<28} {:>14} {:>14} {:>11.2}x  ({better})",
            row.what,
            format_figure(row.nats, row.unit),
            format_figure(row.brook, row.unit),
            ratio
        );
    }
}

fn format_figure(value: f64, unit: &str) -> String {
    match unit {
        "rec/s" => format!("{value:.0}"),
        "ms" => format!("{value:.3}"),
        _ => format!("{value:.1}"),
    }
}

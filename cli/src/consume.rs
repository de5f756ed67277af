//! `brook consume`: prints record values, one per line, reading all of a
//! topic's partitions (or one) with long-poll fetches that cover every
//! partition at once.

use std::io;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_client::{Client, FetchOptions, FetchTarget, OffsetSpec};
use clap::Args;
use tokio::time::Instant;

/// Longest long-poll of one fetch; bounds how late Ctrl-C or the idle
/// timeout is noticed only in the worst case, as both also end a wait.
const POLL_WAIT_MAX: Duration = Duration::from_secs(5);
/// Bytes of records per fetch.
const FETCH_BYTES_MAX: u32 = 4 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,

    /// Start at each partition's first retained record instead of its end.
    #[arg(long)]
    from_beginning: bool,

    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,

    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Stop after this long without a new record (default: run until Ctrl-C).
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
}

pub async fn run(client: &Client, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut targets = targets(client, &args).await?;
    let idle_timeout = args.idle_timeout_ms.map(Duration::from_millis);
    let mut remaining = args.count;
    let mut out = io::BufWriter::new(io::stdout());
    let mut last_record = Instant::now();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());

    while remaining != Some(0) {
        let wait = match idle_timeout {
            Some(idle) => {
                let left = idle.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(POLL_WAIT_MAX)
            }
            None => POLL_WAIT_MAX,
        };
        let options = FetchOptions {
            max_bytes: FETCH_BYTES_MAX,
            max_wait: wait,
        };
        let fetched = tokio::select! {
            fetched = client.fetch_many(&targets, options) => fetched?,
            signal = &mut interrupted => {
                signal.context("listen for Ctrl-C")?;
                break;
            }
        };
        let mut printed_any = false;
        'partitions: for (target, fetched) in targets.iter_mut().zip(fetched) {
            target.offset = fetched.result.next_offset;
            for record in fetched.result.records {
                if remaining == Some(0) {
                    break 'partitions;
                }
                let value = record.value.unwrap_or_default();
                if !write_line(&mut out, &String::from_utf8_lossy(&value))? {
                    return Ok(());
                }
                remaining = remaining.map(|n| n - 1);
                printed_any = true;
            }
        }
        if printed_any {
            last_record = Instant::now();
            if !flush(&mut out)? {
                return Ok(());
            }
        }
        // The broker fills a response in request order; rotating shares it.
        targets.rotate_left(1);
    }
    flush(&mut out)?;
    Ok(())
}

/// Each partition to read, at its starting offset.
async fn targets(client: &Client, args: &ConsumeArgs) -> anyhow::Result<Vec<FetchTarget>> {
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => {
            ensure!(
                p < partitions,
                "topic {} has {partitions} partitions, no partition {p}",
                args.topic
            );
            vec![p]
        }
        None => (0..partitions).collect(),
    };
    let spec = if args.from_beginning {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    let mut targets = Vec::with_capacity(partitions.len());
    for partition in partitions {
        targets.push(FetchTarget {
            topic: args.topic.clone(),
            partition,
            offset: client.list_offsets(&args.topic, partition, spec).await?,
        });
    }
    Ok(targets)
}

/// Writes one line; false once the reader of stdout went away (`| head`).
fn write_line(out: &mut impl io::Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("write to stdout"),
    }
}

fn flush(out: &mut impl io::Write) -> anyhow::Result<bool> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("write to stdout"),
    }
}

//! `brook consume`: prints record values, one per line, reading all of a
//! topic's partitions (or one) with long-poll fetches that cover every
//! partition at once; or, with `--group`, the partitions the group gives
//! this member, committing what was printed (at least once: a record is
//! committed only after its line was written out). With
//! `--skip-undecodable`, a batch whose records do not decode is skipped,
//! named on stderr, and (with a group) committed past like a printed one.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_client::{
    Client, FetchOptions, FetchTarget, GroupClient, GroupConfig, GroupConsumer, OffsetReset,
    OffsetSpec, PartitionOffset, SkippedBatch, UndecodablePolicy,
};
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
    #[arg(long, conflicts_with = "group")]
    partition: Option<u32>,

    /// Consume as a member of this consumer group: the group's members
    /// share the partitions, and what is printed is committed. Without
    /// `--from-beginning`, partitions the group never committed start at
    /// their end.
    #[arg(long, value_name = "G")]
    group: Option<String>,

    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Stop after this long without a new record (default: run until Ctrl-C).
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,

    /// Skip a batch whose records do not decode instead of failing on it:
    /// its offset range is printed to stderr and consuming goes on (with
    /// `--group`, the commit moves past it). A batch whose header is
    /// damaged too still fails.
    #[arg(long)]
    skip_undecodable: bool,
}

impl ConsumeArgs {
    fn undecodable(&self) -> UndecodablePolicy {
        if self.skip_undecodable {
            UndecodablePolicy::Skip
        } else {
            UndecodablePolicy::Stop
        }
    }
}

pub async fn run(client: &GroupClient, args: ConsumeArgs) -> anyhow::Result<()> {
    match args.group.clone() {
        Some(group) => run_group(client, group, &args).await,
        None => run_partitions(client.client(), &args).await,
    }
}

async fn run_partitions(client: &Client, args: &ConsumeArgs) -> anyhow::Result<()> {
    let mut targets = targets(client, args).await?;
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
        let options = FetchOptions::default()
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_max_wait(wait)
            .with_undecodable(args.undecodable());
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
            if let Some(skipped) = &fetched.result.skipped {
                report_skipped(skipped);
            }
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

/// Consumes as a group member until `--count`, the idle timeout or Ctrl-C;
/// commits the printed records whenever no record is ready and at the end,
/// each time after flushing stdout. Leaves the group on the way out.
async fn run_group(client: &GroupClient, group: String, args: &ConsumeArgs) -> anyhow::Result<()> {
    let config = GroupConfig::new(group.clone(), [args.topic.clone()])
        .with_client_id("brook-cli".to_owned())
        .with_auto_offset_reset(if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        })
        .with_undecodable(args.undecodable());
    let mut printed = Printed::default();
    let skipped = printed.skipped.clone();
    let mut member = GroupConsumer::join(client.clone(), config)
        .await
        .with_context(|| format!("join group {group}"))?
        // Called as the stream passes the batch: the records before it were
        // handed out, so printed, already.
        .on_skipped(move |batch| {
            report_skipped(batch);
            let mut skipped = skipped.lock().unwrap_or_else(PoisonError::into_inner);
            let next = skipped
                .entry((batch.topic.clone(), batch.partition))
                .or_default();
            *next = (*next).max(batch.last_offset + 1);
        });
    let idle_timeout = args.idle_timeout_ms.map(Duration::from_millis);
    let mut remaining = args.count;
    let mut out = io::BufWriter::new(io::stdout());
    let mut last_record = Instant::now();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let result = loop {
        if remaining == Some(0) {
            break Ok(());
        }
        // A zero timeout polls once: a record already fetched comes at once.
        let item = if let Ok(item) = tokio::time::timeout(Duration::ZERO, member.recv()).await {
            item
        } else {
            // Nothing ready: a good moment to make what was printed durable.
            if !flush(&mut out)? {
                break Ok(());
            }
            printed.commit(&member).await?;
            let idle = idle_timeout.map(|idle| idle.saturating_sub(last_record.elapsed()));
            if idle.is_some_and(|left| left.is_zero()) {
                break Ok(());
            }
            let sleep = tokio::time::sleep(idle.unwrap_or(Duration::MAX));
            tokio::select! {
                item = member.recv() => item,
                () = sleep, if idle.is_some() => break Ok(()),
                signal = &mut interrupted => {
                    signal.context("listen for Ctrl-C")?;
                    break Ok(());
                }
            }
        };
        match item {
            Some(Ok(consumed)) => {
                let value = consumed.record.value.unwrap_or_default();
                if !write_line(&mut out, &String::from_utf8_lossy(&value))? {
                    // The reader went away: what it did not read stays uncommitted.
                    member.close().await?;
                    return Ok(());
                }
                printed.add(consumed.topic, consumed.partition, consumed.record.offset);
                remaining = remaining.map(|n| n - 1);
                last_record = Instant::now();
            }
            Some(Err(error)) => break Err(anyhow::Error::new(error).context("consume")),
            None => break Ok(()),
        }
    };
    if flush(&mut out)? {
        printed.commit(&member).await?;
    }
    member.close().await?;
    result
}

/// The next offset to commit, per topic and partition.
type NextOffsets = BTreeMap<(Arc<str>, u32), i64>;

/// Offsets printed (or skipped) and not yet committed, per partition.
#[derive(Default)]
struct Printed {
    next: NextOffsets,
    /// The offsets after batches skipped, from the member's callback.
    skipped: Arc<Mutex<NextOffsets>>,
}

impl Printed {
    fn add(&mut self, topic: Arc<str>, partition: u32, offset: i64) {
        self.advance(topic, partition, offset + 1);
    }

    fn advance(&mut self, topic: Arc<str>, partition: u32, next: i64) {
        let at = self.next.entry((topic, partition)).or_default();
        *at = (*at).max(next);
    }

    /// Commits them. A partition the group moved meanwhile is not an
    /// error: its new owner prints its records again from the last commit.
    async fn commit(&mut self, member: &GroupConsumer) -> anyhow::Result<()> {
        let skipped =
            std::mem::take(&mut *self.skipped.lock().unwrap_or_else(PoisonError::into_inner));
        for ((topic, partition), next) in skipped {
            self.advance(topic, partition, next);
        }
        if self.next.is_empty() {
            return Ok(());
        }
        let offsets: Vec<PartitionOffset> = std::mem::take(&mut self.next)
            .into_iter()
            .map(|((topic, partition), offset)| PartitionOffset {
                topic: topic.to_string(),
                partition,
                offset,
            })
            .collect();
        match member.commit_offsets(&offsets).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_fenced() => {
                tracing::warn!(%error, "commit refused after a rebalance; those records will be consumed again");
                Ok(())
            }
            Err(error) => Err(anyhow::Error::new(error).context("commit offsets")),
        }
    }
}

/// Names a skipped batch on stderr; stdout keeps only record values.
fn report_skipped(batch: &SkippedBatch) {
    eprintln!(
        "skipped {}/{} offsets {}..={} ({} records): {}",
        batch.topic,
        batch.partition,
        batch.base_offset,
        batch.last_offset,
        batch.records(),
        batch.reason
    );
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

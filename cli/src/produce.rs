//! `brook produce`: each line of stdin becomes one record. Records are
//! gathered into one batch per partition and sent pipelined over a produce
//! stream; the command succeeds only once every record is acknowledged.
//!
//! Partitioning without `--partition`: a keyed record goes to
//! `fnv1a32(key) % partitions` (stable across runs and clients); keyless
//! records stick to one partition until its batch is sent, then move to the
//! next (round-robin per batch). Open batches also go out when stdin pauses
//! (interactive input), so typed lines do not wait for the end of input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use brook_client::{Client, ClientError, NewRecord, PendingAck, ProduceStream};
use brook_record::{BatchBuilder, BatchOptions, MAX_RECORDS_PER_BATCH};
use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records per batch.
const BATCH_RECORDS_MAX: usize = 1_000;
/// Bytes per batch (lowered to the topic's `max_message_bytes` if smaller).
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Encoding overhead of one record beyond its key and value: the length,
/// attributes, timestamp and offset deltas, key and value lengths and header
/// count, each a varint of at most 10 bytes.
const RECORD_OVERHEAD_BYTES_MAX: usize = 7 * 10;
/// How long records wait in an open batch while stdin is quiet.
const LINGER: Duration = Duration::from_millis(100);
const _: () = assert!(BATCH_RECORDS_MAX as u64 <= MAX_RECORDS_PER_BATCH as u64);

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,

    /// Split each line at the first SEP: the key before it, the value after.
    /// Lines without SEP have no key.
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,

    /// Send every record to this partition.
    #[arg(long)]
    partition: Option<u32>,
}

pub async fn run(client: &Client, args: ProduceArgs) -> anyhow::Result<()> {
    let topic = client.describe_topic(&args.topic).await?;
    let partitions = u32::try_from(topic.partitions.len()).context("partition count")?;
    ensure!(partitions > 0, "topic {} has no partitions", args.topic);
    if let Some(p) = args.partition {
        ensure!(
            p < partitions,
            "topic {} has partitions 0 to {}, not {p}",
            args.topic,
            partitions - 1
        );
    }
    let bytes_max = BATCH_BYTES_MAX.min(topic.config.max_message_bytes as usize);
    let mut batcher = Batcher::new(partitions, args.partition, bytes_max);
    let mut pipeline = Pipeline::start(client, args.topic).await?;

    let fed = feed(&mut pipeline, &mut batcher, args.key_separator.as_deref()).await;
    // An acknowledgement that failed is the cause of any later trouble.
    let produced = pipeline.finish().await?;
    fed?;
    println!("produced {produced} records");
    Ok(())
}

/// Reads stdin to its end, sending each batch as it fills, all open batches
/// whenever input pauses for `LINGER`, and the rest at the end.
async fn feed(
    pipeline: &mut Pipeline,
    batcher: &mut Batcher,
    separator: Option<&str>,
) -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        let read = if batcher.is_empty() {
            stdin.read_until(b'\n', &mut line).await
        } else {
            tokio::select! {
                read = stdin.read_until(b'\n', &mut line) => read,
                () = tokio::time::sleep(LINGER) => {
                    // Input paused (someone typing): send what waits. A line
                    // read in part stays in `line`; the next read completes it.
                    for (partition, batch) in batcher.drain() {
                        pipeline.send(partition, batch).await?;
                    }
                    continue;
                }
            }
        };
        if read.context("read stdin")? == 0 && line.is_empty() {
            break;
        }
        let record = parse_line(&line, separator, now_ms());
        line.clear();
        if let Some((partition, batch)) = batcher.push(&record) {
            pipeline.send(partition, batch).await?;
        }
    }
    for (partition, batch) in batcher.drain() {
        pipeline.send(partition, batch).await?;
    }
    Ok(())
}

/// The line without its line ending, split into key and value.
fn parse_line(line: &[u8], separator: Option<&str>, timestamp: i64) -> NewRecord {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let split = separator.and_then(|sep| {
        let sep = sep.as_bytes();
        line.windows(sep.len())
            .position(|w| w == sep)
            .map(|at| (&line[..at], &line[at + sep.len()..]))
    });
    let (key, value) = match split {
        Some((key, value)) => (Some(Bytes::copy_from_slice(key)), value),
        None => (None, line),
    };
    NewRecord {
        timestamp,
        key,
        value: Some(Bytes::copy_from_slice(value)),
        headers: Vec::new(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// FNV-1a, 32 bits: the key hash that picks a keyed record's partition.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// One open batch per partition, and the rules for when one is full.
struct Batcher {
    builders: Vec<BatchBuilder>,
    /// `--partition`: every record goes here.
    fixed: Option<u32>,
    /// Where keyless records go until that partition's batch is sent.
    sticky: u32,
    bytes_max: usize,
}

impl Batcher {
    fn new(partitions: u32, fixed: Option<u32>, bytes_max: usize) -> Self {
        assert!(partitions > 0 && fixed.is_none_or(|p| p < partitions));
        Self {
            builders: (0..partitions)
                .map(|_| BatchBuilder::new(BatchOptions::default()))
                .collect(),
            fixed,
            sticky: 0,
            bytes_max,
        }
    }

    fn partition_of(&self, record: &NewRecord) -> u32 {
        match (self.fixed, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => fnv1a32(key) % self.builders.len() as u32,
            (None, None) => self.sticky,
        }
    }

    /// Adds a record; returns a batch that is full and must be sent. A
    /// batch is sent before a record would push it past `bytes_max`, or once
    /// it holds `BATCH_RECORDS_MAX` records.
    fn push(&mut self, record: &NewRecord) -> Option<(u32, BatchBuilder)> {
        let partition = self.partition_of(record);
        let record_bytes = RECORD_OVERHEAD_BYTES_MAX
            + record.key.as_ref().map_or(0, Bytes::len)
            + record.value.as_ref().map_or(0, Bytes::len);
        let builder = &self.builders[partition as usize];
        let mut full = None;
        if !builder.is_empty() && builder.encoded_len() + record_bytes > self.bytes_max {
            full = Some(self.take(partition));
        }
        let builder = &mut self.builders[partition as usize];
        builder.push(record);
        if builder.len() >= BATCH_RECORDS_MAX {
            assert!(full.is_none(), "a fresh batch holds one record");
            full = Some(self.take(partition));
        }
        full.map(|batch| (partition, batch))
    }

    /// Whether no record waits to be sent.
    fn is_empty(&self) -> bool {
        self.builders.iter().all(BatchBuilder::is_empty)
    }

    /// Every batch not yet sent.
    fn drain(&mut self) -> Vec<(u32, BatchBuilder)> {
        let waiting: Vec<u32> = (0..self.builders.len() as u32)
            .filter(|&p| !self.builders[p as usize].is_empty())
            .collect();
        waiting.into_iter().map(|p| (p, self.take(p))).collect()
    }

    fn take(&mut self, partition: u32) -> BatchBuilder {
        if partition == self.sticky {
            self.sticky = (self.sticky + 1) % self.builders.len() as u32;
        }
        std::mem::replace(
            &mut self.builders[partition as usize],
            BatchBuilder::new(BatchOptions::default()),
        )
    }
}

/// The produce stream and a task that awaits its acknowledgements in order,
/// counting the records they cover.
struct Pipeline {
    topic: String,
    stream: ProduceStream,
    /// Sent batches for the ack task; as deep as the stream's in-flight
    /// bound, so it never holds the sender back further.
    acks: mpsc::Sender<(PendingAck, usize)>,
    acker: JoinHandle<Result<u64, ClientError>>,
}

impl Pipeline {
    async fn start(client: &Client, topic: String) -> Result<Self, ClientError> {
        let stream = client.produce_stream().await?;
        let (acks, pending) = mpsc::channel(client.options().produce_in_flight_max);
        Ok(Self {
            topic,
            stream,
            acks,
            acker: tokio::spawn(await_acks(pending)),
        })
    }

    async fn send(&mut self, partition: u32, batch: BatchBuilder) -> anyhow::Result<()> {
        let records = batch.len();
        let batch = batch.build().context("encode a batch")?;
        let pending = self.stream.send(&self.topic, partition, batch).await?;
        ensure!(
            self.acks.send((pending, records)).await.is_ok(),
            "an earlier batch failed"
        );
        Ok(())
    }

    /// Waits for every acknowledgement; the number of records acknowledged.
    async fn finish(self) -> anyhow::Result<u64> {
        drop(self.acks);
        let produced = self.acker.await.context("the acknowledgement task")??;
        self.stream.finish().await;
        Ok(produced)
    }
}

async fn await_acks(mut pending: mpsc::Receiver<(PendingAck, usize)>) -> Result<u64, ClientError> {
    let mut produced = 0;
    while let Some((ack, records)) = pending.recv().await {
        ack.await?;
        produced += records as u64;
    }
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(key: &str) -> NewRecord {
        parse_line(format!("{key}:v\n").as_bytes(), Some(":"), 0)
    }

    #[test]
    fn fnv1a32_matches_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        let r = parse_line(b"k:v:w\r\n", Some(":"), 7);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:w"[..]));
        assert_eq!(r.timestamp, 7);
        let r = parse_line(b"no separator", Some("::"), 0);
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"no separator"[..]));
        let r = parse_line(b"a::b", None, 0);
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"a::b"[..])));
        let r = parse_line(b"\n", Some(":"), 0);
        assert_eq!(r.value.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn keyed_records_stay_on_their_partition() {
        let mut batcher = Batcher::new(3, None, BATCH_BYTES_MAX);
        let want = fnv1a32(b"user-1") % 3;
        for _ in 0..5 {
            assert_eq!(batcher.partition_of(&keyed("user-1")), want);
            assert!(batcher.push(&keyed("user-1")).is_none());
        }
        let drained = batcher.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!((drained[0].0, drained[0].1.len()), (want, 5));
    }

    #[test]
    fn keyless_records_move_on_per_batch() {
        let mut batcher = Batcher::new(3, None, BATCH_BYTES_MAX);
        let keyless = parse_line(b"v", None, 0);
        let mut full = Vec::new();
        for _ in 0..=(3 * BATCH_RECORDS_MAX) {
            full.extend(batcher.push(&keyless).map(|(p, b)| (p, b.len())));
        }
        assert_eq!(
            full,
            [
                (0, BATCH_RECORDS_MAX),
                (1, BATCH_RECORDS_MAX),
                (2, BATCH_RECORDS_MAX)
            ]
        );
        let rest: Vec<(u32, usize)> = batcher
            .drain()
            .into_iter()
            .map(|(p, b)| (p, b.len()))
            .collect();
        assert_eq!(rest, [(0, 1)]);
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        let mut batcher = Batcher::new(1, Some(0), 1_000);
        let big = parse_line(&[b'x'; 300], None, 0);
        assert!(batcher.push(&big).is_none());
        assert!(batcher.push(&big).is_none());
        let (_, full) = batcher.push(&big).expect("a third would pass 1000 bytes");
        assert_eq!(full.len(), 2);
        assert!(full.encoded_len() <= 1_000);
    }
}

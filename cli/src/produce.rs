//! `brook produce`: each line of stdin becomes one record, sent through the
//! client's batching, idempotent `Producer`; the command succeeds only once
//! every record is acknowledged.
//!
//! Partitioning without `--partition` is the producer's: a keyed record goes
//! to `fnv1a32(key) % partitions` (stable across runs and clients, see
//! `brook_client::fnv1a32`); keyless records stick to one partition per
//! batch. Batches also go out after the producer's linger when stdin pauses,
//! so typed lines do not wait for the end of input.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_client::{Client, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Deliveries awaited while reading more input; beyond it, reading waits
/// for the oldest acknowledgement (the producer's buffer bounds the bytes).
const DELIVERIES_PENDING_MAX: usize = 100_000;

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
    if let Some(p) = args.partition {
        ensure!(
            p < partitions,
            "topic {} has partitions 0 to {}, not {p}",
            args.topic,
            partitions.saturating_sub(1)
        );
    }
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .with_linger(Duration::from_millis(20))
            .with_batch_size((1024 * 1024).min(topic.config.max_message_bytes as usize / 2)),
    );
    let fed = feed(&producer, &args).await;
    producer.close().await;
    let produced = fed?;
    println!("produced {produced} records");
    Ok(())
}

/// Reads stdin to its end, handing each line to the producer, and waits for
/// every acknowledgement; returns how many records were acknowledged.
async fn feed(producer: &Producer, args: &ProduceArgs) -> anyhow::Result<u64> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut produced = 0u64;
    loop {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .await
            .context("read stdin")?
            == 0
        {
            break;
        }
        let mut record = parse_line(&line, &args.topic, args.key_separator.as_deref());
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        if pending.len() == DELIVERIES_PENDING_MAX
            && let Some(oldest) = pending.pop_front()
        {
            oldest.await?;
            produced += 1;
        }
        pending.push_back(producer.enqueue(record).await?);
    }
    producer.flush().await;
    for delivery in pending {
        delivery.await?;
        produced += 1;
    }
    Ok(produced)
}

/// The line without its line ending, split into key and value.
fn parse_line(line: &[u8], topic: &str, separator: Option<&str>) -> ProducerRecord {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let split = separator.and_then(|sep| {
        let sep = sep.as_bytes();
        line.windows(sep.len())
            .position(|w| w == sep)
            .map(|at| (&line[..at], &line[at + sep.len()..]))
    });
    match split {
        Some((key, value)) => ProducerRecord::new(topic, Bytes::copy_from_slice(value))
            .key(Bytes::copy_from_slice(key)),
        None => ProducerRecord::new(topic, Bytes::copy_from_slice(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let r = parse_line(b"k:v:w\r\n", "t", Some(":"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:w"[..]));
        let r = parse_line(b"no separator", "t", Some("::"));
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"no separator"[..]));
        let r = parse_line(b"a::b", "t", None);
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"a::b"[..])));
        let r = parse_line(b"\n", "t", Some(":"));
        assert_eq!(r.value.as_deref(), Some(&b""[..]));
    }
}

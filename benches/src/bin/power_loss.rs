//! Power-loss soak: a `brook serve` whose data directory is on a LazyFS
//! mount (a file system that keeps every write in its own cache until the
//! writer fsyncs that file), killed with SIGKILL at random moments under
//! idempotent produce load, topic creation and deletion and group offset
//! commits; after each kill LazyFS drops everything that was not fsynced
//! (`lazyfs::clear-cache`), as a power failure would, and the broker is
//! started again.
//!
//! At the end every acknowledged record must be in its topic exactly once,
//! every acknowledged topic must exist (and every acknowledged deletion
//! hold), and every acknowledged group offset must be there. Prints one JSON
//! line; exits 1 when anything acknowledged was lost or duplicated (with
//! `--expect-loss`, when nothing was: the control run under `fsync = never`
//! must see loss, or the test could not fail).
//!
//! `.ci/power-loss` builds LazyFS, mounts it and runs this.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use brook_client::{
    Client, ClientOptions, FetchOptions, GroupClient, Producer, ProducerConfig, ProducerRecord,
    ResetTo, TopicConfig, TopicPartition,
};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Parser, Debug)]
struct Args {
    /// The `brook` binary.
    #[arg(long)]
    brook: PathBuf,
    /// The broker's data directory, on the LazyFS mount.
    #[arg(long)]
    data_dir: PathBuf,
    /// LazyFS's fault FIFO.
    #[arg(long)]
    fifo: PathBuf,
    /// LazyFS's completion FIFO.
    #[arg(long)]
    done_fifo: PathBuf,
    #[arg(long, default_value_t = 10)]
    cycles: u32,
    /// The broker's fsync policy.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Succeed only if something acknowledged was lost (the control run).
    #[arg(long)]
    expect_loss: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Below 16, so the broker never shares a `syncfs` (LazyFS persists
/// nothing on `syncfs`).
const PARTITIONS: u32 = 6;
const TOPIC: &str = "soak";
const GROUP: &str = "soak-group";
const WAIT: Duration = Duration::from_secs(30);

/// What the broker acknowledged, to be found after the last restart.
#[derive(Debug, Default)]
struct Acknowledged {
    /// Record values by topic.
    records: HashMap<String, BTreeSet<String>>,
    /// Churn topics whose creation was acknowledged and which were not
    /// deleted since.
    live_topics: BTreeSet<String>,
    /// Churn topics whose deletion was acknowledged.
    deleted_topics: BTreeSet<String>,
    /// Churn topics whose deletion was sent but not acknowledged: they may
    /// or may not exist, so they are not checked.
    maybe_deleted: BTreeSet<String>,
    /// The group's committed offset per partition of `TOPIC`.
    offsets: BTreeMap<u32, i64>,
}

struct Broker {
    child: Child,
    endpoint: String,
}

/// A small deterministic generator, so a failing seed can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

async fn start_broker(args: &Args) -> anyhow::Result<Broker> {
    let mut child = Command::new(&args.brook)
        .arg("serve")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--fsync", &args.fsync])
        .args(["--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start brook serve")?;
    let stdout = child.stdout.take().context("the broker's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("brook ready grpc=") {
                let grpc = rest.split_whitespace().next().unwrap_or_default();
                return Ok(grpc.to_owned());
            }
        }
        bail!("the broker exited before it was ready")
    })
    .await
    .context("the broker was not ready in time")??;
    Ok(Broker {
        child,
        endpoint: format!("http://{ready}"),
    })
}

/// LazyFS's control: commands go to its fault FIFO, answers come on its
/// completion FIFO, which must stay open for reading the whole time (its
/// fault thread opens it once, for writing, and blocks until a reader
/// exists).
struct LazyFs {
    fifo: PathBuf,
    done: BufReader<tokio::fs::File>,
}

impl LazyFs {
    async fn open(fifo: PathBuf, done_fifo: &PathBuf) -> anyhow::Result<Self> {
        // Read and write, so that opening does not wait for the writer.
        let done = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(done_fifo)
            .await
            .context("open LazyFS's completion FIFO")?;
        Ok(Self {
            fifo,
            done: BufReader::new(done),
        })
    }

    /// SIGKILL, then LazyFS drops what was not fsynced.
    async fn power_loss(&mut self, mut broker: Broker) -> anyhow::Result<()> {
        broker.child.start_kill().context("kill the broker")?;
        broker.child.wait().await.context("reap the broker")?;
        let mut fifo = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&self.fifo)
            .await
            .context("open LazyFS's fault FIFO")?;
        // One command per write: LazyFS reads 100 bytes at a time.
        fifo.write_all(b"lazyfs::clear-cache\n").await?;
        drop(fifo);
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.done.read_line(&mut line))
            .await
            .context("LazyFS did not clear its cache in time")??;
        ensure!(line.contains("clear-cache"), "LazyFS answered {line:?}");
        Ok(())
    }
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let options = ClientOptions::default().with_request_timeout(Duration::from_secs(5));
    Ok(Client::connect_with(endpoint.to_owned(), options).await?)
}

/// Produces to `TOPIC` until `stop`, recording what is acknowledged.
async fn produce_until(
    client: Client,
    cycle: u32,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<String>> {
    let config = ProducerConfig::default()
        .with_linger(Duration::from_millis(1))
        .with_delivery_timeout(Duration::from_secs(3))
        .with_retry_backoff(Duration::from_millis(20));
    let producer = Producer::new(client, config);
    let mut pending = Vec::new();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) && i < 200_000 {
        let value = format!("c{cycle}-{i}");
        let record =
            ProducerRecord::new(TOPIC, value.clone()).partition((i % u64::from(PARTITIONS)) as u32);
        match producer.enqueue(record).await {
            Ok(delivery) => pending.push((value, delivery)),
            Err(_) => break,
        }
        i += 1;
        if i.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    let mut acknowledged = Vec::new();
    for (value, delivery) in pending {
        if let Ok(Ok(_)) = tokio::time::timeout(WAIT, delivery).await {
            acknowledged.push(value);
        }
    }
    Ok(acknowledged)
}

/// One cycle's metadata traffic: a topic created (with a record), an older
/// one deleted, the group's offsets moved to the end. Stops at the first
/// failure (the broker is gone).
async fn churn(
    client: &Client,
    cycle: u32,
    live: &BTreeSet<String>,
    acked: &mut Acknowledged,
) -> anyhow::Result<()> {
    let created = format!("churn-{cycle}");
    client
        .create_topic(&created, 1, TopicConfig::default())
        .await?;
    acked.live_topics.insert(created.clone());
    let record = ProducerRecord::new(created.as_str(), format!("{created}-0")).partition(0);
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default().with_delivery_timeout(Duration::from_secs(3)),
    );
    if producer.send(record).await.is_ok() {
        acked
            .records
            .entry(created.clone())
            .or_default()
            .insert(format!("{created}-0"));
    }
    if cycle >= 2 {
        let old = format!("churn-{}", cycle - 2);
        if live.contains(&old) {
            acked.maybe_deleted.insert(old.clone());
            client.delete_topic(&old).await?;
            acked.maybe_deleted.remove(&old);
            acked.deleted_topics.insert(old);
        }
    }
    let groups = GroupClient::from_client(client.clone());
    for offset in groups
        .reset_offsets(GROUP, TOPIC, &[], ResetTo::Latest)
        .await?
    {
        acked.offsets.insert(offset.partition, offset.offset);
    }
    Ok(())
}

/// Every record value of `topic`, in offset order.
async fn read_topic(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<Vec<String>> {
    let mut values = Vec::new();
    for partition in 0..partitions {
        let mut offset = 0;
        loop {
            let options = FetchOptions::default().with_max_wait(Duration::ZERO);
            let fetched = client.fetch(topic, partition, offset, options).await?;
            for record in &fetched.records {
                let value = record.value.as_deref().unwrap_or_default();
                values.push(String::from_utf8_lossy(value).into_owned());
            }
            offset = fetched.next_offset;
            if offset >= fetched.high_watermark {
                break;
            }
        }
    }
    Ok(values)
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    cycles: u32,
    fsync: String,
    acknowledged_records: usize,
    lost_records: usize,
    duplicate_records: usize,
    acknowledged_topics: usize,
    lost_topics: usize,
    resurrected_topics: usize,
    acknowledged_offsets: usize,
    lost_offsets: usize,
}

async fn check(client: &Client, acked: &Acknowledged, report: &mut Report) -> anyhow::Result<()> {
    let existing: BTreeSet<String> = client
        .list_topics()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    report.acknowledged_topics = acked.live_topics.len() + 1;
    report.lost_topics = acked
        .live_topics
        .iter()
        .chain(std::iter::once(&TOPIC.to_owned()))
        .filter(|t| !existing.contains(*t))
        .count();
    report.resurrected_topics = acked
        .deleted_topics
        .iter()
        .filter(|t| existing.contains(*t))
        .count();
    for (topic, values) in &acked.records {
        report.acknowledged_records += values.len();
        if !existing.contains(topic) {
            report.lost_records += values.len();
            continue;
        }
        let partitions = if topic == TOPIC { PARTITIONS } else { 1 };
        let stored = read_topic(client, topic, partitions).await?;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for value in &stored {
            *counts.entry(value.as_str()).or_default() += 1;
        }
        report.lost_records += values
            .iter()
            .filter(|v| !counts.contains_key(v.as_str()))
            .count();
        report.duplicate_records += counts.values().filter(|&&n| n > 1).count();
    }
    let groups = GroupClient::from_client(client.clone());
    let wanted: Vec<TopicPartition> = acked
        .offsets
        .keys()
        .map(|&p| TopicPartition::new(TOPIC, p))
        .collect();
    let stored: BTreeMap<u32, i64> = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        groups
            .fetch_offsets(GROUP, &wanted)
            .await?
            .into_iter()
            .map(|o| (o.partition, o.offset))
            .collect()
    };
    report.acknowledged_offsets = acked.offsets.len();
    // Offsets only grow (each reset moves to the end), so a later,
    // unacknowledged one may be there instead; an older one is a loss.
    report.lost_offsets = acked
        .offsets
        .iter()
        .filter(|(p, offset)| stored.get(p).is_none_or(|s| s < offset))
        .count();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = Rng(args.seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut acked = Acknowledged::default();
    let mut lazyfs = LazyFs::open(args.fifo.clone(), &args.done_fifo).await?;
    let mut broker = start_broker(&args).await?;
    {
        let client = connect(&broker.endpoint).await?;
        client
            .create_topic(TOPIC, PARTITIONS, TopicConfig::default())
            .await?;
    }
    for cycle in 0..args.cycles {
        let client = connect(&broker.endpoint).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let producing = tokio::spawn(produce_until(client.clone(), cycle, stop.clone()));
        // Metadata changes while records flow; the kill may land among them.
        let churning = {
            let client = client.clone();
            let live = acked.live_topics.clone();
            tokio::spawn(async move {
                let mut local = Acknowledged::default();
                let result = churn(&client, cycle, &live, &mut local).await;
                (local, result)
            })
        };
        tokio::time::sleep(Duration::from_millis(rng.between(100, 700))).await;
        lazyfs.power_loss(broker).await?;
        stop.store(true, Ordering::Relaxed);
        let acknowledged = producing.await??;
        acked
            .records
            .entry(TOPIC.to_owned())
            .or_default()
            .extend(acknowledged);
        // Whatever the churn got answered before the power went.
        let (local, _) = churning.await?;
        acked.live_topics.extend(local.live_topics);
        for (topic, values) in local.records {
            acked.records.entry(topic).or_default().extend(values);
        }
        for deleted in local.deleted_topics {
            acked.live_topics.remove(&deleted);
            acked.records.remove(&deleted);
            acked.deleted_topics.insert(deleted);
        }
        for unknown in local.maybe_deleted {
            acked.live_topics.remove(&unknown);
            acked.records.remove(&unknown);
        }
        acked.offsets.extend(local.offsets);
        broker = start_broker(&args).await?;
    }
    let client = connect(&broker.endpoint).await?;
    let mut report = Report {
        cycles: args.cycles,
        fsync: args.fsync.clone(),
        ..Report::default()
    };
    check(&client, &acked, &mut report).await?;
    println!("{}", serde_json::to_string(&report)?);
    let lost = report.lost_records + report.lost_topics + report.lost_offsets;
    let wrong = lost + report.duplicate_records + report.resurrected_topics;
    if args.expect_loss {
        ensure!(
            lost > 0,
            "the control run lost nothing: the test could not see a loss"
        );
    } else {
        ensure!(
            wrong == 0,
            "acknowledged data was lost or duplicated: {report:?}"
        );
    }
    Ok(())
}

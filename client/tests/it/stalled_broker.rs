//! A producer against a broker whose disk has stalled: once its buffer is
//! full it stops accepting records (backpressure) instead of growing memory,
//! and everything goes through once the disk moves again.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brook_broker::storage::{LogFile, OsStorage, Storage};
use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_client::{Client, Producer, ProducerConfig, ProducerRecord, TopicConfig};
use parking_lot::{Condvar, Mutex};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// Holds every log append while stalled.
#[derive(Debug, Default)]
struct Gate {
    stalled: Mutex<bool>,
    moved: Condvar,
}

impl Gate {
    fn set(&self, stalled: bool) {
        *self.stalled.lock() = stalled;
        self.moved.notify_all();
    }

    fn wait(&self) {
        let mut stalled = self.stalled.lock();
        while *stalled {
            self.moved.wait(&mut stalled);
        }
    }
}

#[derive(Debug)]
struct StallingStorage(Arc<Gate>);

#[derive(Debug)]
struct StallingFile(Arc<dyn LogFile>, Arc<Gate>);

impl LogFile for StallingFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.0.read_at(buf, position)
    }
    fn append(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<()> {
        self.1.wait();
        self.0.append(bufs)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}

impl Storage for StallingStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(StallingFile(
            OsStorage.open(path)?,
            self.0.clone(),
        )))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsStorage.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_dir_all(path)
    }
    fn list_files(&self, path: &Path) -> io::Result<Vec<String>> {
        OsStorage.list_files(path)
    }
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        OsStorage.list_dirs(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OsStorage.sync_dir(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_stops_the_producer_at_its_buffer() {
    let gate = Arc::new(Gate::default());
    let mut config = BrokerConfig::default();
    config.storage = Arc::new(StallingStorage(gate.clone()));
    let broker = EmbeddedBroker::builder()
        .config(config)
        .start()
        .await
        .unwrap();
    let client = Client::connect(broker.endpoint()).await.unwrap();
    client
        .create_topic("stalled", 2, TopicConfig::default())
        .await
        .unwrap();
    gate.set(true);

    let buffer_memory = 16 * 1024;
    let producer = Producer::new(
        client,
        ProducerConfig::default()
            .with_buffer_memory(buffer_memory)
            .with_batch_size(4 * 1024)
            .with_linger(Duration::from_millis(1)),
    );
    let mut accepted = Vec::new();
    let refused_at = loop {
        let record = ProducerRecord::new("stalled", vec![b'x'; 200]);
        match timeout(Duration::from_millis(300), producer.enqueue(record)).await {
            Ok(delivery) => accepted.push(delivery.unwrap()),
            Err(_waiting) => break accepted.len(),
        }
        assert!(accepted.len() < 10_000, "the producer never pushed back");
    };
    assert!(refused_at > 0, "nothing was accepted");
    assert!(
        producer.buffered_bytes_peak() <= buffer_memory,
        "held {} bytes with a budget of {buffer_memory}",
        producer.buffered_bytes_peak()
    );

    gate.set(false);
    for delivery in accepted {
        timeout(LIMIT, delivery).await.unwrap().unwrap();
    }
    timeout(
        LIMIT,
        producer.send(ProducerRecord::new("stalled", &b"after"[..])),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(producer.buffered_bytes(), 0);
}

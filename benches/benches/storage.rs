//! The partition log through its public API, on a temporary directory
//! (the real file system, no fsync unless named): append, sync, a read at
//! a random offset of a multi-segment log (segment map + sparse index +
//! scan), and a fetch of the hot tail. `cargo bench -p brook-bench --bench storage`.

use std::hint::black_box;
use std::sync::Arc;

use brook_broker::storage::{LogConfig, OsStorage, PartitionLog};
use brook_record::{BatchHeader, BatchOptions, NewRecord, encode_batch};
use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::Rng;

const RECORD_SIZE: usize = 100;

fn batch(records: usize) -> (Bytes, BatchHeader) {
    let value = Bytes::from(vec![b'x'; RECORD_SIZE]);
    let records: Vec<NewRecord> = (0..records)
        .map(|_| NewRecord {
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        })
        .collect();
    let bytes = encode_batch(&records, BatchOptions::default()).expect("bench batch encodes");
    let header = BatchHeader::parse(&bytes).expect("bench batch parses");
    (bytes, header)
}

fn open(dir: &std::path::Path, segment_bytes: u64) -> PartitionLog {
    let mut config = LogConfig::default();
    config.segment_bytes = segment_bytes;
    PartitionLog::open(Arc::new(OsStorage), dir, config)
        .expect("open a log in a temporary directory")
        .0
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    for records in [1usize, 100, 600] {
        let batch = [batch(records)];
        group.throughput(Throughput::Bytes(batch[0].0.len() as u64));
        let dir = tempfile::tempdir().expect("temporary directory");
        // 64 MiB segments: rolls happen, as they do in a long run.
        let log = open(dir.path(), 64 * 1024 * 1024);
        group.bench_with_input(BenchmarkId::new("write", records), &batch, |b, batch| {
            b.iter(|| {
                let (_, mark) = log.append(black_box(batch), 0).expect("append");
                log.publish(&mark);
            });
        });
    }
    // One fsync'd append: what a lone producer pays per acknowledgement.
    let batch = [batch(600)];
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = open(dir.path(), 64 * 1024 * 1024);
    group.throughput(Throughput::Bytes(batch[0].0.len() as u64));
    group.sample_size(20);
    group.bench_function("write_fsync/600", |b| {
        b.iter(|| {
            log.append(black_box(&batch), 0).expect("append");
            let mark = log.sync().expect("fsync");
            log.publish(&mark);
        });
    });
    group.finish();
}

/// A log of `batches` batches of 100 records in 1 MiB segments.
fn filled(dir: &std::path::Path, batches: usize) -> PartitionLog {
    let log = open(dir, 1024 * 1024);
    let one = [batch(100)];
    for _ in 0..batches {
        let (_, mark) = log.append(&one, 0).expect("append");
        log.publish(&mark);
    }
    log
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    // About 64 MiB: 64 segments.
    let log = filled(dir.path(), 6_000);
    let end = log.high_watermark();
    let mut group = c.benchmark_group("log_read");
    group.bench_function("random_offset_one_batch", |b| {
        let mut rng = rand::rng();
        b.iter_batched(
            || rng.random_range(0..end),
            |offset| log.read(offset, 1).expect("read"),
            BatchSize::SmallInput,
        );
    });
    for max_bytes in [64 * 1024usize, 1024 * 1024] {
        group.throughput(Throughput::Bytes(max_bytes as u64));
        group.bench_with_input(
            BenchmarkId::new("hot_tail", max_bytes),
            &max_bytes,
            |b, &max_bytes| {
                // The last ~1 MiB: recently written, in the page cache.
                let from = end - 9_000;
                b.iter(|| log.read(black_box(from), max_bytes).expect("read"));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);

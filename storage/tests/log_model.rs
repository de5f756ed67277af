//! A model test of `PartitionLog` on `MemStorage` against a plain `Vec` of
//! batches: random appends, syncs, recovery points, reads, reopens, crashes
//! and retention, with segments small enough to roll every few batches.

use std::path::Path;
use std::sync::Arc;

use brook_record::{BatchHeader, BatchOptions, NewRecord};
use brook_storage::testing::MemStorage;
use brook_storage::{BatchOutcome, LogConfig, LogError, PartitionLog};
use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const DIR: &str = "/brook/topics/model/0";
const SEGMENT_BYTES: u64 = 1024;
const RETENTION_BYTES: i64 = 2048;

fn config() -> LogConfig {
    let mut config = LogConfig::default();
    config.segment_bytes = SEGMENT_BYTES;
    config.retention_ms = -1;
    config.retention_bytes = RETENTION_BYTES;
    config.index_interval_bytes = 256;
    config
}

#[derive(Debug, Clone)]
enum Op {
    /// Batches of (records, value bytes) appended in one call.
    Append(Vec<(usize, usize)>),
    SyncAndPublish,
    /// Reads at an offset picked from the seed, up to `max_bytes`.
    Read {
        seed: u16,
        max_bytes: u16,
    },
    /// Takes a recovery point (which syncs, without publishing).
    RecoveryPoint,
    Reopen,
    Crash,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((1..4usize, 0..300usize), 1..4).prop_map(Op::Append),
        3 => Just(Op::SyncAndPublish),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(seed, max_bytes)| Op::Read { seed, max_bytes }),
        1 => Just(Op::RecoveryPoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Retention),
    ]
}

/// One appended batch as the model keeps it.
#[derive(Debug, Clone)]
struct Stored {
    base_offset: i64,
    records: i64,
    /// The batch as produced (base offset 0).
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<Stored>,
    /// Batches readers may see.
    visible: usize,
    /// Batches a crash must keep.
    synced: usize,
    start_offset: i64,
}

impl Model {
    fn end_of(&self, count: usize) -> i64 {
        self.batches[..count]
            .last()
            .map_or(0, |b| b.base_offset + b.records)
    }
}

fn encode(records: usize, value_bytes: usize, seq: usize) -> anyhow::Result<(Bytes, BatchHeader)> {
    let records: Vec<NewRecord> = (0..records)
        .map(|i| NewRecord {
            timestamp: 1_000 + seq as i64,
            value: Some(Bytes::from(vec![(seq + i) as u8; value_bytes])),
            ..NewRecord::default()
        })
        .collect();
    let bytes = brook_record::encode_batch(&records, BatchOptions::default())?;
    let header = brook_record::validate_batch(&bytes, usize::MAX)?;
    Ok((bytes, header))
}

fn open(storage: &MemStorage) -> Result<PartitionLog, TestCaseError> {
    let (log, _) = PartitionLog::open(Arc::new(storage.clone()), Path::new(DIR), config())
        .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
    Ok(log)
}

/// Checks one read at `offset` against the model.
fn check_read(
    log: &PartitionLog,
    model: &Model,
    offset: i64,
    max_bytes: usize,
) -> Result<(), TestCaseError> {
    let end = model.end_of(model.visible);
    let read = log.read(offset, max_bytes);
    if offset < model.start_offset || offset > end {
        let refused = matches!(read, Err(LogError::OffsetOutOfRange { .. }));
        prop_assert!(
            refused,
            "read at {offset} outside {}..={end}: {read:?}",
            model.start_offset
        );
        return Ok(());
    }
    let read = read.map_err(|e| TestCaseError::fail(format!("read at {offset}: {e}")))?;
    prop_assert_eq!(read.high_watermark, end);
    if offset == end {
        prop_assert!(read.records.is_empty(), "read at the end returned records");
        return Ok(());
    }
    let first = model
        .batches
        .iter()
        .position(|b| b.base_offset + b.records > offset)
        .expect("offset below the end");
    let mut position = 0;
    let mut index = first;
    while position < read.records.len() {
        let len = brook_record::batch_total_len(&read.records[position..]).unwrap_or(usize::MAX);
        prop_assert!(
            position + len <= read.records.len(),
            "partial batch in a read"
        );
        prop_assert!(
            index < model.visible,
            "read at {offset} returned batch {index}, past the high watermark {end}"
        );
        let stored = &model.batches[index];
        let got = &read.records[position..position + len];
        prop_assert_eq!(
            brook_record::read_base_offset(got),
            Some(stored.base_offset)
        );
        prop_assert_eq!(&got[8..], &stored.bytes[8..], "batch {} differs", index);
        position += len;
        index += 1;
    }
    prop_assert!(
        index > first,
        "read at {offset} below the end returned nothing"
    );
    let first_len = model.batches[first].bytes.len();
    prop_assert!(
        read.records.len() <= max_bytes.max(first_len),
        "read returned {} bytes for max {max_bytes}",
        read.records.len()
    );
    Ok(())
}

/// Checks the log's bounds, then reads everything from the start.
fn check_all(log: &PartitionLog, model: &mut Model) -> Result<(), TestCaseError> {
    let start = log.start_offset();
    prop_assert!(
        start >= model.start_offset,
        "start offset went back to {start}"
    );
    prop_assert!(
        start == model.end_of(model.batches.len())
            || model.batches.iter().any(|b| b.base_offset == start),
        "start offset {start} is not a batch boundary"
    );
    model.start_offset = start;
    let end = model.end_of(model.visible);
    prop_assert_eq!(log.high_watermark(), end);
    prop_assert!(
        start <= end,
        "start offset {start} is past the high watermark {end}"
    );
    let mut offset = start;
    for _ in 0..=model.batches.len() {
        if offset >= end {
            break;
        }
        check_read(log, model, offset, 1)?;
        let stored = model
            .batches
            .iter()
            .find(|b| b.base_offset + b.records > offset)
            .expect("below end");
        offset = stored.base_offset + stored.records;
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut storage = MemStorage::default();
    let mut log = open(&storage)?;
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(shapes) => {
                let seq = model.batches.len();
                let batches: Vec<(Bytes, BatchHeader)> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, &(records, value_bytes))| encode(records, value_bytes, seq + i))
                    .collect::<anyhow::Result<_>>()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let (offsets, _) = log
                    .append(&batches, 0)
                    .map_err(|e| TestCaseError::fail(format!("append: {e}")))?;
                for ((bytes, header), outcome) in batches.into_iter().zip(offsets) {
                    let BatchOutcome::Appended(base_offset) = outcome else {
                        return Err(TestCaseError::fail(format!("not appended: {outcome:?}")));
                    };
                    prop_assert_eq!(base_offset, model.end_of(model.batches.len()));
                    let records = i64::from(header.record_count);
                    model.batches.push(Stored {
                        base_offset,
                        records,
                        bytes,
                    });
                }
            }
            Op::SyncAndPublish => {
                let mark = log
                    .sync()
                    .map_err(|e| TestCaseError::fail(format!("sync: {e}")))?;
                log.publish(&mark);
                model.visible = model.batches.len();
                model.synced = model.batches.len();
            }
            Op::RecoveryPoint => {
                log.write_recovery_point(0)
                    .map_err(|e| TestCaseError::fail(format!("recovery point: {e}")))?;
                model.synced = model.batches.len();
            }
            Op::Read { seed, max_bytes } => {
                let span = (model.end_of(model.visible) - model.start_offset).max(0) + 3;
                let offset = model.start_offset - 1 + i64::from(seed) % span;
                check_read(&log, &model, offset, usize::from(max_bytes))?;
            }
            Op::Reopen => {
                drop(log);
                log = open(&storage)?;
                model.visible = model.batches.len();
            }
            Op::Crash => {
                storage = storage.crash_image();
                drop(log);
                log = open(&storage)?;
                let end = log.high_watermark();
                let kept = model
                    .batches
                    .iter()
                    .take_while(|b| b.base_offset < end)
                    .count();
                prop_assert_eq!(
                    end,
                    model.end_of(kept),
                    "recovered end is not a batch boundary"
                );
                prop_assert!(
                    kept >= model.synced,
                    "crash lost synced batches: kept {kept} of {}",
                    model.synced
                );
                model.batches.truncate(kept);
                model.visible = kept;
                model.synced = kept;
            }
            Op::Retention => {
                log.enforce_retention(0)
                    .map_err(|e| TestCaseError::fail(format!("retention: {e}")))?;
                // The partition holds at most the limit, except when only
                // the active segment is left. Segments holding batches not
                // yet visible are kept until they are, so the bound holds
                // once everything is published.
                let bound = RETENTION_BYTES as u64;
                let all_visible = model.visible == model.batches.len();
                prop_assert!(
                    !all_visible || log.segment_count() == 1 || log.size_bytes() <= bound,
                    "{} bytes in {} segments after retention",
                    log.size_bytes(),
                    log.segment_count()
                );
            }
        }
        check_all(&log, &mut model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn partition_log_matches_a_vec_of_batches(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

#[test]
fn reads_stop_at_the_high_watermark_when_a_segment_rolls() {
    let storage = MemStorage::default();
    let log = open(&storage).unwrap();
    let first = encode(1, 300, 0).unwrap();
    log.append(std::slice::from_ref(&first), 0).unwrap();
    let mark = log.sync().unwrap();
    log.publish(&mark);
    // Written, not yet published: the second rolls the first segment.
    log.append(&[encode(1, 300, 1).unwrap(), encode(1, 300, 2).unwrap()], 0)
        .unwrap();
    assert_eq!(log.high_watermark(), 1);
    let read = log.read(0, 1 << 20).unwrap();
    let offsets: Vec<i64> = brook_record::decode_batches(&read.records)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(
        offsets,
        [0],
        "a read returned records at or past the high watermark 1"
    );
}

#[test]
fn start_offset_never_passes_the_high_watermark() {
    let storage = MemStorage::default();
    let log = open(&storage).unwrap();
    // Eight unpublished 600-byte batches: seven rolls, retention runs on each.
    let batches: Vec<_> = (0..8).map(|i| encode(1, 600, i).unwrap()).collect();
    log.append(&batches, 0).unwrap();
    assert_eq!(log.high_watermark(), 0);
    assert!(
        log.start_offset() <= log.high_watermark(),
        "start offset {} is past the high watermark {}",
        log.start_offset(),
        log.high_watermark()
    );
}

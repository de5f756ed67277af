//! The record batch codec: encode (per codec), validate (header + CRC),
//! decode, and the CRC-32 (crc32fast) alone. `cargo bench -p brook-bench --bench record`.

use std::hint::black_box;

use brook_record::{
    BatchBuilder, BatchOptions, Compression, NewRecord, decode_batches, validate_batch,
};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Records per batch, and bytes per record value: a full 64 KiB-ish batch
/// of the 100 B records the throughput targets use.
const RECORDS: usize = 600;
const RECORD_SIZE: usize = 100;

fn records() -> Vec<NewRecord> {
    let value: Vec<u8> = b"the quick brown fox jumps over the lazy dog "
        .iter()
        .copied()
        .cycle()
        .take(RECORD_SIZE)
        .collect();
    let value = Bytes::from(value);
    (0..RECORDS)
        .map(|i| NewRecord {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        })
        .collect()
}

fn encode(records: &[NewRecord], compression: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions {
        compression,
        ..BatchOptions::default()
    });
    for record in records {
        builder.push(record);
    }
    builder.build().expect("bench records encode")
}

fn codec(c: &mut Criterion) {
    let records = records();
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        group.bench_with_input(
            BenchmarkId::new("encode", compression),
            &compression,
            |b, &compression| b.iter(|| encode(black_box(&records), compression)),
        );
        let batch = encode(&records, compression);
        group.bench_with_input(
            BenchmarkId::new("validate", compression),
            &batch,
            |b, batch| {
                b.iter(|| validate_batch(black_box(batch), usize::MAX).expect("valid"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("decode", compression),
            &batch,
            |b, batch| {
                b.iter(|| decode_batches(black_box(batch)).expect("decodes"));
            },
        );
    }
    group.finish();
}

fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32");
    for size in [1024usize, 64 * 1024] {
        let data = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter(|| crc32fast::hash(black_box(data)));
        });
    }
    group.finish();
}

criterion_group!(benches, codec, crc);
criterion_main!(benches);

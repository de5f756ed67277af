//! One run's figures: throughput, and latency percentiles from an
//! hdrhistogram of microseconds.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::{Params, Workload};

/// Which workload ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Send records and wait for their acknowledgements.
    Produce,
    /// Read a filled topic back.
    Consume,
    /// Produce and consume at once; latency is send → receive.
    E2e,
}

/// What the latency figures of a report measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// From handing a record (or a raw request) to the client until its
    /// acknowledgement; from its intended send time with `--rate`.
    SendToAck,
    /// From a record's intended send time until a consumer received it.
    SendToReceive,
    /// Not measured (consume measures throughput only).
    None,
}

/// A histogram of latencies in microseconds, 3 significant digits, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// What a workload measured, before it is put in a [`Report`].
#[derive(Debug, Clone)]
pub struct Figures {
    pub records: u64,
    /// Value bytes (records × record size), the figure MB/s counts.
    pub bytes: u64,
    pub seconds: f64,
    pub latency: Latency,
    /// In microseconds; empty when `latency` is `None`.
    pub latencies: Histogram<u64>,
}

/// The outcome of a run, as printed (`Display`) or as one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// `producer` (brook_client::Producer/Consumer) or `raw` (the bare stream).
    pub client: &'static str,
    /// The broker's fsync policy, `unknown` for a broker not started here.
    pub fsync: String,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// Value bytes per second, in 10^6 bytes.
    pub mb_per_sec: f64,
    pub latency: Latency,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub params: Params,
}

impl Report {
    pub fn new(mode: Mode, fsync: &str, workload: &Workload, figures: Figures) -> Self {
        let Figures {
            records,
            bytes,
            seconds,
            latency,
            latencies,
        } = figures;
        let measured = latency != Latency::None && !latencies.is_empty();
        let ms = |us: u64| measured.then_some(us as f64 / 1000.0);
        Self {
            mode,
            client: if workload.raw && mode == Mode::Produce {
                "raw"
            } else {
                "producer"
            },
            fsync: fsync.to_owned(),
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mb_per_sec: bytes as f64 / seconds / 1e6,
            latency,
            p50_ms: ms(latencies.value_at_quantile(0.5)),
            p99_ms: ms(latencies.value_at_quantile(0.99)),
            p999_ms: ms(latencies.value_at_quantile(0.999)),
            max_ms: ms(latencies.max()),
            params: workload.params(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        writeln!(
            f,
            "{:?} ({}) of {} B records, {} partitions, {} producer(s), {} consumer(s), compression {}, fsync {}{}",
            self.mode,
            self.client,
            p.record_size,
            p.partitions,
            p.producers,
            p.consumers,
            p.compression,
            self.fsync,
            p.rate
                .map_or_else(String::new, |r| format!(", rate {r:.0}/s")),
        )?;
        write!(
            f,
            "{} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s",
            self.records,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec,
        )?;
        if let (Some(p50), Some(p99), Some(p999), Some(max)) =
            (self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms)
        {
            let what = match self.latency {
                Latency::SendToAck => "send → ack",
                Latency::SendToReceive => "send → receive",
                Latency::None => "latency",
            };
            write!(
                f,
                "\n{what}: p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms"
            )?;
        }
        Ok(())
    }
}

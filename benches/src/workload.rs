//! What a bench run does, shared by the three modes.

use std::time::Duration;

use anyhow::bail;
use brook_client::Compression;
use serde::Serialize;

/// How much to produce (or read back).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// This many records in total, spread over the producers.
    Records(u64),
    /// Keep producing for this long.
    Duration(Duration),
}

/// The parameters of one run; [`Workload::default`] is 1,000,000 records
/// of 100 bytes from one producer to 8 partitions with the client's
/// default batching.
#[derive(Debug, Clone)]
pub struct Workload {
    pub topic: String,
    pub partitions: u32,
    pub amount: Amount,
    /// Bytes of each record's value.
    pub record_size: usize,
    /// Concurrent producers, each with its own connection and `Producer`.
    pub producers: usize,
    /// Concurrent consumers, each reading its share of the partitions.
    pub consumers: usize,
    /// Records carry a key (one of `KEYS`), which picks their partition;
    /// otherwise the producer's sticky partitioner does.
    pub keyed: bool,
    /// `ProducerConfig::batch_size`.
    pub batch_size: usize,
    /// `ProducerConfig::linger`.
    pub linger: Duration,
    /// `ProducerConfig::max_in_flight` (produce requests awaiting an answer).
    pub max_in_flight: usize,
    pub compression: Compression,
    /// Records per second over all producers; `None` is as fast as acknowledged.
    pub rate: Option<f64>,
    /// Produce over the raw stream instead of the `Producer` (`--raw`).
    pub raw: bool,
    /// Consume: read what the topic holds instead of filling it first.
    pub existing: bool,
    /// `ConsumerConfig::max_bytes` of each fetch.
    pub fetch_bytes: u32,
    /// Bytes written to another topic before the run, to measure the
    /// effect of data already retained.
    pub retained_bytes: u64,
}

/// Distinct keys of a keyed run.
pub const KEYS: u64 = 10_000;

impl Default for Workload {
    fn default() -> Self {
        Self {
            topic: "bench".to_owned(),
            partitions: 8,
            amount: Amount::Records(1_000_000),
            record_size: 100,
            producers: 1,
            consumers: 1,
            keyed: false,
            batch_size: brook_client::DEFAULT_BATCH_SIZE,
            linger: brook_client::DEFAULT_LINGER,
            max_in_flight: brook_client::DEFAULT_MAX_IN_FLIGHT,
            compression: Compression::None,
            rate: None,
            raw: false,
            existing: false,
            fetch_bytes: brook_record::protocol::FETCH_BYTES_DEFAULT,
            retained_bytes: 0,
        }
    }
}

impl Workload {
    /// Refuses parameters a run cannot use.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.partitions == 0 || self.producers == 0 || self.consumers == 0 {
            bail!("partitions, producers and consumers must be positive");
        }
        if self.batch_size == 0 || self.max_in_flight == 0 || self.fetch_bytes == 0 {
            bail!("batch size, in-flight requests and fetch bytes must be positive");
        }
        match self.amount {
            Amount::Records(0) => bail!("--records must be positive"),
            Amount::Duration(d) if d.is_zero() => bail!("--duration must be positive"),
            _ => {}
        }
        if self
            .rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            bail!("--rate must be a positive number of records per second");
        }
        Ok(())
    }

    /// Records producer `index` (of `producers`) sends when the amount is a
    /// count: an even share, the first ones taking the remainder.
    pub fn share(&self, index: usize) -> Option<u64> {
        match self.amount {
            Amount::Records(records) => {
                let producers = self.producers as u64;
                let index = index as u64;
                Some(records / producers + u64::from(index < records % producers))
            }
            Amount::Duration(_) => None,
        }
    }

    /// When producing stops in a duration run.
    pub fn duration(&self) -> Option<Duration> {
        match self.amount {
            Amount::Duration(d) => Some(d),
            Amount::Records(_) => None,
        }
    }

    /// The parameters as they appear in a report.
    pub fn params(&self) -> Params {
        Params {
            topic: self.topic.clone(),
            partitions: self.partitions,
            records_target: match self.amount {
                Amount::Records(n) => Some(n),
                Amount::Duration(_) => None,
            },
            duration_s: self.duration().map(|d| d.as_secs_f64()),
            record_size: self.record_size,
            producers: self.producers,
            consumers: self.consumers,
            keyed: self.keyed,
            batch_size: self.batch_size,
            linger_ms: self.linger.as_secs_f64() * 1e3,
            max_in_flight: self.max_in_flight,
            compression: self.compression.to_string(),
            rate: self.rate,
            raw: self.raw,
            fetch_bytes: self.fetch_bytes,
            retained_bytes: self.retained_bytes,
        }
    }
}

/// [`Workload`] as plain values, for the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub topic: String,
    pub partitions: u32,
    pub records_target: Option<u64>,
    pub duration_s: Option<f64>,
    pub record_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub keyed: bool,
    pub batch_size: usize,
    pub linger_ms: f64,
    pub max_in_flight: usize,
    pub compression: String,
    pub rate: Option<f64>,
    pub raw: bool,
    pub fetch_bytes: u32,
    pub retained_bytes: u64,
}

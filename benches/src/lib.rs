//! Brook's load generator: `brook bench produce | consume | e2e`, and the
//! NATS JetStream comparison behind the `nats` feature.
//!
//! - `workload`: what to run (records or a duration, sizes, producers,
//!   consumers, partitions, batching, compression, a fixed rate).
//! - `target`: the broker under test, embedded on a temporary directory
//!   with a chosen fsync policy, or a running one.
//! - `produce`, `consume`, `e2e`: the three workloads through the real
//!   `brook_client::Producer` and `Consumer`; `raw`: produce over the raw
//!   pipelined stream, the broker's own ceiling without a client library.
//! - `leaders`: where a topic's partitions take writes; runs wait for
//!   every leader of a cluster's topic before they measure.
//! - `report`: one run's figures; latencies come from hdrhistogram.
//!
//! Invariant: with a rate, every latency is counted from the record's
//! *intended* send time (start + i / rate), so a stall delays the records
//! behind it on the clock instead of hiding them (no coordinated omission).

pub mod connection;
pub mod consume;
pub mod e2e;
pub mod leaders;
#[cfg(feature = "nats")]
pub mod nats;
pub mod produce;
pub mod raw;
pub mod report;
pub mod target;
pub mod workload;

pub use connection::Connection;
pub use report::{Latency, Mode, Report};
pub use target::{BrokerTarget, RunningBroker};
pub use workload::{Amount, Workload};

/// Runs `mode` of `workload` against the broker `connection` reaches.
pub async fn run(
    mode: Mode,
    connection: &Connection,
    fsync: &str,
    workload: &Workload,
) -> anyhow::Result<Report> {
    workload.check()?;
    if workload.retained_bytes > 0 {
        retain(connection, workload.retained_bytes).await?;
    }
    let figures = match mode {
        Mode::Produce if workload.raw => raw::run(connection, workload).await?,
        Mode::Produce => produce::run(connection, workload).await?,
        Mode::Consume => consume::run(connection, workload).await?,
        Mode::E2e => e2e::run(connection, workload).await?,
    };
    Ok(Report::new(mode, fsync, workload, figures))
}

/// The topic that holds `--retained-bytes` of data during a run.
pub const RETAINED_TOPIC: &str = "bench-retained";

/// Writes `bytes` of 1 KiB records to [`RETAINED_TOPIC`] (8 partitions),
/// so that a run starts with that much data retained.
pub async fn retain(connection: &Connection, bytes: u64) -> anyhow::Result<()> {
    const RECORD_SIZE: usize = 1024;
    raw::fill(
        connection,
        RETAINED_TOPIC,
        8,
        bytes.div_ceil(RECORD_SIZE as u64),
        RECORD_SIZE,
    )
    .await
    .map_err(|error| error.context("write the retained data"))
}

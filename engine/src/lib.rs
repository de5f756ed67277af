//! Brook's broker as a library: topics and their partitions, produce and
//! fetch, idempotent producers, consumer groups and their committed offsets,
//! and the metadata store behind a trait.
//!
//! Invariant: this crate speaks in domain types. It knows neither protobuf,
//! gRPC nor HTTP (the server crate, `brook-broker`, does); only
//! `meta/sled.rs` knows sled; the durable log is `brook-storage`.

pub mod broker;
pub mod config;
pub mod group;
pub mod meta;
pub mod metrics;
mod partition;
mod process;

pub use broker::{Broker, BrokerError};
pub use config::{BrokerConfig, FsyncPolicy};

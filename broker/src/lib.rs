//! Brook's broker: a partitioned, append-only log with a gRPC API.
//!
//! Run it with [`server::serve`] on listeners you bind, or start an
//! [`EmbeddedBroker`] inside your process (tests, applications that embed
//! Brook). [`Broker`] is the broker as a library, usable directly.

pub mod broker;
mod clock;
pub mod config;
pub mod embedded;
pub mod group;
pub mod grpc;
pub mod http;
pub mod meta;
pub mod metrics;
pub mod partition;
mod process;
pub mod server;
pub mod storage;

pub use broker::{Broker, BrokerError};
pub use config::{BrokerConfig, FsyncPolicy};
pub use embedded::{EmbeddedBroker, EmbeddedBrokerBuilder};

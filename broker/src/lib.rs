//! Brook's broker server: the gRPC services and the HTTP endpoints in front
//! of the engine ([`brook_engine`]), how they start and drain, and
//! [`EmbeddedBroker`] for tests and applications that embed Brook
//! ([`EmbeddedCluster`] for several brokers forming a cluster).
//!
//! Run it with [`server::serve`] on listeners you bind, or start an
//! [`EmbeddedBroker`] inside your process. [`Broker`] is the broker as a
//! library, usable directly.
//!
//! Invariant: on the broker side, only this crate knows protobuf, gRPC
//! and HTTP.

pub mod auth;
mod descriptors;
pub mod embedded;
mod embedded_cluster;
mod file_watch;
mod grpc;
mod http;
mod idle;
mod replicas;
pub mod server;
mod still_failing;
pub mod tls;

pub use brook_engine::{
    AdminError, AuthorizerMode, Broker, BrokerConfig, ClientAuth, ClusterConfig, FetchError,
    FsyncPolicy, GroupError, Invalid, NotFound, OpenError, OutOfRange, PartitionError,
    PartitionName, ProduceError, RecordValidation, RecoverError, RecoveredPartition,
    RecoveredTopic, TlsConfig, acl, config, group, quarantined_topic_name,
    recover_quarantined_topic,
};
/// The file system under the log, for embedders that swap in their own.
pub use brook_storage as storage;
pub use embedded::{EmbeddedBroker, EmbeddedBrokerBuilder, StartError};
pub use embedded_cluster::{EmbeddedCluster, EmbeddedClusterBuilder};
pub use http::Readiness;

//! Brook's broker as a library: topics and their partitions, produce and
//! fetch, idempotent producers, consumer groups and their committed offsets,
//! client quotas, and the metadata store behind a trait.
//!
//! Invariant: this crate speaks in domain types. It knows neither protobuf,
//! gRPC nor HTTP (the server crate, `brook-broker`, does); only
//! `meta/sled.rs` knows sled; the durable log is `brook-storage`.

pub mod acl;
mod broker;
pub mod config;
mod error;
pub mod group;
mod meta;
pub mod metrics;
mod partition;
mod process;
pub mod quota;

pub use broker::{
    BatchAppended, Broker, FetchSpec, Fetched, OffsetSpec, PartitionInfo, PendingProduce,
    ProduceBatch, QuarantinedTopic, RecoveredPartition, RecoveredTopic, Subscription,
    SubscriptionChunk, TopicInfo, quarantined_topic_name, recover_quarantined_topic,
};
pub use brook_record::RecordValidation;
pub use config::{
    AuthorizerMode, BrokerConfig, ClientAuth, ClusterConfig, FsyncPolicy, PartitionName, TlsConfig,
};
pub use error::{
    AdminError, FetchError, GroupError, Invalid, NotFound, OpenError, OutOfRange, PartitionError,
    ProduceError, QuotaError, RecoverError,
};
pub use meta::TopicOverrides;
pub use partition::{
    Acknowledgement, AcknowledgementFuture, AppendFailure, AppendResult, Leader, Partition,
    Replication,
};

//! The `brook.v1` gRPC API: message types and service stubs generated from
//! `proto/brook/v1/brook.proto`.
//!
//! Only this crate and the broker's `grpc/` module (plus the client) know these
//! types; the storage layer works on raw record batches.

#[allow(
    clippy::pedantic,
    clippy::default_trait_access,
    clippy::doc_markdown,
    missing_docs
)]
mod generated {
    tonic::include_proto!("brook.v1");
}

pub use generated::*;

/// `brook.cluster.v1`: what the brokers of a cluster say to each other
/// (`proto/brook/cluster/v1/raft.proto`); clients never use it.
pub mod cluster {
    #[allow(
        clippy::pedantic,
        clippy::default_trait_access,
        clippy::doc_markdown,
        missing_docs
    )]
    mod generated {
        tonic::include_proto!("brook.cluster.v1");
    }

    pub use generated::*;
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("brook_descriptor");

//! The seam between a partition and its replicas: the engine hands
//! validated batches to a [`Replication`] and waits for the outcome; what
//! implements it (the cluster's consensus) lives outside the engine.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::{AcknowledgementFuture, AppendResult};

/// What resolves once an append is acknowledged, or refused.
pub type Acknowledgement = Pin<Box<dyn Future<Output = AppendResult> + Send>>;

/// Appends to a partition through its replicas.
pub trait Replication: Send + Sync + fmt::Debug {
    /// Queues `batches` (validated) after those of every earlier call: the
    /// returned future resolves once they are queued, into the
    /// acknowledgement that resolves once they are committed and applied
    /// to this replica's log (offsets decided, high watermark moved).
    fn submit(&self, batches: Vec<Bytes>) -> AcknowledgementFuture<'_>;

    /// Why reads of this replica are refused now, if they are: a leader
    /// cut off from the other replicas serves what it had committed and
    /// nothing newer, while another replica may lead by now.
    fn read_refusal(&self) -> Option<String> {
        None
    }
}

/// The broker that leads a partition, as far as this one knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub id: u64,
    /// Its gRPC address.
    pub address: String,
}

impl fmt::Display for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broker {} at {}", self.id, self.address)
    }
}

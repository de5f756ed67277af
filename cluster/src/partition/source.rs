//! Where a replica reads the records it misses when it installs a
//! snapshot: the log of the broker that holds them.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// A read of a partition's log on another broker.
pub type LogRead<'a> = Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send + 'a>>;

/// Reads whole batches of a partition group's log, from `offset` on, about
/// `max_bytes` of them, from the broker at `address`; only what that
/// broker has applied (committed) is served.
pub trait LogSource: Send + Sync + 'static {
    fn read<'a>(
        &'a self,
        address: &'a str,
        group: &'a str,
        offset: i64,
        max_bytes: u32,
    ) -> LogRead<'a>;
}

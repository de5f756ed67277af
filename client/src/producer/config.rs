//! The producer's settings, every limit in one place, and the relations
//! between them that [`ProducerConfig::check`] asserts.

use std::time::Duration;

use brook_record::Compression;

use crate::resilience::Backoff;

/// How long a record may wait for companions before its batch is sent.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// A partition's batch is sent once it holds this many (uncompressed) bytes.
///
/// Large, because the broker pays one fsync per batch it appends (per
/// partition and round): the fsync, not the bytes, is what a small batch
/// costs. A batch is sent once its linger is over and its partition can
/// take it, full or not, so a slow stream is not held back by the size.
pub const DEFAULT_BATCH_SIZE: usize = 1024 * 1024;
/// Bytes of records accepted and not yet acknowledged, across all partitions.
pub const DEFAULT_BUFFER_MEMORY: usize = 32 * 1024 * 1024;
/// Produce requests awaiting their answer.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5;
/// The first retry's delay; it doubles per attempt up to [`DEFAULT_RETRY_BACKOFF_MAX`].
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between two attempts of one batch.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a record may take from `send` to its acknowledgement, retries included.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings of a [`crate::Producer`]; [`ProducerConfig::default`] holds the
/// `DEFAULT_*` values: idempotent, uncompressed, 5 ms linger, 1 MiB
/// batches, 32 MiB of buffer, 5 requests in flight, a 2 minute delivery
/// timeout.
///
/// ```
/// use std::time::Duration;
/// use brook_client::{Compression, ProducerConfig};
///
/// let config = ProducerConfig::default()
///     .with_compression(Compression::Zstd)
///     .with_linger(Duration::from_millis(20));
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// How long a partition's first record waits for more before the batch
    /// is sent anyway. Larger means fuller batches and higher latency.
    pub linger: Duration,
    /// Bytes (uncompressed, header included) at which a partition's batch is
    /// sent without waiting for `linger`; lowered to the topic's
    /// `max_message_bytes` when that is smaller. A record larger than this
    /// gets a batch of its own.
    pub batch_size: usize,
    /// Bytes of records accepted and not yet acknowledged (or failed).
    /// [`crate::Producer::send`] waits while the buffer is full. A record
    /// larger than the whole buffer is refused.
    pub buffer_memory: usize,
    /// Codec of every batch; consumers decode it transparently.
    pub compression: Compression,
    /// Produce requests sent and not yet answered (each carries at most one
    /// batch per partition).
    pub max_in_flight: usize,
    /// Ceiling of the delay before a batch's first retry; it doubles per
    /// attempt, and the delay is drawn at random below it (full jitter).
    pub retry_backoff: Duration,
    /// Upper bound of the retry delay.
    pub retry_backoff_max: Duration,
    /// A record not acknowledged this long after it was accepted fails with
    /// a (retryable) [`crate::ClientError::Timeout`]. It may still have been
    /// appended, if its last attempt's answer was lost.
    pub delivery_timeout: Duration,
    /// Whether batches carry a producer id and sequence numbers, so that the
    /// broker appends a retried batch only once and refuses gaps. Without
    /// it, a retry after a lost answer appends the records again, and each
    /// partition has at most one batch in flight.
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: DEFAULT_LINGER,
            batch_size: DEFAULT_BATCH_SIZE,
            buffer_memory: DEFAULT_BUFFER_MEMORY,
            compression: Compression::None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            idempotence: true,
        }
    }
}

impl ProducerConfig {
    /// The retry delays: `retry_backoff` doubling up to
    /// `retry_backoff_max`, with full jitter.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.retry_backoff,
            max: self.retry_backoff_max,
            multiplier: 2.0,
        }
    }

    /// Asserts the relations the producer relies on; a violation is a
    /// programmer error.
    pub(crate) fn check(&self) {
        assert!(self.batch_size > 0, "batch_size must be positive");
        assert!(self.buffer_memory > 0, "buffer_memory must be positive");
        assert!(
            u32::try_from(self.buffer_memory).is_ok(),
            "buffer_memory must fit in u32 (semaphore permits), got {}",
            self.buffer_memory
        );
        assert!(self.max_in_flight > 0, "max_in_flight must be at least 1");
        assert!(
            !self.retry_backoff.is_zero() && self.retry_backoff <= self.retry_backoff_max,
            "retry_backoff must be positive and at most retry_backoff_max"
        );
        assert!(
            self.linger < self.delivery_timeout,
            "delivery_timeout must be longer than linger"
        );
    }
}

setters!(ProducerConfig {
    with_linger => linger: Duration,
    with_batch_size => batch_size: usize,
    with_buffer_memory => buffer_memory: usize,
    with_compression => compression: Compression,
    with_max_in_flight => max_in_flight: usize,
    with_retry_backoff => retry_backoff: Duration,
    with_retry_backoff_max => retry_backoff_max: Duration,
    with_delivery_timeout => delivery_timeout: Duration,
    with_idempotence => idempotence: bool,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        ProducerConfig::default().check();
    }

    #[test]
    #[should_panic(expected = "delivery_timeout")]
    fn linger_beyond_delivery_timeout_is_refused() {
        ProducerConfig {
            linger: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(1),
            ..ProducerConfig::default()
        }
        .check();
    }
}

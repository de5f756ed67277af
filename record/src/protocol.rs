//! Numbers of the protocol that the broker and its clients must agree on,
//! kept once here because both depend on this crate.

use std::time::Duration;

/// How many of an idempotent producer's latest batches per partition the
/// broker remembers. A batch sent again within this window is answered with
/// its original offset; so a producer keeps at most this many batches of
/// one partition in flight, or a retry could fall out of the window.
pub const SEQUENCE_WINDOW: usize = 5;

/// Batches in one produce request, at most, unless the broker is
/// configured otherwise (`Limits::produce_batches_max`).
pub const PRODUCE_BATCHES_MAX_DEFAULT: usize = 10_000;

/// The largest gRPC message either side decodes by default (a produce
/// request or a fetch response); a broker's `max_message_bytes` must fit
/// in it.
pub const GRPC_MESSAGE_BYTES_MAX_DEFAULT: usize = 128 * 1024 * 1024;

/// What a consumer asks for in one fetch unless told otherwise: bytes of
/// record batches per response. A consumer has one fetch in flight per
/// broker, so each fetch pays a round trip and the broker's read before
/// any byte moves: 1 KiB records were read back on loopback at about
/// 0.95 GB/s with 1 MiB fetches and about 1.2 GB/s with 4 MiB.
pub const FETCH_BYTES_DEFAULT: u32 = 4 * 1024 * 1024;

/// How long a consumer's fetch waits at the end of the log by default;
/// well under the broker's longest wait (`fetch_wait_ms_max`, 60 s).
pub const FETCH_WAIT_DEFAULT: Duration = Duration::from_millis(500);

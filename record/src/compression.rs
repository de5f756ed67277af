//! Compression codecs for the records section.
//!
//! The codec id lives in bits 0-2 of the batch `attributes`. The whole records
//! section is compressed as one unit (better ratio than per-record). Consumers and
//! the broker's produce check inflate it with the same functions, so they agree on
//! which sections decompress.
//!
//! Invariant: decompression never allocates more than [`MAX_DECOMPRESSED_BYTES`]
//! (plus a codec workspace, one zstd context per thread), whatever the input
//! claims, and a declared size is checked before the output grows, so a small
//! hostile batch cannot make a reader allocate gigabytes.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

use bytes::Bytes;

use crate::error::{BatchError, ParseCompressionError};

/// Largest records section a reader will inflate a compressed batch to (64 MiB).
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// zstd level used when building batches: zstd's own default, a good speed/ratio balance.
const ZSTD_LEVEL: i32 = 3;

/// log2 of the largest zstd window a reader accepts. A window larger than the output
/// limit is useless, and capping it stops a frame header from demanding a huge buffer.
const ZSTD_WINDOW_LOG_MAX: u32 = 26;

/// One LZ4 input byte can expand to at most 255 output bytes (a match-length extension
/// byte adds at most 255 to the match), so a declared size above this ratio is a lie.
const LZ4_MAX_RATIO: usize = 255;

/// Compression codec of a batch's records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec id stored in bits 0-2 of the batch attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    /// The codec for an id from the attributes' codec bits.
    pub fn from_id(id: u8) -> Result<Self, BatchError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Lz4),
            2 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }

    /// Lower-case name, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl TryFrom<u8> for Compression {
    type Error = BatchError;

    fn try_from(id: u8) -> Result<Self, Self::Error> {
        Compression::from_id(id)
    }
}

impl From<Compression> for u8 {
    fn from(codec: Compression) -> u8 {
        codec.id()
    }
}

impl FromStr for Compression {
    type Err = ParseCompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(ParseCompressionError(other.to_owned())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Compresses an encoded records section.
pub(crate) fn compress(codec: Compression, section: &[u8]) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None => Ok(section.to_vec()),
        Compression::Lz4 => Ok(lz4_flex::block::compress_prepend_size(section)),
        Compression::Zstd => {
            zstd::bulk::compress(section, ZSTD_LEVEL).map_err(|e| BatchError::CompressionFailed {
                codec,
                reason: e.to_string(),
            })
        }
    }
}

/// Returns the plain records section. Uncompressed input is returned as is (a cheap
/// `Bytes` clone), so records decoded from it are zero-copy slices of the batch.
pub(crate) fn decompress(codec: Compression, section: &Bytes) -> Result<Bytes, BatchError> {
    if codec == Compression::None {
        return Ok(section.clone());
    }
    let mut out = Vec::new();
    decompress_into(codec, section, &mut out)?;
    Ok(Bytes::from(out))
}

/// Inflates a records section into `out`, replacing what it held, so a caller can
/// reuse one buffer across batches. A declared size is checked against
/// [`MAX_DECOMPRESSED_BYTES`] before `out` grows.
pub(crate) fn decompress_into(
    codec: Compression,
    section: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    out.clear();
    match codec {
        Compression::None => {
            out.extend_from_slice(section);
            Ok(())
        }
        Compression::Lz4 => decompress_lz4(section, out),
        Compression::Zstd => decompress_zstd(section, out),
    }
}

/// At most how many bytes the records section of `batch` inflates to, read
/// from headers alone (lz4's size prefix, zstd's frame headers): 0 for an
/// uncompressed batch, [`MAX_DECOMPRESSED_BYTES`] when a compressed one does
/// not say (or says more), and 0 for a batch too malformed to tell, which
/// validation refuses before inflating anything. Lets the broker budget the
/// work and memory of checking a request before it starts.
pub fn decompressed_size_bound(batch: &[u8]) -> usize {
    let Ok(header) = crate::BatchHeader::parse(batch) else {
        return 0;
    };
    let Ok(codec) = header.compression() else {
        return 0;
    };
    let section = batch.get(crate::HEADER_LEN..).unwrap_or_default();
    let declared = match codec {
        Compression::None => return 0,
        Compression::Lz4 => section
            .first_chunk::<4>()
            .map_or(0, |prefix| u32::from_le_bytes(*prefix) as usize),
        Compression::Zstd => match zstd_declared_size(section) {
            Ok(Some(size)) => size,
            Ok(None) | Err(BatchError::DecompressedTooLarge { .. }) => MAX_DECOMPRESSED_BYTES,
            Err(_) => 0,
        },
    };
    declared.min(MAX_DECOMPRESSED_BYTES)
}

fn decompress_lz4(section: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let codec = Compression::Lz4;
    let failed = |reason: String| BatchError::Decompression { codec, reason };
    let Some((size_prefix, body)) = section.split_first_chunk::<4>() else {
        return Err(failed(format!(
            "section is {} bytes, too short for the 4-byte size prefix",
            section.len()
        )));
    };
    let declared = u32::from_le_bytes(*size_prefix) as usize;
    // Both checks happen before the output buffer grows. The ratio applies to the
    // compressed block after the 4-byte size prefix.
    if declared > MAX_DECOMPRESSED_BYTES {
        return Err(BatchError::DecompressedTooLarge {
            codec,
            size: declared,
            max: MAX_DECOMPRESSED_BYTES,
        });
    }
    if declared > body.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(failed(format!(
            "size prefix declares {declared} bytes, more than lz4 can produce from {} compressed bytes",
            body.len()
        )));
    }
    out.resize(declared, 0);
    let written = lz4_flex::block::decompress_into(body, out).map_err(|e| failed(e.to_string()))?;
    if written != declared {
        return Err(failed(format!(
            "size prefix declares {declared} bytes but the data decompresses to {written}"
        )));
    }
    Ok(())
}

thread_local! {
    /// One zstd decompression context per thread: creating one allocates its
    /// workspace, which would otherwise be paid for every batch.
    static ZSTD_CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn decompress_zstd(section: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let codec = Compression::Zstd;
    let failed = |e: std::io::Error| BatchError::Decompression {
        codec,
        reason: e.to_string(),
    };
    let Some(declared) = zstd_declared_size(section)? else {
        return decompress_zstd_streaming(section, out);
    };
    // Every frame declares its size and the sum is within the limit: decompress
    // in one call into exactly that much room. zstd checks each frame's output
    // against its declared size, so a lying header fails rather than overflows.
    out.reserve_exact(declared);
    ZSTD_CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        let decompressor = match context.as_mut() {
            Some(decompressor) => decompressor,
            None => context.insert(zstd::bulk::Decompressor::new().map_err(failed)?),
        };
        decompressor
            .decompress_to_buffer(section, out)
            .map_err(failed)
    })?;
    if out.len() != declared {
        return Err(BatchError::Decompression {
            codec,
            reason: format!(
                "frames declare {declared} bytes but decompress to {}",
                out.len()
            ),
        });
    }
    Ok(())
}

/// The decompressed size the section's frames declare in their headers, summed;
/// `None` if a frame leaves it out (zstd's streaming compressor may). Refuses a
/// sum over [`MAX_DECOMPRESSED_BYTES`] before anything is allocated for it.
fn zstd_declared_size(section: &[u8]) -> Result<Option<usize>, BatchError> {
    let codec = Compression::Zstd;
    let corrupt = |reason: String| BatchError::Decompression { codec, reason };
    let mut total: usize = 0;
    let mut rest = section;
    // Each frame takes at least one byte, so this ends within section.len() rounds.
    while !rest.is_empty() {
        let size = zstd::zstd_safe::get_frame_content_size(rest)
            .map_err(|_| corrupt("a frame header is malformed".to_owned()))?;
        let Some(size) = size else {
            return Ok(None);
        };
        total = total.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
        if total > MAX_DECOMPRESSED_BYTES {
            return Err(BatchError::DecompressedTooLarge {
                codec,
                size: total,
                max: MAX_DECOMPRESSED_BYTES,
            });
        }
        let frame_len = zstd::zstd_safe::find_frame_compressed_size(rest)
            .map_err(|code| corrupt(zstd::zstd_safe::get_error_name(code).to_owned()))?;
        if frame_len == 0 || frame_len > rest.len() {
            return Err(corrupt(format!(
                "a frame claims {frame_len} bytes where {} remain",
                rest.len()
            )));
        }
        rest = rest.get(frame_len..).unwrap_or_default();
    }
    Ok(Some(total))
}

/// Frames without a declared size: read with a hard cap on the output and on the
/// window a frame may ask for.
fn decompress_zstd_streaming(section: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let codec = Compression::Zstd;
    let failed = |e: std::io::Error| BatchError::Decompression {
        codec,
        reason: e.to_string(),
    };
    let mut decoder = zstd::stream::read::Decoder::with_buffer(section).map_err(failed)?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(failed)?;
    // Read one byte past the limit so "exactly at the limit" and "over it" differ.
    decoder
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(out)
        .map_err(failed)?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(BatchError::DecompressedTooLarge {
            codec,
            size: out.len(),
            max: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

    #[test]
    fn ids_names_round_trip() {
        for codec in ALL {
            assert_eq!(Compression::from_id(codec.id()), Ok(codec));
            assert_eq!(Compression::try_from(codec.id()), Ok(codec));
            assert_eq!(codec.to_string().parse::<Compression>(), Ok(codec));
        }
        assert_eq!(
            Compression::from_id(3),
            Err(BatchError::UnknownCompression(3))
        );
        assert_eq!(Compression::default(), Compression::None);
        let err = "gzip".parse::<Compression>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown compression codec \"gzip\" (expected \"none\", \"lz4\" or \"zstd\")"
        );
    }

    #[test]
    fn the_size_bound_comes_from_headers_and_never_passes_the_limit() {
        use crate::{BatchOptions, NewRecord, encode_batch};
        let records: Vec<NewRecord> = (0..100)
            .map(|i| NewRecord {
                timestamp: 1,
                value: Some(Bytes::from(format!("value-{i}").repeat(20))),
                ..NewRecord::default()
            })
            .collect();
        let plain = encode_batch(&records, BatchOptions::default()).unwrap();
        assert_eq!(decompressed_size_bound(&plain), 0);
        let section = plain.len() - crate::HEADER_LEN;
        for codec in [Compression::Lz4, Compression::Zstd] {
            let options = BatchOptions {
                compression: codec,
                ..BatchOptions::default()
            };
            let packed = encode_batch(&records, options).unwrap();
            assert!(packed.len() < plain.len(), "{codec}");
            assert_eq!(decompressed_size_bound(&packed), section, "{codec}");
        }
        // A small zstd frame that declares more than the limit counts as
        // the limit; garbage counts as nothing (validation refuses it).
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_DECOMPRESSED_BYTES + 1], 3).unwrap();
        let mut batch = plain.to_vec();
        batch.truncate(crate::HEADER_LEN);
        batch[17] = Compression::Zstd.id();
        batch.extend_from_slice(&bomb);
        assert_eq!(decompressed_size_bound(&batch), MAX_DECOMPRESSED_BYTES);
        assert_eq!(decompressed_size_bound(&[1, 2, 3]), 0);
    }

    #[test]
    fn round_trips_each_codec() {
        let plain: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in ALL {
            let packed = Bytes::from(compress(codec, &plain).unwrap());
            assert_eq!(decompress(codec, &packed).unwrap(), plain, "{codec}");
        }
    }

    #[test]
    fn lz4_refuses_oversized_declaration_before_allocating() {
        let mut section = ((MAX_DECOMPRESSED_BYTES + 1) as u32).to_le_bytes().to_vec();
        section.extend_from_slice(&[0; 16]);
        let err = decompress(Compression::Lz4, &Bytes::from(section)).unwrap_err();
        assert!(
            matches!(err, BatchError::DecompressedTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn lz4_refuses_impossible_ratio() {
        let mut section = 1_000_000u32.to_le_bytes().to_vec();
        section.extend_from_slice(&[0; 8]);
        let err = decompress(Compression::Lz4, &Bytes::from(section)).unwrap_err();
        assert!(matches!(err, BatchError::Decompression { .. }), "{err}");
    }

    #[test]
    fn lz4_rejects_short_and_lying_prefixes() {
        let err = decompress(Compression::Lz4, &Bytes::from_static(&[1, 0])).unwrap_err();
        assert!(matches!(err, BatchError::Decompression { .. }), "{err}");
        // Declares 100 bytes, actually holds 5.
        let mut section = compress(Compression::Lz4, b"hello").unwrap();
        section.splice(0..4, 100u32.to_le_bytes());
        let err = decompress(Compression::Lz4, &Bytes::from(section)).unwrap_err();
        assert!(matches!(err, BatchError::Decompression { .. }), "{err}");
    }

    #[test]
    fn zstd_rejects_garbage_and_bombs() {
        let err = decompress(Compression::Zstd, &Bytes::from_static(b"not zstd")).unwrap_err();
        assert!(matches!(err, BatchError::Decompression { .. }), "{err}");
        let bomb = compress(Compression::Zstd, &vec![0; MAX_DECOMPRESSED_BYTES + 1]).unwrap();
        let err = decompress(Compression::Zstd, &Bytes::from(bomb)).unwrap_err();
        assert!(
            matches!(err, BatchError::DecompressedTooLarge { .. }),
            "{err}"
        );
    }
}

//! Sequential walks over a segment's batches: the full check recovery runs
//! on the active segment (length, CRC, dense offsets), and the cheaper walk
//! over batch headers that rebuilds the indexes of a sealed segment.
//!
//! Reads go through a window buffer so that a segment of small batches costs
//! a few large reads, not two per batch.

use std::fmt;
use std::io;

use brook_record::{BatchHeader, HEADER_LEN};

use super::index::{OffsetEntry, TimeEntry};
use super::io::{LogFile, read_full_at};

/// Bytes read at a time while scanning.
const WINDOW_BYTES: usize = 1 << 20;

/// Why recovery cut a segment's tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailDamage {
    /// The file ends inside a batch (a write that did not finish).
    Torn { position: u64 },
    /// A batch that is complete but fails its checks.
    Corrupt { position: u64, reason: String },
}

impl fmt::Display for TailDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Torn { position } => write!(f, "torn batch at byte {position}"),
            Self::Corrupt { position, reason } => {
                write!(f, "corrupt batch at byte {position}: {reason}")
            }
        }
    }
}

/// What a walk found: where the good part ends and the indexes for it.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    pub end_position: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub index: Vec<OffsetEntry>,
    pub time_index: Vec<TimeEntry>,
    pub bytes_since_index: u64,
    pub damage: Option<TailDamage>,
    /// A valid batch follows the damaged one: the damage is not a tail.
    pub intact_after_damage: bool,
}

/// Where a walk starts: a batch boundary, the base offset the batch there
/// must have (`None`: whatever it has), and whether the offset index already
/// has an entry for that batch.
#[derive(Debug, Clone, Copy)]
pub struct ScanStart {
    pub position: u64,
    pub expected_offset: Option<i64>,
    pub indexed: bool,
}

impl ScanStart {
    fn segment_start(base_offset: i64) -> Self {
        Self {
            position: 0,
            expected_offset: Some(base_offset),
            indexed: false,
        }
    }
}

pub struct Scanner<'a> {
    file: &'a dyn LogFile,
    file_len: u64,
    window: Vec<u8>,
    /// File position of `window[0]`.
    window_start: u64,
}

impl<'a> Scanner<'a> {
    pub fn new(file: &'a dyn LogFile, file_len: u64) -> Self {
        Self {
            file,
            file_len,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// The `len` bytes at `position`, or `None` when the file is shorter.
    fn bytes(&mut self, position: u64, len: usize) -> io::Result<Option<&[u8]>> {
        if position + len as u64 > self.file_len {
            return Ok(None);
        }
        let inside = position >= self.window_start
            && position + len as u64 <= self.window_start + self.window.len() as u64;
        if !inside {
            let want = len
                .max(WINDOW_BYTES)
                .min((self.file_len - position) as usize);
            self.window.resize(want, 0);
            let n = read_full_at(self.file, &mut self.window, position)?;
            self.window.truncate(n);
            self.window_start = position;
            if n < len {
                return Ok(None);
            }
        }
        let from = (position - self.window_start) as usize;
        Ok(self.window.get(from..from + len))
    }

    /// Checks every batch from the start of the segment: complete, CRC and
    /// structure valid, offsets dense from `base_offset`. Stops at the first
    /// failure and reports it as damage.
    pub fn verify(
        &mut self,
        base_offset: i64,
        index_interval_bytes: u64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<ScanOutcome> {
        self.walk(
            ScanStart::segment_start(base_offset),
            base_offset,
            index_interval_bytes,
            true,
            visit,
        )
    }

    /// Like `verify`, from a batch the segment's offset index already
    /// names (`start`) to the end of the file. The outcome's index entries
    /// are the ones after `start`'s.
    pub fn verify_from(
        &mut self,
        start: ScanStart,
        base_offset: i64,
        index_interval_bytes: u64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<ScanOutcome> {
        self.walk(start, base_offset, index_interval_bytes, true, visit)
    }

    /// Walks batch headers from `position` (a batch boundary) without
    /// checking CRCs, rebuilding index entries on the way.
    pub fn walk_headers(
        &mut self,
        position: u64,
        base_offset: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<ScanOutcome> {
        let start = if position == 0 {
            ScanStart::segment_start(base_offset)
        } else {
            ScanStart {
                position,
                expected_offset: None,
                indexed: false,
            }
        };
        self.walk(
            start,
            base_offset,
            super::DEFAULT_INDEX_INTERVAL_BYTES,
            false,
            visit,
        )
    }

    fn walk(
        &mut self,
        start: ScanStart,
        base_offset: i64,
        index_interval_bytes: u64,
        verify: bool,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> io::Result<ScanOutcome> {
        let mut position = start.position;
        let mut out = ScanOutcome {
            end_position: position,
            next_offset: start.expected_offset.unwrap_or(base_offset),
            max_timestamp: i64::MIN,
            ..ScanOutcome::default()
        };
        let mut expected_offset = start.expected_offset;
        while position < self.file_len {
            let header = match self.check_batch(position, expected_offset, verify)? {
                Ok(header) => header,
                Err(damage) => {
                    out.intact_after_damage = self.intact_batch_follows(&damage)?;
                    out.damage = Some(damage);
                    break;
                }
            };
            visit(&header);
            let len = header.total_len();
            let relative_offset =
                u32::try_from(header.base_offset - base_offset).unwrap_or(u32::MAX);
            out.max_timestamp = out.max_timestamp.max(header.max_timestamp);
            // The first batch of a segment always gets an index entry; the
            // batch a walk starts at gets none when the index names it.
            let wants_entry = if position == start.position && start.indexed {
                false
            } else {
                position == 0 || out.bytes_since_index >= index_interval_bytes
            };
            if wants_entry {
                out.index.push(OffsetEntry {
                    relative_offset,
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                });
                out.bytes_since_index = 0;
                // The time index is as sparse as the offset index: each entry
                // holds the largest timestamp up to its batch.
                if out
                    .time_index
                    .last()
                    .is_none_or(|t| out.max_timestamp > t.timestamp)
                {
                    out.time_index.push(TimeEntry {
                        timestamp: out.max_timestamp,
                        relative_offset,
                    });
                }
            }
            out.bytes_since_index += len as u64;
            out.next_offset = header.last_offset() + 1;
            expected_offset = Some(out.next_offset);
            position += len as u64;
            out.end_position = position;
        }
        Ok(out)
    }

    /// The header of the batch at `position` if the batch is complete,
    /// (with `verify`) valid, and has the expected base offset.
    fn check_batch(
        &mut self,
        position: u64,
        expected_offset: Option<i64>,
        verify: bool,
    ) -> io::Result<Result<BatchHeader, TailDamage>> {
        let corrupt = |reason: String| Err(TailDamage::Corrupt { position, reason });
        let Some(prefix) = self.bytes(position, HEADER_LEN)? else {
            return Ok(Err(TailDamage::Torn { position }));
        };
        let header = match BatchHeader::parse(prefix) {
            Ok(h) => h,
            Err(e) => return Ok(corrupt(e.to_string())),
        };
        let len = header.total_len();
        if len < HEADER_LEN {
            return Ok(corrupt(format!(
                "batch length {len} is shorter than a header"
            )));
        }
        let Some(batch) = self.bytes(position, len)? else {
            return Ok(Err(TailDamage::Torn { position }));
        };
        if verify && let Err(e) = brook_record::validate_batch(batch, usize::MAX) {
            return Ok(corrupt(e.to_string()));
        }
        if let Some(expected) = expected_offset
            && header.base_offset != expected
        {
            return Ok(corrupt(format!(
                "base offset {} where {expected} was expected",
                header.base_offset
            )));
        }
        Ok(Ok(header))
    }

    /// Whether a valid batch follows a corrupt one: then the damage is in
    /// the middle of the segment, not at its tail.
    fn intact_batch_follows(&mut self, damage: &TailDamage) -> io::Result<bool> {
        let TailDamage::Corrupt { position, .. } = damage else {
            return Ok(false);
        };
        let Some(prefix) = self.bytes(*position, brook_record::LENGTH_PREFIX_LEN)? else {
            return Ok(false);
        };
        let Some(len) = brook_record::batch_total_len(prefix) else {
            return Ok(false);
        };
        let next = position + len as u64;
        if len < HEADER_LEN || next >= self.file_len {
            return Ok(false);
        }
        Ok(self.check_batch(next, None, true)?.is_ok())
    }
}

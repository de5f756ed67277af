//! Idempotent producers' sequence numbers for one partition: which batch
//! each producer appended last, so that a retried batch is recognised and
//! answered with its original offset instead of being appended twice, and
//! a gap in the sequence is refused.
//!
//! The state is derived from the batch headers in the log (producer id,
//! epoch, base sequence, record count), so recovery rebuilds it by walking
//! headers; a snapshot written at every segment roll means that only the
//! active segment has to be walked.
//!
//! Invariant: for each producer, `last_sequence` is the last sequence of the
//! last batch appended, and `recent` holds up to `RECENT_BATCHES` of its
//! latest batches, oldest first.

use std::collections::{HashMap, VecDeque};

use brook_record::BatchHeader;
use serde::{Deserialize, Serialize};

/// Batches per producer remembered for answering retries: the protocol's
/// sequence window, which clients keep their in-flight batches within.
const RECENT_BATCHES: usize = brook_record::protocol::SEQUENCE_WINDOW;
/// Producers remembered per partition; beyond it the least recently active
/// is forgotten (its next batch must start a new epoch or sequence 0).
pub const PRODUCERS_MAX: usize = 10_000;

/// Why a batch of an idempotent producer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SequenceError {
    #[error(
        "out of order sequence for producer_id {producer_id}: expected base_sequence {expected}, got {got}"
    )]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer_id {producer_id} epoch {epoch} is older than epoch {current} already appended"
    )]
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next in its producer's sequence: append it.
    Append,
    /// A retry of a batch already appended at `base_offset`.
    Duplicate { base_offset: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RecentBatch {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    last_sequence: i32,
    /// Offset of the producer's last batch, for evicting the least recent.
    last_offset: i64,
    recent: VecDeque<RecentBatch>,
}

/// The sequence state of every producer that appended to a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_sequence(header: &BatchHeader) -> i32 {
    // Sequences wrap around like Kafka's.
    header
        .base_sequence
        .wrapping_add(i32::try_from(header.last_offset_delta).unwrap_or(i32::MAX))
}

impl ProducerState {
    /// Decides whether a batch is appended, answered as a duplicate, or refused.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return first_of_epoch(header);
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            return first_of_epoch(header);
        }
        if let Some(original) = entry.recent.iter().find(|b| {
            b.base_sequence == header.base_sequence && b.last_sequence == last_sequence(header)
        }) {
            return Ok(SequenceCheck::Duplicate {
                base_offset: original.base_offset,
            });
        }
        let expected = entry.last_sequence.wrapping_add(1);
        if header.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                expected,
                got: header.base_sequence,
            })
        }
    }

    /// Remembers a batch that was appended at `base_offset`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        if header.producer_id < 0 {
            return;
        }
        let batch = RecentBatch {
            base_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset,
        };
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                last_sequence: batch.last_sequence,
                last_offset: base_offset,
                recent: VecDeque::with_capacity(RECENT_BATCHES),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.recent.clear();
        }
        entry.last_sequence = batch.last_sequence;
        entry.last_offset = base_offset;
        if entry.recent.len() == RECENT_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(batch);
        if self.producers.len() > PRODUCERS_MAX {
            self.forget_least_recent();
        }
    }

    fn forget_least_recent(&mut self) {
        if let Some(oldest) = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_offset)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&oldest);
        }
    }
}

/// A producer's first batch (of a new epoch) must start at sequence 0.
fn first_of_epoch(header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
    if header.base_sequence == 0 {
        Ok(SequenceCheck::Append)
    } else {
        Err(SequenceError::OutOfOrder {
            producer_id: header.producer_id,
            expected: 0,
            got: header.base_sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_record::{BatchOptions, NewRecord};

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: usize) -> BatchHeader {
        let records = vec![NewRecord::default(); records];
        let batch = brook_record::encode_batch(
            &records,
            BatchOptions {
                producer_id,
                producer_epoch: epoch,
                base_sequence,
                ..BatchOptions::default()
            },
        )
        .unwrap();
        BatchHeader::parse(&batch).unwrap()
    }

    #[test]
    fn sequences_advance_and_retries_are_recognised() {
        let mut state = ProducerState::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(state.check(&first), Ok(SequenceCheck::Append));
        state.record(&first, 100);
        let second = header(7, 0, 3, 2);
        assert_eq!(state.check(&second), Ok(SequenceCheck::Append));
        state.record(&second, 103);
        assert_eq!(
            state.check(&first),
            Ok(SequenceCheck::Duplicate { base_offset: 100 })
        );
        assert_eq!(
            state.check(&second),
            Ok(SequenceCheck::Duplicate { base_offset: 103 })
        );
        assert_eq!(
            state.check(&header(7, 0, 9, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 5,
                got: 9
            })
        );
    }

    #[test]
    fn a_new_producer_or_epoch_starts_at_zero_and_old_epochs_are_refused() {
        let mut state = ProducerState::default();
        assert!(state.check(&header(1, 0, 4, 1)).is_err());
        state.record(&header(1, 0, 0, 1), 0);
        assert_eq!(state.check(&header(1, 1, 0, 1)), Ok(SequenceCheck::Append));
        state.record(&header(1, 1, 0, 1), 1);
        assert!(matches!(
            state.check(&header(1, 0, 1, 1)),
            Err(SequenceError::StaleEpoch { current: 1, .. })
        ));
        assert_eq!(
            state.check(&header(-1, -1, -1, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_recent_batches_are_remembered() {
        let mut state = ProducerState::default();
        for i in 0..10 {
            let h = header(3, 0, i, 1);
            state.record(&h, i64::from(i));
        }
        assert_eq!(
            state.check(&header(3, 0, 9, 1)),
            Ok(SequenceCheck::Duplicate { base_offset: 9 })
        );
        assert!(state.check(&header(3, 0, 2, 1)).is_err());
    }
}

/// Snapshot files: `<offset>.producers`, the state of every producer after
/// the batches below `offset`, written at each segment roll. The first line
/// is the CRC-32 of the JSON that follows, so a torn snapshot is skipped.
pub mod snapshot {
    use std::path::{Path, PathBuf};

    use super::ProducerState;
    use crate::checked_json;
    use crate::error::LogError;
    use crate::io::Storage;

    const SUFFIX: &str = ".producers";
    /// Snapshots kept; older ones are removed after a new one is durable.
    const KEPT: usize = 2;

    fn path(dir: &Path, offset: i64) -> PathBuf {
        dir.join(format!("{offset:020}{SUFFIX}"))
    }

    fn offsets(storage: &dyn Storage, dir: &Path) -> Result<Vec<i64>, LogError> {
        let mut offsets: Vec<i64> = storage
            .list_files(dir)
            .map_err(|e| LogError::io("list", dir, e))?
            .iter()
            .filter_map(|name| name.strip_suffix(SUFFIX)?.parse().ok())
            .collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Writes the state as of `offset` durably, then drops older snapshots.
    pub fn write(
        storage: &dyn Storage,
        dir: &Path,
        offset: i64,
        state: &ProducerState,
    ) -> Result<(), LogError> {
        checked_json::write(storage, &path(dir, offset), state)?;
        let all = offsets(storage, dir)?;
        for old in all.iter().take(all.len().saturating_sub(KEPT)) {
            let old_path = self::path(dir, *old);
            storage
                .remove_file(&old_path)
                .map_err(|e| LogError::io("remove", &old_path, e))?;
        }
        Ok(())
    }

    /// Removes every snapshot (the log's records are gone).
    pub fn remove_all(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
        for offset in offsets(storage, dir)? {
            let old_path = self::path(dir, offset);
            storage
                .remove_file(&old_path)
                .map_err(|e| LogError::io("remove", &old_path, e))?;
        }
        Ok(())
    }

    /// The newest intact snapshot at or below `max_offset`.
    pub fn load_latest(
        storage: &dyn Storage,
        dir: &Path,
        max_offset: i64,
    ) -> Result<Option<(i64, ProducerState)>, LogError> {
        for offset in offsets(storage, dir)?.into_iter().rev() {
            if offset > max_offset {
                continue;
            }
            let path = path(dir, offset);
            if let Some(state) = checked_json::read(storage, &path)? {
                return Ok(Some((offset, state)));
            }
            tracing::warn!(path = %path.display(), "producer snapshot damaged; trying an older one");
        }
        Ok(None)
    }
}

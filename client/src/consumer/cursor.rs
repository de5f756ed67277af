//! The state the consumer's stream and its fetcher share: which partitions
//! are assigned, where each is fetched from, and the position of the records
//! handed out.
//!
//! Invariants: a partition's epoch grows on every seek, and a
//! fetched part is handed out only while its partition's epoch is the one it
//! was fetched under, so no record fetched before a seek leaks out after it.
//! Locks here are never held across an `.await`; the assignment lock is
//! taken before a cursor lock, never the other way round.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Where the fetcher reads a partition next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchFrom {
    /// No offset yet: the fetcher resolves one by `auto_offset_reset`.
    Unresolved,
    /// The next offset to fetch.
    At(i64),
    /// Not fetched until the next seek (after an error the stream reported).
    Parked,
}

/// One partition's positions.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// Bumped by every seek and reset; parts fetched under an older epoch are dropped.
    pub epoch: u64,
    pub fetch: FetchFrom,
    /// The offset of the next record to hand out; `None` until resolved.
    pub position: Option<i64>,
    /// False once the partition is unassigned: its queued parts are dropped.
    pub assigned: bool,
}

/// An assigned partition.
#[derive(Debug)]
pub(crate) struct PartitionCell {
    pub topic: Arc<str>,
    pub partition: u32,
    /// Taken per record handed out (uncontended but for a seek), never across an await.
    pub cursor: Mutex<Cursor>,
}

impl PartitionCell {
    /// Moves the partition to `offset` under a new epoch: parts fetched
    /// before are dropped, the next record handed out is at or after `offset`.
    pub fn seek(&self, offset: i64) {
        let mut cursor = self.cursor.lock();
        cursor.epoch += 1;
        cursor.fetch = FetchFrom::At(offset);
        cursor.position = Some(offset);
    }
}

/// The assigned partitions, by topic and partition.
pub(crate) type Assignment = HashMap<Arc<str>, HashMap<u32, Arc<PartitionCell>>>;

/// Everything the consumer and its fetcher task share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The assigned partitions by topic. Held only to look up or replace cells.
    pub assignment: Mutex<Assignment>,
    /// Counts changes of the assignment and of fetch offsets: each of the
    /// fetcher's lanes (and the fetcher) watches it, so a long poll for
    /// stale offsets is abandoned, and a change made while a lane was not
    /// waiting is seen when it next waits.
    pub changed: watch::Sender<u64>,
    /// One permit per chunk fetched and not yet fully handed out (including
    /// the fetch in flight): the prefetch bound.
    pub slots: Arc<Semaphore>,
    /// Chunks queued or being handed out, and the most there ever were.
    pub buffered: AtomicUsize,
    pub buffered_max: AtomicUsize,
}

impl Shared {
    pub fn new(prefetch: usize) -> Self {
        Self {
            assignment: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            slots: Arc::new(Semaphore::new(prefetch)),
            buffered: AtomicUsize::new(0),
            buffered_max: AtomicUsize::new(0),
        }
    }

    pub fn cell(&self, topic: &str, partition: u32) -> Option<Arc<PartitionCell>> {
        self.assignment.lock().get(topic)?.get(&partition).cloned()
    }

    /// Every assigned partition, in a stable order (topic, then partition).
    pub fn cells(&self) -> Vec<Arc<PartitionCell>> {
        let assignment = self.assignment.lock();
        let mut cells: Vec<_> = assignment
            .values()
            .flat_map(|partitions| partitions.values().cloned())
            .collect();
        cells.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        cells
    }

    /// Makes `partitions` the assignment: cells of partitions kept stay as
    /// they are, new ones start unresolved, dropped ones are marked unassigned.
    pub fn assign(&self, partitions: &[(&str, u32)]) {
        let mut assignment = self.assignment.lock();
        let mut next = Assignment::new();
        for &(topic, partition) in partitions {
            let cell = assignment
                .get(topic)
                .and_then(|p| p.get(&partition))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(PartitionCell {
                        topic: Arc::from(topic),
                        partition,
                        cursor: Mutex::new(Cursor {
                            epoch: 0,
                            fetch: FetchFrom::Unresolved,
                            position: None,
                            assigned: true,
                        }),
                    })
                });
            next.entry(cell.topic.clone())
                .or_default()
                .insert(partition, cell);
        }
        for (topic, partitions) in assignment.iter() {
            for (partition, cell) in partitions {
                if !next.get(topic).is_some_and(|p| p.contains_key(partition)) {
                    cell.cursor.lock().assigned = false;
                }
            }
        }
        *assignment = next;
        drop(assignment);
        self.note_change();
    }

    /// Tells the fetcher the assignment or a fetch offset changed.
    pub fn note_change(&self) {
        self.changed
            .send_modify(|changes| *changes = changes.wrapping_add(1));
    }

    /// A slot for one more chunk was taken: count it as buffered.
    pub fn chunk_buffered(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> ChunkSlot {
        let now = self.buffered.fetch_add(1, Ordering::AcqRel) + 1;
        self.buffered_max.fetch_max(now, Ordering::AcqRel);
        ChunkSlot {
            shared: self.clone(),
            _permit: permit,
        }
    }
}

/// A chunk's claim on the prefetch bound; released when the chunk is dropped
/// (fully handed out, or discarded).
#[derive(Debug)]
pub(crate) struct ChunkSlot {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ChunkSlot {
    fn drop(&mut self) {
        self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
    }
}

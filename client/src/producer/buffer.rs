//! The producer's buffer memory: bytes of records accepted and not yet
//! answered, bounded by `buffer_memory`.
//!
//! A record reserves its size when it is accepted; the reservation joins
//! its batch's [`Lease`], which gives the bytes back when the batch is
//! answered (or dropped). Reserving is one atomic operation while there is
//! room; only a caller that finds the buffer full waits.
//!
//! Invariant: every byte reserved is given back exactly once, however the
//! record ends (answered, failed, or its caller gone mid-way).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

#[derive(Debug)]
pub(crate) struct BufferMemory {
    /// One permit per free byte. Permits taken are forgotten and added
    /// back on release, so no permit object (and no `Arc`) per record.
    free: Semaphore,
    capacity: usize,
    /// The most bytes ever held at once.
    peak: AtomicUsize,
    /// Callers waiting for room: the sender then sends lingering batches
    /// at once, since waiting for their linger would only keep the buffer full.
    waiting: AtomicUsize,
}

impl BufferMemory {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            free: Semaphore::new(capacity),
            capacity,
            peak: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Reserves `bytes` if there is room now.
    pub(crate) fn try_reserve(&self, bytes: u32) -> Option<Reservation<'_>> {
        let permit = self.free.try_acquire_many(bytes).ok()?;
        Some(self.reserved(permit))
    }

    /// Reserves `bytes`, waiting for room; `on_wait` runs once the caller
    /// is counted as waiting (so whoever frees room can see it).
    pub(crate) async fn reserve(&self, bytes: u32, on_wait: impl FnOnce()) -> Reservation<'_> {
        if let Some(reservation) = self.try_reserve(bytes) {
            return reservation;
        }
        let _waiting = Waiting::count(&self.waiting);
        on_wait();
        let permit = self
            .free
            .acquire_many(bytes)
            .await
            .expect("the buffer's semaphore is never closed");
        self.reserved(permit)
    }

    /// Turns acquired permits into a reservation of as many bytes.
    fn reserved(&self, permit: SemaphorePermit<'_>) -> Reservation<'_> {
        let bytes = permit.num_permits();
        permit.forget();
        self.note_peak();
        Reservation {
            buffer: self,
            bytes,
        }
    }

    /// Whether a caller waits for room.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.capacity - self.free.available_permits()
    }

    /// The most bytes ever held at once.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn note_peak(&self) {
        self.peak.fetch_max(self.held(), Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.free.add_permits(bytes);
        }
    }
}

/// Counts a waiting caller for as long as it waits (a dropped `enqueue`
/// future included).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes reserved for one record not yet in a batch; given back when
/// dropped (the record was refused after all, or its caller went away).
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    buffer: &'a BufferMemory,
    bytes: usize,
}

impl Reservation<'_> {
    /// Moves the bytes into `lease`.
    pub(crate) fn join(mut self, lease: &mut Lease) {
        lease.bytes += std::mem::take(&mut self.bytes);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.buffer.release(self.bytes);
    }
}

/// The bytes of one batch's records; given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    buffer: Arc<BufferMemory>,
    bytes: usize,
}

impl Lease {
    pub(crate) fn new(buffer: Arc<BufferMemory>) -> Self {
        Self { buffer, bytes: 0 }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.buffer.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reservations_come_back_through_their_lease_or_when_dropped() {
        let buffer = Arc::new(BufferMemory::new(100));
        let mut lease = Lease::new(buffer.clone());
        buffer.try_reserve(30).unwrap().join(&mut lease);
        buffer.try_reserve(50).unwrap().join(&mut lease);
        assert_eq!(buffer.held(), 80);
        assert!(buffer.try_reserve(30).is_none(), "only 20 free");
        drop(buffer.try_reserve(20).unwrap());
        assert_eq!(
            buffer.held(),
            80,
            "a dropped reservation gives its bytes back"
        );
        drop(lease);
        assert_eq!(buffer.held(), 0);
        assert_eq!(buffer.peak(), 100);
    }

    #[tokio::test]
    async fn a_waiting_caller_is_counted_and_served_when_room_comes_back() {
        let buffer = Arc::new(BufferMemory::new(10));
        let mut lease = Lease::new(buffer.clone());
        buffer.try_reserve(10).unwrap().join(&mut lease);
        let waiter = {
            let buffer = buffer.clone();
            tokio::spawn(async move { buffer.reserve(4, || {}).await.bytes })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while !buffer.has_waiters() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        drop(lease);
        assert_eq!(waiter.await.unwrap(), 4);
        assert!(!buffer.has_waiters());
        assert_eq!(
            buffer.held(),
            0,
            "the reservation was dropped with the task"
        );
    }
}

//! Which partition a record goes to.
//!
//! * A record that names a partition goes there.
//! * A keyed record goes to `fnv1a32(key) % partition_count`, where
//!   `fnv1a32` is 32-bit FNV-1a over the key's bytes: start from
//!   `0x811c9dc5`; for each byte, XOR it into the hash, then multiply by
//!   `0x01000193` modulo 2^32. This is what `brook produce` does, so the
//!   same key lands on the same partition from any Brook client; other
//!   languages match it with the same three lines.
//! * A keyless record sticks to one partition until a batch for that
//!   partition is closed, then moves to the next one (round robin per
//!   batch): full batches, few requests, and an even spread over time.
//!
//! Invariant: the choice for a keyed record depends on nothing but the key
//! and the partition count.

/// 32-bit FNV-1a of `bytes`: the hash that picks a keyed record's partition.
///
/// ```
/// assert_eq!(brook_client::fnv1a32(b""), 0x811c_9dc5);
/// assert_eq!(brook_client::fnv1a32(b"foobar"), 0xbf9c_f968);
/// ```
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of a keyed record among `partition_count`.
pub(crate) fn keyed_partition(key: &[u8], partition_count: u32) -> u32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    fnv1a32(key) % partition_count
}

/// Where a record should go, as decided when it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Named by the record, or its key's hash.
    Partition(u32),
    /// Keyless: the topic's sticky partition among `partition_count`.
    Sticky { partition_count: u32 },
}

/// One topic's sticky partition, kept beside its open batches (where it
/// is known when a batch closes).
#[derive(Debug, Default)]
pub(crate) struct Sticky {
    /// The current sticky partition and the partition count it was
    /// chosen among; `None` until the first keyless record.
    current: Option<(u32, u32)>,
}

impl Sticky {
    /// The partition for a keyless record. A topic starts at a random
    /// partition, so producers started together spread out.
    pub(crate) fn partition(&mut self, partition_count: u32) -> u32 {
        assert!(partition_count > 0, "a topic has at least one partition");
        let (current, count) = self
            .current
            .get_or_insert_with(|| (rand::random_range(0..partition_count), partition_count));
        // The topic may have grown since.
        *current %= partition_count;
        *count = partition_count;
        *current
    }

    /// A batch of `partition` was closed: keyless records move on if they
    /// were sticking to it.
    pub(crate) fn batch_closed(&mut self, partition: u32) {
        if let Some((current, count)) = &mut self.current
            && *current == partition
        {
            *current = (partition + 1) % *count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn keyed_records_map_by_hash_modulo_count() {
        assert_eq!(keyed_partition(b"a", 8), 0xe40c_292c % 8);
        assert_eq!(keyed_partition(b"foobar", 3), 0xbf9c_f968 % 3);
    }

    #[test]
    fn sticky_moves_on_when_its_batch_closes() {
        let mut sticky = Sticky::default();
        let first = sticky.partition(3);
        assert_eq!(sticky.partition(3), first);
        sticky.batch_closed((first + 1) % 3);
        assert_eq!(sticky.partition(3), first, "another partition closed");
        sticky.batch_closed(first);
        assert_eq!(sticky.partition(3), (first + 1) % 3);
        assert!(sticky.partition(1) == 0, "the topic shrank in the cache");
    }
}

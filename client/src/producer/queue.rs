//! One partition's closed batches, in sequence order, and the rules for
//! which may be sent, retried or given up.
//!
//! Rules:
//! * Batches are sent in queue order: a batch goes out only when every
//!   batch before it is in flight or acknowledged, so sequence numbers
//!   (stamped at the first send) follow the queue.
//! * Only the first `window` batches may have been sent: 5 with
//!   idempotence (the broker remembers a producer's last 5 batches per
//!   partition, so a retry of any of them is recognised as a duplicate),
//!   1 without (one batch in flight, so a retry cannot overtake a later one).
//! * A retriable failure sends the same bytes again after a backoff, before
//!   any later batch that is not already in flight.
//! * An out-of-order answer for a batch sent while an earlier one was
//!   unacknowledged holds it until it is the oldest; an out-of-order
//!   answer for the oldest batch means a batch before it is lost for good
//!   (it expired or failed): the partition then starts a new sequence
//!   under a fresh producer id, once nothing of it is in flight.
//! * A `duplicate` answer is a success with the original offset.
//! * A definite refusal (the broker validated the batch and said no, so
//!   it cannot have been appended) of the newest stamped batch hands its
//!   sequence numbers back: the next batch takes them, and no gap forms.
//!   A timeout or an internal error may hide an append, so it never does.
//! * A batch of a request refused as a whole is sent again alone, so the
//!   refusal lands on the batch that caused it.
//!
//! Invariant: acknowledged batches leave the queue from the front; one in
//! the middle stays (as `Acked`) until every batch before it is answered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::batch::{Batch, BatchState, Identity};
use super::error::{
    Failure, classify, delivery_timed_out, is_definite_refusal, is_unknown_partition,
};
use crate::error::ClientError;
use crate::produce::ProduceAck;
use crate::resilience::Backoff;

/// Batches per partition sent and not all acknowledged, with idempotence:
/// the protocol's sequence window (how many of a producer's batches the
/// broker remembers per partition to answer retries).
pub(crate) const IDEMPOTENT_WINDOW: usize = brook_record::protocol::SEQUENCE_WINDOW;

/// How soon a batch refused by a broker that knows no leader for its
/// partition (an election under way) is sent again.
const NOT_LEADER_RETRY: Duration = Duration::from_millis(50);

/// What the sender must do after an answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done,
    /// The cached partition count of the topic may be wrong.
    RefreshMetadata,
    /// The producer identity was refused: fail everything.
    Fenced(ClientError),
}

/// Timing the queue's decisions need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) now: Instant,
    pub(crate) backoff: Backoff,
    pub(crate) delivery_timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct PartitionQueue {
    /// The topic's name, shared by the requests of every batch.
    topic: Bytes,
    batches: VecDeque<Batch>,
    idempotent: bool,
    window: usize,
    /// The identity batches are stamped with; `None` until assigned.
    identity: Option<Identity>,
    /// Whether the partition must not share the producer's default
    /// identity (its sequence under that one is broken).
    needs_fresh_identity: bool,
    /// A sequence gap was found: nothing is sent until the in-flight
    /// batches are back and the queue is restamped.
    resetting: bool,
    next_sequence: i32,
    /// When a batch was last queued or answered: how long the queue has
    /// been idle, for the sender's eviction.
    last_active: Instant,
}

impl PartitionQueue {
    pub(crate) fn new(topic: &str, idempotent: bool, now: Instant) -> Self {
        Self {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            batches: VecDeque::new(),
            idempotent,
            window: if idempotent { IDEMPOTENT_WINDOW } else { 1 },
            identity: None,
            needs_fresh_identity: false,
            resetting: false,
            next_sequence: 0,
            last_active: now,
        }
    }

    /// The topic's name, for the requests (a cheap clone: shared bytes).
    pub(crate) fn topic(&self) -> &Bytes {
        &self.topic
    }

    pub(crate) fn push(&mut self, batch: Batch, now: Instant) {
        debug_assert!(self.batches.back().is_none_or(|last| last.id < batch.id));
        self.batches.push_back(batch);
        self.last_active = now;
    }

    /// Whether the queue remembers something a fresh queue would not:
    /// sequence numbers used under an identity (the broker expects the
    /// next one), or a broken sequence under the default identity.
    pub(crate) fn holds_sequence_state(&self) -> bool {
        self.idempotent && (self.next_sequence != 0 || self.needs_fresh_identity || self.resetting)
    }

    /// When a batch was last queued or answered.
    pub(crate) fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Whether no batch waits for an answer.
    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.batches
            .iter()
            .take(self.window)
            .filter(|b| b.state == BatchState::InFlight)
            .count()
    }

    /// Whether the partition's open batch should close now to be sent:
    /// every queued batch is already sent, and the window has room for
    /// one more. Otherwise the open batch keeps filling while it waits.
    pub(crate) fn wants_batch(&self) -> bool {
        self.batches.len() < self.window
            && self
                .batches
                .iter()
                .all(|b| matches!(b.state, BatchState::InFlight | BatchState::Acked))
    }

    /// The smallest id of a batch not yet answered.
    pub(crate) fn oldest_unanswered(&self) -> Option<u64> {
        self.batches
            .iter()
            .find(|b| b.state != BatchState::Acked)
            .map(|b| b.id)
    }

    /// Whether the queue waits for an identity: `Some(fresh)` when it does,
    /// `fresh` telling whether the producer's default one will not do.
    pub(crate) fn wants_identity(&self) -> Option<bool> {
        (self.idempotent && self.identity.is_none() && !self.resetting && !self.is_empty())
            .then_some(self.needs_fresh_identity)
    }

    pub(crate) fn assign_identity(&mut self, identity: Identity) {
        assert!(self.identity.is_none() && self.next_sequence == 0);
        self.identity = Some(identity);
        self.needs_fresh_identity = false;
    }

    /// Whether the batch at `index` was sent before.
    pub(crate) fn was_sent(&self, index: usize) -> bool {
        self.batches[index].attempts > 0
    }

    /// The encoded size of the batch at `index`.
    pub(crate) fn batch_len(&self, index: usize) -> usize {
        self.batches[index].bytes.len()
    }

    /// Whether the batch at `index` must be the only one of its request.
    pub(crate) fn goes_alone(&self, index: usize) -> bool {
        self.batches[index].alone
    }

    /// Batch `id` was part of a request refused as a whole: nothing of it
    /// was appended (the broker validates every batch before appending
    /// any), so it is sent again now, in a request of its own.
    pub(crate) fn send_alone(&mut self, id: u64, now: Instant) {
        // A batch failed meanwhile (the producer was fenced) is gone.
        let Some(batch) = self.batches.iter_mut().find(|b| b.id == id) else {
            return;
        };
        assert_eq!(
            batch.state,
            BatchState::InFlight,
            "answers come for sent batches"
        );
        batch.state = BatchState::Ready { not_before: now };
        batch.alone = true;
        self.last_active = now;
    }

    /// The index of the batch to send now, if any.
    pub(crate) fn sendable(&self, now: Instant) -> Option<usize> {
        if self.resetting || (self.idempotent && self.identity.is_none()) {
            return None;
        }
        for (index, batch) in self.batches.iter().enumerate().take(self.window) {
            match batch.state {
                BatchState::InFlight | BatchState::Acked => {}
                BatchState::Ready { not_before } => return (not_before <= now).then_some(index),
                BatchState::Held => return (index == 0).then_some(index),
            }
        }
        None
    }

    /// Marks the batch at `index` in flight (stamping it on its first send
    /// under the current identity): its id, bytes and deadline.
    pub(crate) fn start_attempt(&mut self, index: usize) -> (u64, Bytes, Instant) {
        let identity = self.identity;
        let next_sequence = &mut self.next_sequence;
        let batch = &mut self.batches[index];
        if self.idempotent && batch.stamp.is_none() {
            let identity = identity.expect("sendable checks the identity");
            batch.stamp(identity, *next_sequence);
            let count =
                i32::try_from(batch.record_count()).expect("batches hold at most 1e6 records");
            *next_sequence = next_sequence.wrapping_add(count);
        }
        batch.state = BatchState::InFlight;
        batch.attempts += 1;
        batch.sent_as_front = index == 0;
        (batch.id, batch.bytes.clone(), batch.deadline)
    }

    /// Applies the answer to batch `id` of `topic`/`partition`.
    pub(crate) fn complete(
        &mut self,
        topic: &str,
        partition: u32,
        id: u64,
        answer: Result<ProduceAck, ClientError>,
        timing: Timing,
    ) -> Outcome {
        // A batch failed meanwhile (the producer was fenced) is gone.
        let Some(index) = self.batches.iter().position(|b| b.id == id) else {
            return Outcome::Done;
        };
        self.last_active = timing.now;
        let batch = &mut self.batches[index];
        assert_eq!(
            batch.state,
            BatchState::InFlight,
            "answers come for sent batches"
        );
        let error = match answer {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(
                        topic,
                        partition,
                        offset = ack.base_offset,
                        "retry was a duplicate"
                    );
                }
                batch.succeed(ack.base_offset);
                batch.state = BatchState::Acked;
                self.pop_acked();
                return Outcome::Done;
            }
            Err(error) => error,
        };
        let stale = batch.stamp.map(|(identity, _)| identity) != self.identity;
        match classify(&error, self.idempotent) {
            Failure::Fenced if !stale => Outcome::Fenced(error),
            Failure::Retry | Failure::OutOfOrder | Failure::Fenced
                if timing.now >= batch.deadline =>
            {
                tracing::warn!(topic, partition, %error, "delivery timed out; last attempt failed");
                batch.fail(&delivery_timed_out(timing.delivery_timeout));
                self.remove(index);
                Outcome::Done
            }
            Failure::Retry => {
                let delay = if error.leader().is_some() {
                    // Refused by a broker that does not lead the partition,
                    // naming the one that does: sent there at once.
                    Duration::ZERO
                } else if error.is_not_leader() {
                    // An election is under way: it ends within a second,
                    // and the partition is asked about again soon.
                    NOT_LEADER_RETRY
                } else {
                    timing.backoff.delay(batch.attempts.saturating_sub(1))
                };
                batch.state = BatchState::Ready {
                    not_before: timing.now + delay,
                };
                tracing::debug!(topic, partition, attempts = batch.attempts, %error, "batch will be retried");
                batch.maybe_appended = true;
                batch.last_error = Some(error);
                Outcome::Done
            }
            // Sent before a sequence reset: it is restamped when sent again.
            Failure::OutOfOrder | Failure::Fenced if stale => {
                batch.unstamp();
                batch.state = BatchState::Ready {
                    not_before: timing.now,
                };
                Outcome::Done
            }
            Failure::OutOfOrder if !batch.sent_as_front => {
                batch.state = BatchState::Held;
                Outcome::Done
            }
            Failure::OutOfOrder | Failure::Fenced => {
                tracing::warn!(topic, partition, %error, "sequence gap: an earlier batch was lost; starting a new sequence");
                batch.state = BatchState::Ready {
                    not_before: timing.now,
                };
                self.resetting = true;
                Outcome::Done
            }
            Failure::Fatal => {
                if is_definite_refusal(&error) {
                    self.hand_back_sequence(index);
                }
                let batch = &mut self.batches[index];
                batch.fail(&error);
                self.remove(index);
                if is_unknown_partition(&error) {
                    Outcome::RefreshMetadata
                } else {
                    Outcome::Done
                }
            }
        }
    }

    /// The batch at `index` was refused for good: if no earlier attempt
    /// may have been appended and no later batch took sequence numbers
    /// after it, the next batch stamped takes its numbers, so the broker
    /// sees no gap (which would cost the partition its identity). With a
    /// later batch stamped the gap is real and handled as one (a reset once
    /// that batch is refused as out of order). Were an earlier attempt
    /// appended, reusing its numbers would make the broker take the next
    /// batch for a duplicate of it, and drop it.
    fn hand_back_sequence(&mut self, index: usize) {
        let batch = &self.batches[index];
        let Some((identity, base_sequence)) = batch.stamp else {
            return;
        };
        if batch.maybe_appended {
            return;
        }
        let later_stamped = self
            .batches
            .iter()
            .skip(index + 1)
            .any(|b| b.stamp.is_some());
        if later_stamped || Some(identity) != self.identity || self.resetting {
            return;
        }
        let count = i32::try_from(self.batches[index].record_count())
            .expect("batches hold at most 1e6 records");
        debug_assert_eq!(
            base_sequence.wrapping_add(count),
            self.next_sequence,
            "the newest stamped batch holds the last sequence numbers"
        );
        self.next_sequence = base_sequence;
    }

    /// Fails every batch not in flight whose delivery timeout ran out, and,
    /// once a reset waits for nothing in flight, restamps the queue.
    pub(crate) fn maintain(&mut self, now: Instant, delivery_timeout: Duration) {
        let mut index = 0;
        while index < self.batches.len() {
            let batch = &mut self.batches[index];
            let waiting = matches!(batch.state, BatchState::Ready { .. } | BatchState::Held);
            if waiting && batch.deadline <= now {
                if let Some(error) = &batch.last_error {
                    tracing::warn!(attempts = batch.attempts, %error, "delivery timed out");
                }
                batch.fail(&delivery_timed_out(delivery_timeout));
                self.remove(index);
            } else {
                index += 1;
            }
        }
        if self.resetting && self.in_flight() == 0 {
            // Nothing after a gap can have been appended, so nothing here
            // is acked; restamping cannot duplicate a record.
            for batch in &mut self.batches {
                batch.unstamp();
                if batch.state == BatchState::Held {
                    batch.state = BatchState::Ready { not_before: now };
                }
            }
            self.identity = None;
            self.needs_fresh_identity = true;
            self.next_sequence = 0;
            self.resetting = false;
        }
    }

    /// The earliest instant after `now` at which a waiting batch's backoff
    /// ends or its delivery timeout runs out. (A batch whose backoff is
    /// over but which waits for the window or for an earlier batch is woken
    /// by that batch's answer, not by time.)
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.batches
            .iter()
            .flat_map(|b| match b.state {
                BatchState::Ready { not_before } => [Some(not_before), Some(b.deadline)],
                BatchState::Held => [None, Some(b.deadline)],
                BatchState::InFlight | BatchState::Acked => [None, None],
            })
            .flatten()
            .filter(|&wake| wake > now)
            .min()
    }

    /// Answers every batch with `error` (the producer is fenced).
    pub(crate) fn fail_all(&mut self, error: &ClientError) {
        for mut batch in self.batches.drain(..) {
            batch.fail(error);
        }
    }

    fn remove(&mut self, index: usize) {
        self.batches.remove(index);
        self.pop_acked();
    }

    fn pop_acked(&mut self) {
        while self
            .batches
            .front()
            .is_some_and(|b| b.state == BatchState::Acked)
        {
            self.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;

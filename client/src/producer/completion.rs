//! One answer per batch, shared by the [`DeliveryFuture`]s of its records.
//!
//! The sender completes a batch once; each record's future reads the
//! batch's outcome and its own index in it (its offset is the batch's base
//! offset plus that index). No channel or allocation per record.
//!
//! Invariants: a completion is set at most once (later attempts are
//! ignored); every waker registered before it is set is woken after it is
//! set; one future holds at most one waker slot, however often it is polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::RecordMetadata;
use super::error::closed;
use crate::error::ClientError;

/// The outcome of one batch: its base offset, or why it failed.
#[derive(Debug)]
pub(crate) struct Completion {
    topic: Arc<str>,
    partition: u32,
    outcome: OnceLock<Result<i64, ClientError>>,
    /// Wakers of the futures polled before the outcome was set, by slot.
    waiters: Mutex<Vec<Option<Waker>>>,
}

impl Completion {
    pub(crate) fn new(topic: Arc<str>, partition: u32) -> Arc<Self> {
        Arc::new(Self {
            topic,
            partition,
            outcome: OnceLock::new(),
            waiters: Mutex::new(Vec::new()),
        })
    }

    /// The future of the record at `index` of the batch.
    pub(crate) fn delivery(self: &Arc<Self>, index: u32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture {
            completion: self.clone(),
            index,
            timestamp,
            slot: None,
        }
    }

    /// The batch was appended at `base_offset`.
    pub(crate) fn succeed(&self, base_offset: i64) {
        self.complete(Ok(base_offset));
    }

    /// The batch failed with `error`.
    pub(crate) fn fail(&self, error: &ClientError) {
        self.complete(Err(error.clone()));
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.outcome.get().is_some()
    }

    fn complete(&self, outcome: Result<i64, ClientError>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        // A poll that registered before the set is in the list; one that
        // comes after it sees the outcome under the lock.
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// Fails the batch as closed unless it was answered: a batch dropped
/// unanswered (the sender task ended abruptly) still answers its records.
#[derive(Debug)]
pub(crate) struct AnswerOnDrop(pub(crate) Arc<Completion>);

impl Drop for AnswerOnDrop {
    fn drop(&mut self) {
        if !self.0.is_complete() {
            self.0.fail(&closed());
        }
    }
}

impl std::ops::Deref for AnswerOnDrop {
    type Target = Completion;

    fn deref(&self) -> &Completion {
        &self.0
    }
}

/// The acknowledgement of one record accepted by
/// [`crate::Producer::enqueue`].
#[derive(Debug)]
#[must_use = "await it to learn whether the record was appended (dropping it does not cancel the send)"]
pub struct DeliveryFuture {
    completion: Arc<Completion>,
    /// The record's place in its batch.
    index: u32,
    timestamp: i64,
    /// Where this future's waker is kept in the completion's list.
    slot: Option<usize>,
}

impl DeliveryFuture {
    fn answer(&self, outcome: &Result<i64, ClientError>) -> Result<RecordMetadata, ClientError> {
        match outcome {
            Ok(base_offset) => Ok(RecordMetadata {
                topic: self.completion.topic.to_string(),
                partition: self.completion.partition,
                offset: base_offset + i64::from(self.index),
                timestamp: self.timestamp,
            }),
            Err(error) => Err(error.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(outcome) = this.completion.outcome.get() {
            return Poll::Ready(this.answer(outcome));
        }
        let mut waiters = this.completion.waiters.lock();
        if let Some(outcome) = this.completion.outcome.get() {
            drop(waiters);
            return Poll::Ready(this.answer(outcome));
        }
        if let Some(slot) = this.slot {
            let registered = &mut waiters[slot];
            if !registered
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                *registered = Some(cx.waker().clone());
            }
        } else {
            waiters.push(Some(cx.waker().clone()));
            this.slot = Some(waiters.len() - 1);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use crate::StatusCode as Code;
    use futures::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn each_record_reads_its_offset_from_the_batch_outcome() {
        let completion = Completion::new(Arc::from("t"), 3);
        let mut first = completion.delivery(0, 10);
        let second = completion.delivery(1, 11);
        assert!((&mut first).now_or_never().is_none());
        assert!(
            (&mut first).now_or_never().is_none(),
            "one slot, however often polled"
        );
        assert_eq!(completion.waiters.lock().len(), 1);
        let waiting = tokio::spawn(second);
        tokio::task::yield_now().await;
        completion.succeed(100);
        completion.fail(&closed());
        let first = first.await.unwrap();
        assert_eq!(
            (first.topic.as_str(), first.partition, first.offset),
            ("t", 3, 100)
        );
        assert_eq!(first.timestamp, 10);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(
            (second.offset, second.timestamp),
            (101, 11),
            "the first outcome stays"
        );
    }

    #[test]
    fn a_batch_dropped_unanswered_fails_its_records() {
        let completion = Completion::new(Arc::from("t"), 0);
        let delivery = completion.delivery(0, 0);
        drop(AnswerOnDrop(completion));
        let error = delivery.now_or_never().unwrap().unwrap_err();
        assert_eq!(error.code(), Some(Code::Cancelled));
    }
}

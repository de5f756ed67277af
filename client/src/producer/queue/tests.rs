//! Tests of `queue.rs`.
use super::*;
use crate::StatusCode as Code;
use crate::producer::DeliveryFuture;
use crate::producer::batch::test_batch;
use brook_record::BatchHeader;
use futures::FutureExt as _;

type Answer = DeliveryFuture;

const IDENTITY: Identity = Identity {
    producer_id: 7,
    producer_epoch: 0,
};

/// A batch of two records, and the receivers of their answers.
fn batch(id: u64, opened: Instant) -> (Batch, Vec<Answer>) {
    test_batch(id, 2, opened)
}

fn queue(idempotent: bool, batches: u64) -> (PartitionQueue, Vec<Vec<Answer>>, Instant) {
    let now = Instant::now();
    let mut queue = PartitionQueue::new("t", idempotent, now);
    let mut answers = Vec::new();
    for id in 1..=batches {
        let (batch, answer) = batch(id, now);
        queue.push(batch, now);
        answers.push(answer);
    }
    if idempotent {
        assert_eq!(queue.wants_identity(), Some(false));
        queue.assign_identity(IDENTITY);
    }
    (queue, answers, now)
}

fn timing(now: Instant) -> Timing {
    Timing {
        now,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
            multiplier: 2.0,
        },
        delivery_timeout: Duration::from_secs(60),
    }
}

/// Sends everything sendable now: the ids and base sequences sent.
fn send(queue: &mut PartitionQueue, now: Instant) -> Vec<(u64, i32)> {
    let mut sent = Vec::new();
    while let Some(index) = queue.sendable(now) {
        let (id, bytes, _) = queue.start_attempt(index);
        sent.push((id, BatchHeader::parse(&bytes).unwrap().base_sequence));
    }
    sent
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "an answer, as the sender passes it"
)]
fn ack(offset: i64) -> Result<ProduceAck, ClientError> {
    Ok(ProduceAck {
        topic: "t".into(),
        partition: 0,
        base_offset: offset,
        log_start_offset: 0,
        duplicate: false,
    })
}

fn refused(code: Code, message: &str) -> Result<ProduceAck, ClientError> {
    Err(ClientError::Rejected {
        topic: "t".into(),
        partition: 0,
        code,
        message: message.to_owned(),
        leader: None,
    })
}

fn out_of_order() -> Result<ProduceAck, ClientError> {
    refused(
        Code::FailedPrecondition,
        "refused: out of order sequence for producer_id 7",
    )
}

fn complete(
    queue: &mut PartitionQueue,
    id: u64,
    answer: Result<ProduceAck, ClientError>,
    now: Instant,
) -> Outcome {
    queue.complete("t", 0, id, answer, timing(now))
}

#[test]
fn five_batches_are_unacknowledged_at_most_and_sequences_follow_the_queue() {
    let (mut queue, mut answers, now) = queue(true, 7);
    assert_eq!(
        send(&mut queue, now),
        [(1, 0), (2, 2), (3, 4), (4, 6), (5, 8)]
    );
    complete(&mut queue, 3, ack(4), now);
    assert!(
        send(&mut queue, now).is_empty(),
        "an acked batch behind an unacked one still counts"
    );
    complete(&mut queue, 1, ack(0), now);
    assert_eq!(send(&mut queue, now), [(6, 10)]);
    let first = (&mut answers[0][1]).now_or_never().unwrap().unwrap();
    assert_eq!((first.partition, first.offset), (0, 1));
    assert_eq!(
        (&mut answers[2][0]).now_or_never().unwrap().unwrap().offset,
        4
    );
}

#[test]
fn a_retry_goes_out_before_later_batches_with_the_same_bytes() {
    let (mut queue, _answers, now) = queue(true, 3);
    let first = queue.start_attempt(0).1;
    assert_eq!(send(&mut queue, now), [(2, 2), (3, 4)]);
    complete(&mut queue, 1, refused(Code::Unavailable, "down"), now);
    assert!(send(&mut queue, now).is_empty(), "backing off");
    let later = now + Duration::from_millis(100);
    let wake = queue.next_wake(now).expect("the backoff's end");
    assert!(
        wake > now && wake <= later,
        "not the later batches' past readiness"
    );
    let index = queue.sendable(later).unwrap();
    let (id, retry, _) = queue.start_attempt(index);
    assert_eq!((id, retry), (1, first), "the same batch, byte for byte");
}

#[test]
fn an_out_of_order_batch_waits_for_the_one_before_it() {
    let (mut queue, _answers, now) = queue(true, 2);
    assert_eq!(send(&mut queue, now), [(1, 0), (2, 2)]);
    complete(&mut queue, 1, refused(Code::Unavailable, "down"), now);
    complete(&mut queue, 2, out_of_order(), now);
    let later = now + Duration::from_millis(100);
    assert_eq!(
        send(&mut queue, later),
        [(1, 0)],
        "batch 2 is held behind batch 1"
    );
    complete(&mut queue, 1, ack(0), later);
    assert_eq!(send(&mut queue, later), [(2, 2)], "same sequence as before");
    complete(&mut queue, 2, ack(2), later);
    assert!(queue.is_empty());
}

#[test]
fn a_gap_at_the_front_starts_a_new_sequence_under_a_fresh_identity() {
    let (mut queue, mut answers, now) = queue(true, 3);
    assert_eq!(send(&mut queue, now), [(1, 0), (2, 2), (3, 4)]);
    complete(
        &mut queue,
        1,
        refused(Code::InvalidArgument, "too large"),
        now,
    );
    let error = (&mut answers[0][0]).now_or_never().unwrap().unwrap_err();
    assert_eq!(error.code(), Some(Code::InvalidArgument));
    complete(&mut queue, 2, out_of_order(), now);
    complete(&mut queue, 3, out_of_order(), now);
    assert_eq!(send(&mut queue, now), [(2, 2)], "the oldest goes alone");
    complete(&mut queue, 2, out_of_order(), now);
    assert!(send(&mut queue, now).is_empty());
    queue.maintain(now, Duration::from_secs(60));
    assert_eq!(queue.wants_identity(), Some(true), "not the broken one");
    queue.assign_identity(Identity {
        producer_id: 8,
        producer_epoch: 0,
    });
    assert_eq!(send(&mut queue, now), [(2, 0), (3, 2)]);
}

#[test]
fn without_idempotence_one_batch_is_in_flight() {
    let (mut queue, _answers, now) = queue(false, 3);
    assert_eq!(queue.wants_identity(), None);
    assert_eq!(send(&mut queue, now), [(1, -1)]);
    complete(&mut queue, 1, ack(0), now);
    assert_eq!(send(&mut queue, now), [(2, -1)]);
}

#[test]
fn a_refused_identity_fences_and_expired_batches_time_out() {
    let (mut queue, mut answers, now) = queue(true, 2);
    assert_eq!(send(&mut queue, now), [(1, 0), (2, 2)]);
    let outcome = complete(
        &mut queue,
        1,
        refused(Code::FailedPrecondition, "epoch 0 is fenced"),
        now,
    );
    assert!(matches!(outcome, Outcome::Fenced(_)), "{outcome:?}");

    complete(&mut queue, 2, refused(Code::Unavailable, "down"), now);
    queue.maintain(now + Duration::from_secs(61), Duration::from_secs(60));
    let error = (&mut answers[1][0]).now_or_never().unwrap().unwrap_err();
    assert!(
        matches!(error, ClientError::Timeout { .. }) && error.is_retryable(),
        "{error:?}"
    );
}

#[test]
fn a_definite_refusal_of_the_newest_batch_hands_its_sequence_back() {
    let (mut queue, _answers, now) = queue(true, 1);
    assert_eq!(send(&mut queue, now), [(1, 0)]);
    let (later, _later_answers) = batch(2, now);
    queue.push(later, now);
    complete(
        &mut queue,
        1,
        refused(Code::InvalidArgument, "too large"),
        now,
    );
    assert_eq!(
        send(&mut queue, now),
        [(2, 0)],
        "no gap: the broker never saw sequence 0"
    );
    assert_eq!(queue.wants_identity(), None, "no reset, same identity");
}

#[test]
fn refusals_from_newest_to_oldest_hand_back_every_sequence() {
    let (mut queue, _answers, now) = queue(true, 2);
    assert_eq!(send(&mut queue, now), [(1, 0), (2, 2)]);
    complete(&mut queue, 2, refused(Code::NotFound, "no partition"), now);
    complete(&mut queue, 1, refused(Code::NotFound, "no partition"), now);
    assert!(queue.is_empty());
    assert!(
        !queue.holds_sequence_state(),
        "nothing was appended under the identity"
    );
    let (next, _next_answers) = batch(3, now);
    queue.push(next, now);
    assert_eq!(send(&mut queue, now), [(3, 0)]);
}

#[test]
fn a_refusal_behind_a_stamped_batch_or_a_possible_append_keeps_the_sequence() {
    // A later batch holds the next numbers: the gap is real.
    let (mut queue, _answers, now) = queue(true, 2);
    assert_eq!(send(&mut queue, now), [(1, 0), (2, 2)]);
    complete(&mut queue, 1, refused(Code::InvalidArgument, "bad"), now);
    complete(&mut queue, 2, ack(0), now);
    let (next, _next_answers) = batch(3, now);
    queue.push(next, now);
    assert_eq!(send(&mut queue, now), [(3, 4)]);

    // An internal error may hide an append: its numbers stay used.
    let (mut queue, _answers, now) = self::queue(true, 1);
    assert_eq!(send(&mut queue, now), [(1, 0)]);
    complete(&mut queue, 1, refused(Code::Internal, "fsync failed"), now);
    let (next, _next_answers) = batch(2, now);
    queue.push(next, now);
    assert_eq!(send(&mut queue, now), [(2, 2)]);
    assert!(queue.holds_sequence_state());
}

#[test]
fn a_batch_of_a_refused_request_goes_again_alone_with_the_same_bytes() {
    let (mut queue, _answers, now) = queue(true, 2);
    let (id, first, _) = queue.start_attempt(0);
    assert_eq!(id, 1);
    assert!(!queue.goes_alone(0));
    queue.send_alone(1, now);
    let index = queue.sendable(now).expect("sendable at once");
    assert_eq!(index, 0);
    assert!(queue.goes_alone(index));
    let (id, again, _) = queue.start_attempt(index);
    assert_eq!((id, again), (1, first));
}

#[test]
fn a_refusal_after_an_attempt_that_may_have_been_appended_keeps_the_sequence() {
    let (mut queue, _answers, now) = queue(true, 1);
    assert_eq!(send(&mut queue, now), [(1, 0)]);
    complete(
        &mut queue,
        1,
        refused(Code::Unavailable, "answer lost"),
        now,
    );
    let later = now + Duration::from_millis(100);
    assert_eq!(send(&mut queue, later), [(1, 0)]);
    complete(
        &mut queue,
        1,
        refused(Code::InvalidArgument, "too large now"),
        later,
    );
    let (next, _next_answers) = batch(2, later);
    queue.push(next, later);
    assert_eq!(
        send(&mut queue, later),
        [(2, 2)],
        "sequence 0 may be taken by the first attempt"
    );
}

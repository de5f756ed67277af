//! Tests of `sender.rs`.
use super::*;
use crate::producer::batch::test_batch;

type Answer = crate::producer::DeliveryFuture;

const LIMITS: RequestLimits = RequestLimits {
    bytes_max: usize::MAX,
    batches_max: 10,
};

/// `partitions` non-idempotent queues of topic `t` with one batch each
/// (ids 1..), and the receivers of their answers.
fn queues(
    partitions: u32,
    now: Instant,
) -> (HashMap<TopicPartition, PartitionQueue>, Vec<Vec<Answer>>) {
    let mut queues = HashMap::new();
    let mut answers = Vec::new();
    for partition in 0..partitions {
        let (batch, answer) = test_batch(u64::from(partition) + 1, 1, now);
        let mut queue = PartitionQueue::new("t", false, now);
        queue.push(batch, now);
        queues.insert((Arc::from("t"), partition), queue);
        answers.push(answer);
    }
    (queues, answers)
}

#[test]
fn a_request_holds_at_most_batches_max_batches() {
    let now = Instant::now();
    let (mut queues, _answers) = queues(25, now);
    let sizes: Vec<usize> = std::iter::from_fn(|| {
        let request = gather(&mut queues, |_| true, now, LIMITS);
        (!request.batches.is_empty()).then_some(request.batches.len())
    })
    .collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(REQUEST_LIMITS.batches_max, 10_000, "the broker's limit");
}

#[test]
fn a_request_stays_within_its_byte_limit_but_always_takes_one_batch() {
    let now = Instant::now();
    let (mut queues, _answers) = queues(5, now);
    let cost = {
        let queue = queues.values().next().unwrap();
        queue.batch_len(0) + queue.topic().len() + BATCH_FRAMING_BYTES
    };
    let sizes = |queues: &mut HashMap<_, _>, bytes_max| -> Vec<usize> {
        let limits = RequestLimits {
            bytes_max,
            batches_max: 10,
        };
        std::iter::from_fn(|| {
            let request = gather(queues, |_| true, now, limits);
            (!request.batches.is_empty()).then_some(request.batches.len())
        })
        .collect()
    };
    assert_eq!(sizes(&mut queues, 2 * cost), [2, 2, 1]);
    // A batch that would take the request past its limit waits for the
    // next one.
    let (mut queues, _answers) = self::queues(5, now);
    assert_eq!(sizes(&mut queues, 2 * cost - 1), [1, 1, 1, 1, 1]);
    // Below one batch, a request still takes one: it goes alone.
    let (mut queues, _answers) = self::queues(3, now);
    let tiny = RequestLimits {
        bytes_max: 1,
        batches_max: 10,
    };
    assert_eq!(gather(&mut queues, |_| true, now, tiny).batches.len(), 1);
}

#[test]
fn a_lowered_message_bound_lowers_the_request_limit() {
    assert_eq!(
        RequestLimits::within_message(usize::MAX).bytes_max,
        REQUEST_BYTES_TARGET
    );
    assert_eq!(
        RequestLimits::within_message(1024 * 1024).bytes_max,
        1024 * 1024 - REQUEST_FRAMING_BYTES
    );
}

#[test]
fn a_batch_that_goes_alone_has_a_request_of_its_own() {
    let now = Instant::now();
    let (mut queues, _answers) = queues(4, now);
    let first = gather(&mut queues, |_| true, now, LIMITS);
    assert_eq!(first.sent.len(), 4);
    // The request was refused as a whole.
    for (key, id) in &first.sent {
        queues.get_mut(key).unwrap().send_alone(*id, now);
    }
    let mut requests = Vec::new();
    loop {
        let request = gather(&mut queues, |_| true, now, LIMITS);
        if request.batches.is_empty() {
            break;
        }
        requests.push(request.sent);
    }
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests.iter().all(|sent| sent.len() == 1));
}

#[test]
fn empty_queues_are_forgotten_unless_their_sequence_matters() {
    let now = Instant::now();
    let mut queues = HashMap::new();
    let key = |partition: u32| (Arc::<str>::from("t"), partition);
    // Answered and without idempotence: nothing to remember.
    let (mut plain, _plain_answers) = self::queues(1, now);
    let mut queue = plain.remove(&key(0)).unwrap();
    let (id, _, _) = queue.start_attempt(0);
    queue.complete("t", 0, id, Ok(ack()), timing(now));
    queues.insert(key(0), queue);
    // Idempotent, appended under an identity: the broker expects the next sequence.
    let (batch, _stamped_answers) = test_batch(10, 1, now);
    let mut queue = PartitionQueue::new("t", true, now);
    queue.push(batch, now);
    queue.assign_identity(Identity {
        producer_id: 1,
        producer_epoch: 0,
    });
    let (id, _, _) = queue.start_attempt(0);
    queue.complete("t", 1, id, Ok(ack()), timing(now));
    queues.insert(key(1), queue);
    // Still holding a batch.
    let (batch, _held_answers) = test_batch(20, 1, now);
    let mut queue = PartitionQueue::new("t", true, now);
    queue.push(batch, now);
    queues.insert(key(2), queue);

    assert!(!forget_queues(&mut queues, now, true));
    let mut kept: Vec<u32> = queues.keys().map(|k| k.1).collect();
    kept.sort_unstable();
    assert_eq!(kept, [1, 2]);

    let idle = now + QUEUE_IDLE_MAX;
    assert!(
        !forget_queues(&mut queues, idle, false),
        "only sweeps forget sequences"
    );
    assert!(forget_queues(&mut queues, idle, true));
    assert_eq!(queues.keys().map(|k| k.1).collect::<Vec<_>>(), [2]);
}

fn ack() -> ProduceAck {
    ProduceAck {
        topic: "t".into(),
        partition: 0,
        base_offset: 0,
        log_start_offset: 0,
        duplicate: false,
    }
}

fn timing(now: Instant) -> Timing {
    Timing {
        now,
        backoff: crate::ProducerConfig::default().backoff(),
        delivery_timeout: Duration::from_secs(60),
    }
}

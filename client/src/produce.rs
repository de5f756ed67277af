//! Unary produce: one request, one or more batches, one answer.

use brook_proto as proto;
use brook_record::{NewRecord, encode_batch};
use bytes::Bytes;

use crate::client::Client;
use crate::error::ClientError;

/// The broker's acknowledgement of one appended batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceAck {
    /// The batch's topic.
    pub topic: String,
    /// The batch's partition.
    pub partition: u32,
    /// The offset given to the batch's first record; the rest follow densely.
    pub base_offset: i64,
    /// The partition's first retained offset after the append.
    pub log_start_offset: i64,
    /// The batch was a retry of one the broker had already appended (same
    /// producer id, epoch and sequence): it was not appended again, and
    /// `base_offset` is the original's.
    pub duplicate: bool,
}

impl Client {
    /// Encodes `records` into one batch (compressed as [`crate::ClientOptions::batch`]
    /// says) and appends it to the partition.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: &[NewRecord],
    ) -> Result<ProduceAck, ClientError> {
        let batch = encode_batch(records, self.options.batch).map_err(ClientError::Encode)?;
        self.produce_batch(topic, partition, batch).await
    }

    /// Appends one batch encoded with `brook_record` (base offset 0; the
    /// broker stamps the real one).
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> Result<ProduceAck, ClientError> {
        let mut acks = self
            .produce_many(vec![(topic.to_owned(), partition, batch)])
            .await?;
        let ack = acks.pop().expect("produce_many answers each batch");
        assert!(acks.is_empty(), "one batch sent, one answer");
        ack
    }

    /// Appends several batches in one request: `(topic, partition, batch)`.
    /// The broker validates every batch before appending any; if it refuses
    /// the request as a whole the outer result is the error, otherwise each
    /// batch has its own result, in the order given.
    pub async fn produce_many(
        &self,
        batches: Vec<(String, u32, Bytes)>,
    ) -> Result<Vec<Result<ProduceAck, ClientError>>, ClientError> {
        let request = request(0, batches);
        let batch_count = request.batches.len();
        let response = self
            .rpc(
                "produce",
                self.options.request_timeout,
                self.produce.clone().produce(request),
            )
            .await?;
        acks(batch_count, response.results)
    }

    /// A new producer id (`producer_id <= 0`) or the next epoch of
    /// `producer_id`, for idempotent produce: `(producer_id, producer_epoch)`.
    pub(crate) async fn init_producer_id(
        &self,
        producer_id: i64,
    ) -> Result<(i64, i16), ClientError> {
        let response = self
            .rpc(
                "init_producer_id",
                self.options.request_timeout,
                self.produce
                    .clone()
                    .init_producer_id(proto::InitProducerIdRequest { producer_id }),
            )
            .await?;
        let epoch = i16::try_from(response.producer_epoch).map_err(|error| {
            ClientError::Protocol(format!(
                "producer_epoch {} does not fit the batch header's i16: {error}",
                response.producer_epoch
            ))
        })?;
        Ok((response.producer_id, epoch))
    }
}

pub(crate) fn request(
    correlation_id: u64,
    batches: Vec<(String, u32, Bytes)>,
) -> proto::ProduceRequest {
    proto::ProduceRequest {
        correlation_id,
        batches: batches
            .into_iter()
            .map(|(topic, partition, batch)| proto::PartitionBatch {
                topic,
                partition,
                batch,
            })
            .collect(),
    }
}

/// One result per batch sent, or a protocol error if the count is off.
pub(crate) fn acks(
    batch_count: usize,
    results: Vec<proto::BatchResult>,
) -> Result<Vec<Result<ProduceAck, ClientError>>, ClientError> {
    if results.len() != batch_count {
        return Err(ClientError::Protocol(format!(
            "{batch_count} batches sent, {} results received",
            results.len()
        )));
    }
    Ok(results.into_iter().map(ack).collect())
}

fn ack(result: proto::BatchResult) -> Result<ProduceAck, ClientError> {
    match result.error {
        Some(error) => Err(ClientError::rejected(result.topic, result.partition, error)),
        None => Ok(ProduceAck {
            topic: result.topic,
            partition: result.partition,
            base_offset: result.base_offset,
            log_start_offset: result.log_start_offset,
            duplicate: result.duplicate,
        }),
    }
}

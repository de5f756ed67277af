//! `brook.v1.FetchService`: long-poll fetch, subscriptions, offset lookups.
//!
//! The record bytes a fetch returns, and each chunk a subscription pushes,
//! are charged to the principal's fetch quota; the answer (the push) is
//! held back as long as the quota says (`throttle.rs`), and a subscription
//! reads nothing more meanwhile.

use std::sync::Arc;
use std::time::Duration;

use brook_proto::fetch_service_server::FetchService;
use brook_proto::list_offsets_request::Spec;
use brook_proto::{
    FetchRequest, FetchResponse, FetchedPartition, ListOffsetsRequest, ListOffsetsResponse,
    SubscribeRequest, SubscribeResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::authorize::{Caller, check_topics};
use super::status::{status, to_status};
use super::throttle;
use brook_engine::acl::{Operation, Resource};
use brook_engine::quota::Direction;
use brook_engine::{Broker, FetchSpec, OffsetSpec};
use brook_engine::{FetchError, Invalid, PartitionError};

/// Chunks a subscription reads ahead of a slow client (each up to the
/// subscription's chunk size).
const SUBSCRIBE_BUFFER: usize = 2;

#[derive(Debug)]
pub struct FetchHandler {
    broker: Arc<Broker>,
}

impl FetchHandler {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

/// Why a subscription ended without an error of its own: the broker is
/// stopping, or else its partition was deleted.
fn ended(broker: &Broker, topic: String, partition: u32) -> Status {
    if broker.is_stopping() {
        return status(FetchError::ShuttingDown);
    }
    status(FetchError::Partition(PartitionError::Deleted {
        topic,
        partition,
    }))
}

#[tonic::async_trait]
impl FetchService for FetchHandler {
    #[tracing::instrument(skip_all, fields(partitions = request.get_ref().partitions.len()))]
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let timer = self.broker.metrics().time_request("Fetch");
        let caller = Caller::of(&request);
        let request = request.into_inner();
        check_topics(
            &caller,
            &self.broker,
            Operation::Consume,
            request.partitions.iter().map(|p| p.topic.as_str()),
        )?;
        let specs = request
            .partitions
            .into_iter()
            .map(|p| FetchSpec {
                topic: p.topic,
                partition: p.partition,
                offset: p.offset,
                max_bytes: p.max_bytes,
            })
            .collect();
        let fetched = self
            .broker
            .fetch(
                specs,
                Duration::from_millis(u64::from(request.max_wait_ms)),
                request.max_bytes,
                request.max_message_bytes,
            )
            .await
            .map_err(status)?;
        let bytes = fetched.iter().map(|f| f.records.len()).sum();
        let release = throttle::charge(&self.broker, caller.principal(), Direction::Fetch, bytes);
        // The handling time is the broker's work; the hold is counted apart.
        drop(timer);
        let throttle_time_ms =
            throttle::hold(&self.broker, caller.principal(), Direction::Fetch, release).await;
        Ok(Response::new(FetchResponse {
            partitions: fetched
                .into_iter()
                .map(|f| FetchedPartition {
                    topic: f.topic,
                    partition: f.partition,
                    records: f.records,
                    high_watermark: f.high_watermark,
                    log_start_offset: f.start_offset,
                })
                .collect(),
            throttle_time_ms,
        }))
    }

    type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        caller.check(
            &self.broker,
            Operation::Consume,
            Resource::Topic(&request.topic),
        )?;
        let mut subscription = self
            .broker
            .subscribe(
                &request.topic,
                request.partition,
                request.offset,
                request.max_bytes,
            )
            .map_err(status)?;
        let principal = caller.principal().to_owned();
        // Bounded: a client that stops reading stops the subscription's reads.
        let (sender, receiver) = mpsc::channel(SUBSCRIBE_BUFFER);
        let open = self.broker.metrics().open_stream("subscribe");
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let _open = open;
            loop {
                let next = tokio::select! {
                    next = subscription.next() => next,
                    () = sender.closed() => break,
                };
                let Some(chunk) = next else {
                    // A subscription has no normal end: say why it ended,
                    // so that the client reconnects (UNAVAILABLE) or stops
                    // (NOT_FOUND) instead of taking it as done.
                    let why = ended(&broker, request.topic, request.partition);
                    let _ = sender.send(Err(why)).await;
                    break;
                };
                let message = match chunk {
                    Ok(c) => {
                        let release = throttle::charge(
                            &broker,
                            &principal,
                            Direction::Fetch,
                            c.records.len(),
                        );
                        let held = throttle::hold(&broker, &principal, Direction::Fetch, release);
                        let throttle_time_ms = tokio::select! {
                            held = held => held,
                            () = sender.closed() => break,
                        };
                        Ok(SubscribeResponse {
                            records: c.records,
                            high_watermark: c.high_watermark,
                            next_offset: c.next_offset,
                            throttle_time_ms,
                        })
                    }
                    Err(e) => Err(to_status(&e)),
                };
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ListOffsets");
        let caller = Caller::of(&request);
        let request = request.into_inner();
        caller.check(
            &self.broker,
            Operation::Describe,
            Resource::Topic(&request.topic),
        )?;
        let spec = match request.spec {
            Some(Spec::Earliest(_)) => OffsetSpec::Earliest,
            Some(Spec::Latest(_)) => OffsetSpec::Latest,
            Some(Spec::TimestampMs(ts)) => OffsetSpec::Timestamp(ts),
            None => {
                return Err(status(Invalid::new(
                    "spec",
                    "one of earliest, latest or timestamp_ms must be set",
                )));
            }
        };
        let (offset, timestamp_ms) = self
            .broker
            .list_offsets(&request.topic, request.partition, spec)
            .await
            .map_err(status)?;
        Ok(Response::new(ListOffsetsResponse {
            offset,
            timestamp_ms,
        }))
    }
}

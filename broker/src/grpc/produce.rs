//! `brook.v1.ProduceService`: unary produce, and the pipelined stream that
//! appends requests in arrival order and acknowledges them in that order.
//!
//! A request's batch bytes are charged to its principal's produce quota
//! when it is read; its answer (each acknowledgement of a stream, in
//! order) is held back as long as the quota says (`throttle.rs`).

use std::sync::Arc;

use brook_proto::produce_service_server::ProduceService;
use brook_proto::{
    BatchResult, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authorize::{Caller, check_topics};
use super::status::{status, to_proto_error};
use super::throttle;
use brook_engine::ProduceError;
use brook_engine::acl::{Denied, Operation, Resource};
use brook_engine::quota::Direction;
use brook_engine::{BatchAppended, Broker, PendingProduce, ProduceBatch};

#[derive(Debug)]
pub struct ProduceHandler {
    broker: Arc<Broker>,
}

impl ProduceHandler {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

fn batches(request: ProduceRequest) -> Vec<ProduceBatch> {
    request
        .batches
        .into_iter()
        .map(|b| ProduceBatch {
            topic: b.topic,
            partition: b.partition,
            batch: b.batch,
        })
        .collect()
}

fn results(
    topics: &[(String, u32)],
    outcomes: Vec<Result<BatchAppended, ProduceError>>,
) -> Vec<BatchResult> {
    topics
        .iter()
        .zip(outcomes)
        .map(|((topic, partition), outcome)| match outcome {
            Ok(appended) => BatchResult {
                topic: topic.clone(),
                partition: *partition,
                base_offset: appended.base_offset,
                log_start_offset: appended.log_start_offset,
                error: None,
                duplicate: appended.duplicate,
            },
            Err(e) => BatchResult {
                topic: topic.clone(),
                partition: *partition,
                base_offset: -1,
                log_start_offset: -1,
                error: Some(to_proto_error(&e)),
                duplicate: false,
            },
        })
        .collect()
}

fn targets(request: &ProduceRequest) -> Vec<(String, u32)> {
    request
        .batches
        .iter()
        .map(|b| (b.topic.clone(), b.partition))
        .collect()
}

/// Whether the stream's caller may produce to every topic of a request:
/// a refused request gets a response with PERMISSION_DENIED, and the
/// stream goes on.
fn stream_permission(
    caller: &Caller,
    broker: &Broker,
    targets: &[(String, u32)],
) -> Result<(), Denied> {
    if !broker.authorizer().is_enabled() {
        return Ok(());
    }
    for (topic, _) in targets {
        broker.authorizer().authorize(
            caller.principal(),
            Operation::Produce,
            &Resource::Topic(topic),
        )?;
    }
    Ok(())
}

/// What a produce request counts against its principal's quota.
fn batch_bytes(request: &ProduceRequest) -> usize {
    request.batches.iter().map(|b| b.batch.len()).sum()
}

/// A queued request of a stream, waiting for its acknowledgement.
struct InFlight {
    correlation_id: u64,
    targets: Vec<(String, u32)>,
    pending: Result<PendingProduce, ProduceError>,
    /// When the principal's quota lets the acknowledgement go.
    release: Instant,
}

#[tonic::async_trait]
impl ProduceService for ProduceHandler {
    #[tracing::instrument(skip_all, fields(batches = request.get_ref().batches.len()))]
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let timer = self.broker.metrics().time_request("Produce");
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let correlation_id = request.correlation_id;
        let targets = targets(&request);
        check_topics(
            &caller,
            &self.broker,
            Operation::Produce,
            targets.iter().map(|(topic, _)| topic.as_str()),
        )?;
        let release = throttle::charge(
            &self.broker,
            caller.principal(),
            Direction::Produce,
            batch_bytes(&request),
        );
        let outcomes = self
            .broker
            .produce(batches(request))
            .await
            .map_err(status)?;
        // The handling time is the broker's work; the hold is counted apart.
        drop(timer);
        let throttle_time_ms = throttle::hold(
            &self.broker,
            caller.principal(),
            Direction::Produce,
            release,
        )
        .await;
        Ok(Response::new(ProduceResponse {
            correlation_id,
            results: results(&targets, outcomes),
            error: None,
            throttle_time_ms,
        }))
    }

    async fn init_producer_id(
        &self,
        request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let _timer = self.broker.metrics().time_request("InitProducerId");
        let caller = Caller::of(&request);
        if !self
            .broker
            .authorizer()
            .may_produce_somewhere(caller.principal())
        {
            return Err(Status::permission_denied(format!(
                "principal `{}` may not take a producer id: no ACL allows it to produce to any topic",
                caller.principal()
            )));
        }
        let (producer_id, epoch) = self
            .broker
            .init_producer_id(request.into_inner().producer_id, caller.principal())
            .await
            .map_err(status)?;
        Ok(Response::new(InitProducerIdResponse {
            producer_id,
            producer_epoch: i32::from(epoch),
        }))
    }

    type ProduceStreamStream = ReceiverStream<Result<ProduceResponse, Status>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = Caller::of(&request);
        let mut inbound = request.into_inner();
        let in_flight_max = self.broker.config().limits.produce_stream_in_flight_max;
        // Acknowledgements waiting to be sent; bounded so a slow reader
        // holds back the stream instead of growing memory.
        let (responses, outbound) = mpsc::channel(in_flight_max);
        // Requests queued to partitions, in arrival order; the bound is the
        // stream's in-flight limit.
        let (queued, mut awaiting) = mpsc::channel::<InFlight>(in_flight_max);
        // How reading the requests ended, when not by the client closing
        // its side: the responses end with it once everything read is
        // acknowledged.
        let (ended, mut end) = oneshot::channel::<Status>();
        let stopping = self.broker.clone();
        let acknowledging = caller.principal().to_owned();
        tokio::spawn(async move {
            while let Some(queued) = awaiting.recv().await {
                let mut response = match queued.pending {
                    Ok(pending) => ProduceResponse {
                        correlation_id: queued.correlation_id,
                        results: results(&queued.targets, pending.wait().await),
                        error: None,
                        throttle_time_ms: 0,
                    },
                    Err(e) => ProduceResponse {
                        correlation_id: queued.correlation_id,
                        results: Vec::new(),
                        error: Some(to_proto_error(&e)),
                        throttle_time_ms: 0,
                    },
                };
                // In order: later acknowledgements wait behind this one.
                let held = throttle::hold(
                    &stopping,
                    &acknowledging,
                    Direction::Produce,
                    queued.release,
                );
                response.throttle_time_ms = tokio::select! {
                    held = held => held,
                    () = responses.closed() => return,
                };
                if responses.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            // Everything queued is acknowledged; a stream cut short by a
            // refused message or a shutdown ends with a status the client
            // knows to retry on.
            if let Ok(status) = end.try_recv() {
                let _ = responses.send(Err(status)).await;
            } else if stopping.is_stopping() {
                let _ = responses
                    .send(Err(Status::unavailable(
                        "the broker is shutting down; requests after the last acknowledgement were not read",
                    )))
                    .await;
            }
        });
        let broker = self.broker.clone();
        let open = self.broker.metrics().open_stream("produce");
        tokio::spawn(async move {
            let _open = open;
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message,
                    () = broker.stopping() => break,
                };
                let request = match message {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "produce stream ended while reading a request");
                        let _ = ended.send(status);
                        break;
                    }
                };
                let correlation_id = request.correlation_id;
                let targets = targets(&request);
                let (pending, release) = match stream_permission(&caller, &broker, &targets) {
                    Ok(()) => {
                        let release = throttle::charge(
                            &broker,
                            caller.principal(),
                            Direction::Produce,
                            batch_bytes(&request),
                        );
                        (broker.enqueue_produce(batches(request)).await, release)
                    }
                    Err(denied) => (Err(denied.into()), Instant::now()),
                };
                let in_flight = InFlight {
                    correlation_id,
                    targets,
                    pending,
                    release,
                };
                if queued.send(in_flight).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

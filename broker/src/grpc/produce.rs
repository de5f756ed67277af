//! `brook.v1.ProduceService`: unary produce, and the pipelined stream that
//! appends requests in arrival order and acknowledges them in that order.

use std::sync::Arc;

use brook_proto::produce_service_server::ProduceService;
use brook_proto::{
    BatchResult, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authorize::{Caller, check_topics};
use super::status::{status, to_proto_error};
use brook_engine::ProduceError;
use brook_engine::acl::{Denied, Operation, Resource};
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

/// A queued request of a stream, waiting for its acknowledgement.
type InFlight = (
    u64,
    Vec<(String, u32)>,
    Result<PendingProduce, ProduceError>,
);

#[tonic::async_trait]
impl ProduceService for ProduceHandler {
    #[tracing::instrument(skip_all, fields(batches = request.get_ref().batches.len()))]
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let _timer = self.broker.metrics().time_request("Produce");
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
        let outcomes = self
            .broker
            .produce(batches(request))
            .await
            .map_err(status)?;
        Ok(Response::new(ProduceResponse {
            correlation_id,
            results: results(&targets, outcomes),
            error: None,
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
        tokio::spawn(async move {
            while let Some((correlation_id, targets, pending)) = awaiting.recv().await {
                let response = match pending {
                    Ok(pending) => ProduceResponse {
                        correlation_id,
                        results: results(&targets, pending.wait().await),
                        error: None,
                    },
                    Err(e) => ProduceResponse {
                        correlation_id,
                        results: Vec::new(),
                        error: Some(to_proto_error(&e)),
                    },
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
                let pending = match stream_permission(&caller, &broker, &targets) {
                    Ok(()) => broker.enqueue_produce(batches(request)).await,
                    Err(denied) => Err(denied.into()),
                };
                if queued
                    .send((correlation_id, targets, pending))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

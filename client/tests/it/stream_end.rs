//! How the producer treats a produce stream that the broker ends while
//! requests are in flight, against a scripted broker: its first produce
//! stream reads a few requests, answers all of them, and ends (as a
//! broker's graceful shutdown ends a stream); later streams answer as they
//! read. It does not deduplicate: every batch it receives is appended, so
//! a batch sent twice shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brook_client::{Client, Producer, ProducerConfig, ProducerRecord};
use brook_proto::admin_service_server::{AdminService, AdminServiceServer};
use brook_proto::produce_service_server::{ProduceService, ProduceServiceServer};
use brook_proto::{
    AddPartitionsRequest, AddPartitionsResponse, AlterTopicConfigRequest, AlterTopicConfigResponse,
    BatchResult, CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeTopicRequest, DescribeTopicResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTopicsRequest, ListTopicsResponse, PartitionDescription, ProduceRequest, ProduceResponse,
    TopicConfig, TopicDescription,
};
use futures::future::join_all;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const PARTITIONS: u32 = 16;
/// Requests the first stream reads before it answers them and ends.
const FIRST_STREAM_REQUESTS: usize = 3;
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone)]
struct ScriptedBroker {
    streams: Arc<AtomicUsize>,
    /// Every appended record's value, in append order.
    appended: Arc<Mutex<Vec<String>>>,
    /// The next offset of each partition.
    offsets: Arc<Mutex<HashMap<u32, i64>>>,
}

impl ScriptedBroker {
    /// Appends a request's batches and answers it.
    fn append(&self, request: &ProduceRequest) -> ProduceResponse {
        let mut results = Vec::with_capacity(request.batches.len());
        for batch in &request.batches {
            let (_, records) = brook_record::decode_batch(&batch.batch).expect("a valid batch");
            let mut offsets = self.offsets.lock();
            let next = offsets.entry(batch.partition).or_default();
            let base_offset = *next;
            *next += records.len() as i64;
            self.appended.lock().extend(records.iter().map(|r| {
                String::from_utf8(r.value.clone().expect("a value").to_vec()).expect("utf-8")
            }));
            results.push(BatchResult {
                topic: batch.topic.clone(),
                partition: batch.partition,
                base_offset,
                log_start_offset: 0,
                error: None,
                duplicate: false,
            });
        }
        ProduceResponse {
            correlation_id: request.correlation_id,
            results,
            error: None,
            throttle_time_ms: 0,
        }
    }
}

#[tonic::async_trait]
impl ProduceService for ScriptedBroker {
    async fn produce(
        &self,
        _: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Err(Status::unimplemented("the producer uses the stream"))
    }

    type ProduceStreamStream = ReceiverStream<Result<ProduceResponse, Status>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let first = self.streams.fetch_add(1, Ordering::SeqCst) == 0;
        let (answers, stream) = mpsc::channel(1024);
        let broker = self.clone();
        tokio::spawn(async move {
            if first {
                let mut read = Vec::new();
                while read.len() < FIRST_STREAM_REQUESTS {
                    match inbound.message().await {
                        Ok(Some(request)) => read.push(request),
                        _ => return,
                    }
                }
                // Let the producer fill its window behind them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                for request in &read {
                    let _ = answers.send(Ok(broker.append(request))).await;
                }
                let _ = answers
                    .send(Err(Status::unavailable("the broker is shutting down")))
                    .await;
                return;
            }
            while let Ok(Some(request)) = inbound.message().await {
                if answers.send(Ok(broker.append(&request))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Ok(Response::new(InitProducerIdResponse {
            producer_id: 1,
            producer_epoch: 0,
        }))
    }
}

#[tonic::async_trait]
impl AdminService for ScriptedBroker {
    async fn create_topic(
        &self,
        _: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn delete_topic(
        &self,
        _: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let partitions = (0..PARTITIONS)
            .map(|partition| PartitionDescription {
                partition,
                ..PartitionDescription::default()
            })
            .collect();
        Ok(Response::new(DescribeTopicResponse {
            topic: Some(TopicDescription {
                name: request.into_inner().name,
                config: Some(TopicConfig {
                    retention_ms: Some(-1),
                    retention_bytes: Some(-1),
                    segment_bytes: Some(1 << 30),
                    segment_ms: Some(i64::MAX),
                    max_message_bytes: Some(1 << 20),
                    // As a broker from before the setting: the client takes it as unknown.
                    validate_records: None,
                }),
                partitions,
            }),
        }))
    }

    async fn add_partitions(
        &self,
        _: Request<AddPartitionsRequest>,
    ) -> Result<Response<AddPartitionsResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }

    async fn alter_topic_config(
        &self,
        _: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        Err(Status::unimplemented("scripted"))
    }
}

async fn serve(broker: ScriptedBroker) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AdminServiceServer::new(broker.clone()))
            .add_service(ProduceServiceServer::new(broker))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("serves");
    });
    (addr, task)
}

/// A batch answered on the first stream must not be sent again on the
/// next: the answers that arrived before the stream's end count although
/// the request side closed first. (A real broker would recognise an
/// idempotent producer's resend; a producer without idempotence would
/// append it twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_read_after_the_request_side_closed_still_count() {
    const RECORDS: usize = 400;
    let broker = ScriptedBroker::default();
    let (addr, server) = serve(broker.clone()).await;
    let client = Client::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let config = ProducerConfig::default()
        .with_batch_size(64)
        .with_linger(Duration::ZERO)
        .with_max_in_flight(32)
        .with_retry_backoff(Duration::from_millis(10));
    let producer = Producer::new(client, config);
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record =
            ProducerRecord::new("t", format!("value-{i:04}")).partition(i as u32 % PARTITIONS);
        pending.push(producer.enqueue(record).await.expect("accepted"));
    }
    let acks = tokio::time::timeout(LIMIT, join_all(pending))
        .await
        .expect("answers in time");
    assert!(acks.iter().all(Result::is_ok), "every record delivered");
    assert!(
        broker.streams.load(Ordering::SeqCst) >= 2,
        "the first stream ended"
    );
    let mut appended = broker.appended.lock().clone();
    let total = appended.len();
    appended.sort();
    appended.dedup();
    assert_eq!(appended.len(), RECORDS, "every record appended");
    assert_eq!(total, RECORDS, "no record appended twice");
    server.abort();
}

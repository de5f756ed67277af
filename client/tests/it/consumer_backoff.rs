//! A consumer whose fetches keep failing backs off between rounds instead
//! of spinning. The broker here is a stand-in `FetchService` that fails on
//! purpose and records when it was called.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_client::{Client, Consumer, ConsumerConfig, OffsetReset, SeekTo};
use brook_proto::fetch_service_server::{FetchService, FetchServiceServer};
use brook_proto::{
    FetchRequest, FetchResponse, FetchedPartition, ListOffsetsRequest, ListOffsetsResponse,
    SubscribeRequest, SubscribeResponse,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);
const BACKOFF: Duration = Duration::from_millis(50);

/// How the stand-in answers.
#[derive(Debug, Clone, Copy)]
enum Faults {
    /// Every fetch is out of range; every offset lookup is unavailable.
    OutOfRangeAndLookupsDown,
    /// A fetch of several partitions is refused; each alone succeeds, empty.
    RefusedTogetherFineAlone,
}

#[derive(Debug)]
struct Faulty {
    faults: Faults,
    /// When each call the test watches came: lookups, or fetches of
    /// several partitions.
    calls: Mutex<Vec<Instant>>,
    called: Notify,
}

impl Faulty {
    fn record(&self) {
        self.calls.lock().push(Instant::now());
        self.called.notify_one();
    }
}

/// The service the server runs; the test keeps the other handle.
struct Service(Arc<Faulty>);

#[tonic::async_trait]
impl FetchService for Service {
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let request = request.into_inner();
        match self.0.faults {
            Faults::OutOfRangeAndLookupsDown => {
                Err(Status::out_of_range("offset 100 is past the end"))
            }
            Faults::RefusedTogetherFineAlone if request.partitions.len() > 1 => {
                self.0.record();
                Err(Status::invalid_argument("refused together"))
            }
            Faults::RefusedTogetherFineAlone => Ok(Response::new(FetchResponse {
                partitions: request
                    .partitions
                    .into_iter()
                    .map(|p| FetchedPartition {
                        topic: p.topic,
                        partition: p.partition,
                        records: bytes::Bytes::new(),
                        high_watermark: 0,
                        log_start_offset: 0,
                    })
                    .collect(),
                throttle_time_ms: 0,
            })),
        }
    }

    type SubscribeStream = futures::stream::Empty<Result<SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("not in these tests"))
    }

    async fn list_offsets(
        &self,
        _request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        self.0.record();
        Err(Status::unavailable("lookups are down"))
    }
}

/// Serves `faults` on a free port; returns the service and a client of it.
async fn serve(faults: Faults) -> (Arc<Faulty>, Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let faulty = Arc::new(Faulty {
        faults,
        calls: Mutex::new(Vec::new()),
        called: Notify::new(),
    });
    let service = FetchServiceServer::new(Service(faulty.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let client = Client::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    (faulty, client)
}

fn config(reset: OffsetReset) -> ConsumerConfig {
    ConsumerConfig::default()
        .with_auto_offset_reset(reset)
        .with_retry_backoff(BACKOFF)
        .with_retry_backoff_max(4 * BACKOFF)
}

/// Waits until `count` watched calls came, and returns their instants.
async fn calls(faulty: &Faulty, count: usize) -> Vec<Instant> {
    timeout(LIMIT, async {
        loop {
            let called = faulty.called.notified();
            if faulty.calls.lock().len() >= count {
                return faulty.calls.lock()[..count].to_vec();
            }
            called.await;
        }
    })
    .await
    .expect("the consumer keeps trying")
}

fn assert_backed_off(calls: &[Instant]) {
    for pair in calls.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= BACKOFF, "retried after {gap:?}, without backing off");
    }
}

#[tokio::test]
async fn a_reset_whose_lookup_keeps_failing_is_retried_with_backoff() {
    let (faulty, client) = serve(Faults::OutOfRangeAndLookupsDown).await;
    let consumer = Consumer::new(client, config(OffsetReset::Earliest));
    consumer.assign(&[("t", 0)]);
    consumer.seek("t", 0, SeekTo::Offset(100)).await.unwrap();
    assert_backed_off(&calls(&faulty, 4).await);
}

#[tokio::test]
async fn a_fetch_failing_only_for_all_partitions_together_is_retried_with_backoff() {
    let (faulty, client) = serve(Faults::RefusedTogetherFineAlone).await;
    let consumer = Consumer::new(client, config(OffsetReset::Error));
    consumer.assign(&[("t", 0), ("t", 1)]);
    for partition in 0..2 {
        consumer
            .seek("t", partition, SeekTo::Offset(0))
            .await
            .unwrap();
    }
    assert_backed_off(&calls(&faulty, 4).await);
}

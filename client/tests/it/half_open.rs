//! A broker that goes silent without closing the connection (a half-open
//! connection: its host died, a route dropped): the client's long-lived
//! streams end with an error instead of waiting forever.
//!
//! The broker is reached through a proxy that can start dropping every byte
//! both ways while keeping both TCP connections open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brook_broker::EmbeddedBroker;
use brook_client::{BatchOptions, Client, ClientError, ClientOptions, NewRecord, TopicConfig};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Every wait in these tests is bounded by this; well below the default
/// keepalive (30 s + 20 s), so a test passes only through the mechanism it
/// is about.
const LIMIT: Duration = Duration::from_secs(10);

/// A TCP proxy to a broker that can be made a black hole.
struct Proxy {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let silent = Arc::new(AtomicBool::new(false));
        let black_hole = silent.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (from_client, to_client) = inbound.into_split();
                let (from_broker, to_broker) = outbound.into_split();
                tokio::spawn(forward(from_client, to_broker, black_hole.clone()));
                tokio::spawn(forward(from_broker, to_client, black_hole.clone()));
            }
        });
        Self { addr, silent }
    }

    /// From now on every byte is dropped; no connection is closed.
    fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, silent: Arc<AtomicBool>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if silent.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
}

fn record(value: &'static str) -> NewRecord {
    NewRecord {
        value: Some(value.into()),
        ..NewRecord::default()
    }
}

async fn broker_and_proxy() -> (EmbeddedBroker, Proxy) {
    let broker = EmbeddedBroker::start().await.expect("broker starts");
    let proxy = Proxy::start(broker.addr()).await;
    let client = Client::connect(broker.endpoint()).await.expect("connect");
    client
        .create_topic("t", 1, TopicConfig::default())
        .await
        .expect("create t");
    (broker, proxy)
}

#[tokio::test]
async fn a_produce_stream_fails_its_requests_when_answers_stop() {
    let (_broker, proxy) = broker_and_proxy().await;
    let options = ClientOptions::default().with_request_timeout(Duration::from_millis(500));
    let client = Client::connect_with(proxy.endpoint(), options)
        .await
        .unwrap();
    let mut stream = client.produce_stream().await.unwrap();
    let batch = || brook_record::encode_batch(&[record("v")], BatchOptions::default()).unwrap();
    let first = stream.send("t", 0, batch()).await.unwrap();
    assert_eq!(timeout(LIMIT, first).await.unwrap().unwrap().base_offset, 0);

    proxy.go_silent();
    let mut pending = Vec::new();
    for _ in 0..3 {
        pending.push(stream.send("t", 0, batch()).await.unwrap());
    }
    for ack in pending {
        let error = timeout(LIMIT, ack)
            .await
            .expect("the request times out instead of waiting forever")
            .unwrap_err();
        assert!(
            matches!(error, ClientError::Timeout { .. }) && error.is_retryable(),
            "{error:?}"
        );
    }
    let refused = timeout(LIMIT, stream.send("t", 0, batch()))
        .await
        .expect("send returns");
    assert!(refused.is_err(), "the stream is over");
}

#[tokio::test]
async fn a_subscription_ends_when_pings_go_unanswered() {
    let (broker, proxy) = broker_and_proxy().await;
    let options = ClientOptions::default()
        .with_keepalive_interval(Duration::from_millis(200))
        .with_keepalive_timeout(Duration::from_millis(500));
    let client = Client::connect_with(proxy.endpoint(), options)
        .await
        .unwrap();
    let mut records = client.subscribe("t", 0, 0).await.unwrap();
    let direct = Client::connect(broker.endpoint()).await.unwrap();
    direct.produce("t", 0, &[record("first")]).await.unwrap();
    let first = timeout(LIMIT, records.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.offset, 0);

    proxy.go_silent();
    let next = timeout(LIMIT, records.next())
        .await
        .expect("the subscription ends instead of waiting forever");
    match next {
        Some(Err(error)) => assert!(error.is_retryable(), "{error:?}"),
        None => {}
        Some(Ok(record)) => panic!("nothing was produced, got {record:?}"),
    }
}

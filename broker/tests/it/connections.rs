//! Connections a client holds cannot take the broker's file descriptors:
//! beyond `connections_max` they are closed at once, and idle ones are
//! closed after `connection_idle_timeout`.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_proto::{SubscribeRequest, TopicConfig};
use common::{Clients, WAIT, batch, within};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Waits until the peer closes `stream` (end of stream or a reset).
async fn closed_by_peer(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut buf = [0u8; 1024];
    within("the broker closing the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // The server's HTTP/2 settings or GOAWAY.
                Ok(_) => {}
            }
        }
    })
    .await
}

/// Polls until the broker counts `open` connections.
async fn open_connections(embedded: &EmbeddedBroker, open: i64) -> anyhow::Result<()> {
    within(&format!("{open} open connections"), async {
        while embedded.broker().metrics().open_connections.get() != open {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

async fn connect_idle(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(within("connect", TcpStream::connect(addr)).await??);
    }
    Ok(streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_maximum_are_closed_and_a_client_gets_in_once_some_go()
-> anyhow::Result<()> {
    const MAX: usize = 8;
    const EXTRA: usize = 5;
    let mut config = BrokerConfig::default();
    config.limits.connections_max = Some(MAX);
    let embedded = EmbeddedBroker::builder().config(config).start().await?;

    let mut held = connect_idle(embedded.addr(), MAX).await?;
    open_connections(&embedded, MAX as i64).await?;
    let mut extra = connect_idle(embedded.addr(), EXTRA).await?;
    for stream in &mut extra {
        closed_by_peer(stream).await?;
    }
    let refused = embedded.broker().metrics().refused_connections.get();
    assert_eq!(refused, EXTRA as u64);
    assert_eq!(
        embedded.broker().metrics().open_connections.get(),
        MAX as i64
    );

    // Two idle clients leave: a real client gets in and works.
    held.truncate(MAX - 2);
    open_connections(&embedded, (MAX - 2) as i64).await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("in", 1, TopicConfig::default())
        .await?;
    assert_eq!(clients.produce("in", 0, batch("r", 2)?).await?, 0);
    assert_eq!(
        common::values(&clients.fetch_all("in", 0, 0).await?),
        ["r-0", "r-1"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_ones_with_an_open_stream_are_kept() -> anyhow::Result<()> {
    let idle_timeout = Duration::from_millis(300);
    let mut config = BrokerConfig::default();
    config.connection_idle_timeout = idle_timeout;
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients
        .create_topic("quiet", 1, TopicConfig::default())
        .await?;
    let mut subscription = within(
        "subscribe",
        clients.fetch.subscribe(SubscribeRequest {
            topic: "quiet".to_owned(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
        }),
    )
    .await??
    .into_inner();

    let started = Instant::now();
    let mut idle = connect_idle(embedded.addr(), 3).await?;
    for stream in &mut idle {
        closed_by_peer(stream).await?;
    }
    let took = started.elapsed();
    assert!(took >= idle_timeout, "closed after {took:?}");
    assert!(took < idle_timeout + WAIT, "closed after {took:?}");

    // The subscriber's connection stayed: well past the timeout, its
    // stream still delivers.
    tokio::time::sleep(idle_timeout * 2).await;
    let mut producer = Clients::connect(embedded.endpoint()).await?;
    producer.produce("quiet", 0, batch("late", 1)?).await?;
    let chunk = within("the subscription's chunk", subscription.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
    let records = brook_record::decode_batches(&chunk.records)?;
    assert_eq!(common::values(&records), ["late-0"]);
    Ok(())
}

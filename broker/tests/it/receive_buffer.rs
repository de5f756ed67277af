//! Bytes of messages a client has only partly sent are bounded across the
//! broker: several streams each sending a large message slowly cannot make
//! the broker hold more than `receive_buffer_bytes_max`; the messages that
//! do not fit, and the ones that arrive too slowly, are refused with
//! RESOURCE_EXHAUSTED, and other clients go on producing.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use brook_broker::{BrokerConfig, EmbeddedBroker};
use brook_proto::TopicConfig;
use bytes::Bytes;
use common::{Clients, WAIT, batch, within};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tonic::Code;

const MIB: usize = 1024 * 1024;

/// The process's resident memory, from /proc/self/status.
fn rss_bytes() -> anyhow::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// An HTTP/2 connection of a client that writes gRPC frames by hand.
async fn raw_connection(addr: SocketAddr) -> anyhow::Result<SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (send, connection) = within("HTTP/2 handshake", h2::client::handshake(tcp)).await??;
    tokio::spawn(async move {
        let _ended = connection.await;
    });
    Ok(send)
}

/// Opens a produce stream and sends the 5-byte prefix of a message of
/// `declared` bytes.
async fn open_stream(
    send: &mut SendRequest<Bytes>,
    declared: u32,
) -> anyhow::Result<(h2::client::ResponseFuture, SendStream<Bytes>)> {
    let request = http::Request::post("/brook.v1.ProduceService/ProduceStream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let mut ready = within("stream capacity", send.clone().ready()).await??;
    let (response, mut body) = ready.send_request(request, false)?;
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&declared.to_be_bytes());
    body.send_data(Bytes::from(prefix), false)?;
    Ok((response, body))
}

/// Sends `bytes` of the message in 1 MiB chunks as flow control allows,
/// so that nothing piles up on the sending side; stops early (without
/// error) when the broker resets the stream.
async fn send_part(body: &mut SendStream<Bytes>, bytes: usize) -> anyhow::Result<()> {
    let chunk = Bytes::from(vec![0u8; MIB]);
    let mut sent = 0;
    while sent < bytes {
        let n = MIB.min(bytes - sent);
        body.reserve_capacity(n);
        let granted = within(
            "send capacity",
            std::future::poll_fn(|cx| body.poll_capacity(cx)),
        )
        .await?;
        let Some(Ok(granted)) = granted else {
            return Ok(());
        };
        if body
            .send_data(chunk.slice(..granted.min(n)), false)
            .is_err()
        {
            return Ok(());
        }
        sent += granted.min(n);
    }
    Ok(())
}

/// The gRPC status a response stream ended with (from its trailers).
async fn grpc_status(response: h2::client::ResponseFuture) -> anyhow::Result<(Code, String)> {
    within("the stream's status", async {
        let response = response.await?;
        let grpc_status = |headers: &http::HeaderMap| {
            headers.get("grpc-status").map(|code| {
                let code = code
                    .to_str()
                    .ok()
                    .and_then(|c| c.parse::<i32>().ok())
                    .unwrap_or(-1);
                let message = headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (Code::from_i32(code), message)
            })
        };
        if let Some(status) = grpc_status(response.headers()) {
            return Ok(status);
        }
        let mut body: RecvStream = response.into_body();
        while let Some(data) = body.data().await {
            let data = data?;
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await?.unwrap_or_default();
        grpc_status(&trailers).ok_or_else(|| anyhow::anyhow!("no grpc-status in {trailers:?}"))
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_large_messages_are_bounded_by_the_receive_buffer() -> anyhow::Result<()> {
    const BUDGET: usize = 64 * MIB;
    const STREAMS: usize = 8;
    const DECLARED: usize = 60 * MIB;
    const SENT: usize = 40 * MIB;
    let mut config = BrokerConfig::default();
    config.limits.receive_buffer_bytes_max = BUDGET;
    config.limits.message_receive_timeout = WAIT * 3;
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients.create_topic("t", 1, TopicConfig::default()).await?;
    let rss_before = rss_bytes()?;

    let mut attacker = raw_connection(embedded.addr()).await?;
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        streams.push(open_stream(&mut attacker, DECLARED as u32).await?);
    }
    for (_, body) in &mut streams {
        send_part(body, SENT).await?;
    }
    let rss_during = rss_bytes()?;
    let grown = rss_during.saturating_sub(rss_before);
    println!(
        "rss before {} MiB, during {} MiB",
        rss_before / MIB,
        rss_during / MIB
    );
    assert!(
        grown < BUDGET + 32 * MIB,
        "resident memory grew by {} MiB with a receive buffer of {} MiB",
        grown / MIB,
        BUDGET / MIB
    );

    // Only one message fits (whichever prefix the broker read first);
    // every other stream was refused.
    let mut statuses = tokio::task::JoinSet::new();
    let mut bodies = Vec::with_capacity(STREAMS);
    for (response, body) in streams {
        statuses.spawn(grpc_status(response));
        bodies.push(body);
    }
    for _ in 1..STREAMS {
        let ended = within("a refused stream", statuses.join_next()).await?;
        let (code, message) = ended.ok_or_else(|| anyhow::anyhow!("no stream left"))???;
        assert_eq!(code, Code::ResourceExhausted, "{message}");
        assert!(message.contains("max_receive_buffer_bytes"), "{message}");
    }
    assert_eq!(
        embedded.broker().metrics().refused_messages.get(),
        (STREAMS - 1) as u64
    );

    // The rest of the budget still takes an ordinary produce, and so does
    // all of it once the slow sender is gone.
    assert_eq!(clients.produce("t", 0, batch("a", 2)?).await?, 0);
    statuses.abort_all();
    drop((bodies, attacker));
    assert_eq!(clients.produce("t", 0, batch("b", 2)?).await?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_arrives_too_slowly_is_refused() -> anyhow::Result<()> {
    let mut config = BrokerConfig::default();
    config.limits.message_receive_timeout = Duration::from_millis(300);
    let embedded = EmbeddedBroker::builder().config(config).start().await?;
    let mut clients = Clients::connect(embedded.endpoint()).await?;
    clients.create_topic("t", 1, TopicConfig::default()).await?;

    let mut slow = raw_connection(embedded.addr()).await?;
    let (response, mut body) = open_stream(&mut slow, MIB as u32).await?;
    send_part(&mut body, 1024).await?;
    let (code, message) = grpc_status(response).await?;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("message_receive_timeout_ms"), "{message}");
    assert_eq!(clients.produce("t", 0, batch("a", 1)?).await?, 0);
    Ok(())
}

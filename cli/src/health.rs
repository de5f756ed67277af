//! `brook health`: asks a broker's HTTP endpoint whether it is healthy, for
//! container health checks (the image has no curl). Exits 0 on 200.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The broker's HTTP address.
    #[arg(long = "http", env = "BROOK_HEALTH_HTTP", default_value = brook_broker::config::DEFAULT_HTTP_LISTEN)]
    address: String,

    /// Which endpoint to ask: `health` (the full report), `live` (only what
    /// a restart mends) or `ready`.
    #[arg(long, default_value = "health", value_parser = ["health", "live", "ready"])]
    endpoint: String,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let status = tokio::time::timeout(timeout, get(&args.address, &args.endpoint))
        .await
        .with_context(|| format!("no answer from {} within {timeout:?}", args.address))??;
    if status != hyper::StatusCode::OK {
        bail!("/{} answered {status}", args.endpoint);
    }
    println!("{}: ok", args.endpoint);
    Ok(())
}

async fn get(address: &str, endpoint: &str) -> anyhow::Result<hyper::StatusCode> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(format!("/{endpoint}"))
        .header(hyper::header::HOST, address)
        .body(Empty::<Bytes>::new())
        .context("build the request")?;
    let response = sender.send_request(request).await.context("HTTP request")?;
    driver.abort();
    Ok(response.status())
}

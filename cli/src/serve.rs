//! `brook serve`: binds the listeners, opens the broker, announces the
//! bound addresses on stdout, and serves until SIGINT or SIGTERM.
//!
//! Invariant: the ready line is the only thing written to stdout, and only
//! once both listeners are bound and the broker has recovered its data.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use brook_broker::config::{DEFAULT_DATA_DIR, DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN};
use brook_broker::{Broker, BrokerConfig, FsyncPolicy};
use clap::Args;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::LogFormat;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where topics, segments and metadata are kept.
    #[arg(long, env = "BROOK_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,

    /// The gRPC address; port 0 picks a free port (see the ready line).
    #[arg(long, env = "BROOK_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: String,

    /// The HTTP address of health, readiness and metrics.
    #[arg(long, env = "BROOK_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    http_listen: String,

    /// When a produce is acknowledged: `always` (after fsync), `never`, or
    /// `interval:<ms>` (fsync every interval).
    #[arg(long, env = "BROOK_FSYNC", default_value_t = FsyncPolicy::Always)]
    fsync: FsyncPolicy,

    /// How often retention is applied, in milliseconds [default: the broker's, 60000].
    #[arg(
        long,
        env = "BROOK_RETENTION_CHECK_INTERVAL_MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    retention_check_interval_ms: Option<u64>,

    /// Log lines as text or as JSON objects (to stderr).
    #[arg(long, env = "BROOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (gRPC)", args.listen))?;
    let http = TcpListener::bind(&args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (HTTP)", args.http_listen))?;
    let grpc_addr = grpc.local_addr().context("read the gRPC address")?;
    let http_addr = http.local_addr().context("read the HTTP address")?;

    let mut config = BrokerConfig {
        data_dir: args.data_dir,
        listen: grpc_addr,
        http_listen: http_addr,
        fsync: args.fsync,
        ..BrokerConfig::default()
    };
    if let Some(ms) = args.retention_check_interval_ms {
        config.retention_check_interval = Duration::from_millis(ms);
    }
    if config.fsync != FsyncPolicy::Always {
        tracing::warn!(
            fsync = %config.fsync,
            "produces are acknowledged before they are fsynced: acknowledged records can be lost in a crash"
        );
    }
    // Installed before the ready line, so a signal sent right after it
    // shuts down gracefully instead of killing the process.
    let shutdown = shutdown_signal().context("install the signal handlers")?;
    let data_dir = config.data_dir.clone();
    let broker = Broker::open(config)
        .await
        .with_context(|| format!("cannot open the broker in {}", data_dir.display()))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "brook ready grpc={grpc_addr} http={http_addr}")
        .and_then(|()| stdout.flush())
        .context("write the ready line")?;
    drop(stdout);

    brook_broker::server::serve(broker, grpc, Some(http), shutdown)
        .await
        .context("the server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

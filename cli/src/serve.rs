//! `brook serve`: resolves the settings (flags > `BROOK_*` > `--config`
//! file > defaults), binds the listeners, and runs the broker until SIGINT
//! or SIGTERM. HTTP answers during recovery (`/ready` 503); the ready line
//! goes to stdout once the broker is open.
//!
//! Invariant: the ready line is the only thing written to stdout (besides
//! `--print-config`), and only once both listeners are bound and the broker
//! has recovered its data.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use brook_broker::FsyncPolicy;
use clap::Args;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::settings::{Settings, read_file};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings (the keys are the flags' names with
    /// underscores); flags and BROOK_* variables override it.
    #[arg(long, env = "BROOK_CONFIG")]
    config: Option<PathBuf>,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,

    #[command(flatten)]
    settings: Settings,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => Settings::default(),
    };
    let effective = args.settings.merge(file).resolve()?;
    if args.print_config {
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "{}", effective.to_toml()?)
            .and_then(|()| stdout.flush())
            .context("write the configuration")?;
        return Ok(());
    }
    crate::init_tracing(effective.log_format()?, &effective.log);
    let grpc = TcpListener::bind(&effective.listen)
        .await
        .with_context(|| format!("listen: cannot listen on {}", effective.listen))?;
    let http = TcpListener::bind(&effective.http_listen)
        .await
        .with_context(|| format!("http_listen: cannot listen on {}", effective.http_listen))?;
    let grpc_addr = grpc.local_addr().context("read the gRPC address")?;
    let http_addr = http.local_addr().context("read the HTTP address")?;
    let mut config = effective.broker_config()?;
    config.listen = grpc_addr;
    config.http_listen = http_addr;
    if config.fsync != FsyncPolicy::Always {
        tracing::warn!(
            fsync = %config.fsync,
            "produces are acknowledged before they are fsynced: acknowledged records can be lost in a crash"
        );
    }
    if !config.accept_data_loss.is_empty() {
        let partitions: Vec<String> = config
            .accept_data_loss
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            partitions = %partitions.join(","),
            "the operator accepts data loss in these partitions: any acknowledged records found missing are cut and the partition serves from its shortened end"
        );
    }
    // Installed before the ready line, so a signal sent right after it
    // shuts down gracefully instead of killing the process.
    let shutdown = shutdown_signal().context("install the signal handlers")?;
    let data_dir = config.data_dir.clone();
    let mut announced = Ok(());
    brook_broker::server::run(config, grpc, Some(http), shutdown, |_broker| {
        let mut stdout = std::io::stdout().lock();
        announced = writeln!(stdout, "brook ready grpc={grpc_addr} http={http_addr}")
            .and_then(|()| stdout.flush());
    })
    .await
    .with_context(|| format!("the broker on {} failed", data_dir.display()))?;
    announced.context("write the ready line")?;
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

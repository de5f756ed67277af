//! `brook`: run a broker, administer topics, and produce and consume
//! records from a shell. Each subcommand lives in its own module; this file
//! parses the command line and installs the tracing subscriber.

mod acl;
mod bench;
mod cluster;
mod connection;
mod consume;
mod drain;
mod group;
mod health;
mod produce;
mod quota;
mod recover;
mod serve;
mod settings;
mod table;
mod topic;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Brook: a partitioned, durable message log.
#[derive(Debug, Parser)]
#[command(name = "brook", version, about)]
struct Cli {
    #[command(flatten)]
    connect: connection::ConnectArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker until SIGINT or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Create, list, describe and delete topics; recover a quarantined one.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce each line of standard input as one record.
    Produce(produce::ProduceArgs),
    /// Print the values of a topic's records, one per line.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Add, remove and list the ACLs of a broker with `authorizer = acl`.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Set, remove and list client quotas: bytes per second a principal may produce and fetch.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// The cluster's brokers and who leads each partition.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Ask a broker's HTTP endpoint whether it is healthy (exit 0) or not.
    Health(health::HealthArgs),
    /// Measure a broker's throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Boxed: the commands' futures together are too large for the stack.
    match Box::pin(run(Cli::parse())).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the causes on one line, without a backtrace.
            // Written, not `eprintln!`ed: a full or closed stderr must not
            // turn a failure into a panic.
            let _unreported = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Health(args) => health::run(args).await,
        // Offline: it opens the data directory, not a connection.
        Command::Topic(topic::TopicCommand::Recover(args)) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            recover::run(args).await
        }
        // The client commands log quietly: they print results on stdout,
        // and only trouble goes to stderr.
        Command::Topic(command) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            topic::run(&cli.connect.connect().await?, command).await
        }
        Command::Produce(args) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            produce::run(&cli.connect.connect().await?, args).await
        }
        Command::Consume(args) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            consume::run(&cli.connect.connect_groups().await?, args).await
        }
        Command::Group(command) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            group::run(&cli.connect.connect_groups().await?, command).await
        }
        Command::Acl(command) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            acl::run(&cli.connect.connect().await?, command).await
        }
        Command::Quota(command) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            quota::run(&cli.connect.connect().await?, command).await
        }
        Command::Cluster(command) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            cluster::run(&cli.connect.connect().await?, command).await
        }
        Command::Bench(command) => {
            init_tracing(LogFormat::Text, &default_filter("warn"));
            bench::run(&cli.connect, command).await
        }
    }
}

/// `RUST_LOG` if set, else `level`.
fn default_filter(level: &str) -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_unset| level.to_owned())
}

/// Logs to stderr with a RUST_LOG-style filter.
///
/// Logging never affects the work: a line that cannot be written (stderr
/// on a full disk, or a pipe nobody reads any more) is dropped. The
/// subscriber's own report of such a failure is off, since it would go to
/// the same stderr with `eprintln!`, which panics when that fails too.
fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_invalid| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

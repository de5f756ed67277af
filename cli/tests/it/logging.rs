//! The broker's logging never affects its work: with stderr on a full
//! device, or a pipe nobody reads any more, it serves, answers /health and
//! stops on SIGTERM as usual.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{Server, brook, run};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt as _;

/// Topic creation, a produce and a consume through `server`, and `/health`.
async fn serves_normally(server: &Server, topic: &str) {
    let broker = server.endpoint();
    brook(
        &broker,
        &["topic", "create", topic, "--partitions", "2"],
        b"",
    )
    .await;
    let input = (0..200)
        .map(|i| format!("line-{i}"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let produced = brook(&broker, &["produce", topic], input.as_bytes()).await;
    assert_eq!(produced.trim(), "produced 200 records");
    let consumed = brook(
        &broker,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--count",
            "200",
            "--idle-timeout-ms",
            "5000",
        ],
        b"",
    )
    .await;
    assert_eq!(consumed.lines().count(), 200, "{consumed}");
    let health = run(&broker, &["health", "--http", &server.http], b"").await;
    assert!(
        health.status.success(),
        "health: {}",
        String::from_utf8_lossy(&health.stdout)
    );
}

async fn stops_on_sigterm(server: Server) {
    let status = server
        .stop_within(Signal::SIGTERM, Duration::from_secs(5))
        .await;
    assert!(status.success(), "exited with {status}");
}

/// Debug logs: a line for every request, so every request meets the
/// failing stderr.
const VERBOSE: [&str; 2] = ["--log", "debug"];

#[tokio::test]
async fn a_broker_logging_to_a_full_device_serves_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let server = Server::start_logging_to(dir.path(), &VERBOSE, Stdio::from(full)).await;
    serves_normally(&server, "full").await;
    stops_on_sigterm(server).await;
}

#[tokio::test]
async fn a_broker_whose_stderr_pipe_was_closed_serves_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    // stderr is a pipe this test reads until the broker is ready, then closes.
    let mut server = Server::start_logging_to(dir.path(), &VERBOSE, Stdio::piped()).await;
    let mut reader = server.take_stderr().expect("a piped stderr");
    let mut logged = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut logged)).await;
    assert!(
        matches!(read, Ok(Ok(n)) if n > 0),
        "the broker logged nothing: {read:?}"
    );
    drop(reader);
    serves_normally(&server, "closed").await;
    stops_on_sigterm(server).await;
}

//! Running the real `brook` binary: a server whose ready line is parsed,
//! and one-shot client commands. Every child is killed if a test fails
//! (`kill_on_drop`), and every wait is bounded.

#![allow(dead_code)] // Each test module uses a different part.

use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

/// How long a server may take to print its ready line, or to stop.
pub const SERVER_LIMIT: Duration = Duration::from_secs(30);
/// How long a client command may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

pub const BROOK: &str = env!("CARGO_BIN_EXE_brook");

/// A running `brook serve`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    /// The gRPC address from the ready line, `127.0.0.1:<port>`.
    pub grpc: String,
    pub http: String,
}

impl Server {
    /// Starts `brook serve` on free ports and waits for its ready line.
    pub async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[]).await
    }

    /// Like [`Server::start`], with more `brook serve` flags.
    pub async fn start_with(data_dir: &Path, flags: &[&str]) -> Server {
        Server::start_logging_to(data_dir, flags, Stdio::inherit()).await
    }

    /// Like [`Server::start_with`], with stderr (where logs go) on `stderr`.
    pub async fn start_logging_to(data_dir: &Path, flags: &[&str], stderr: Stdio) -> Server {
        Server::start_listening(data_dir, "127.0.0.1:0", flags, stderr).await
    }

    /// Like [`Server::start_with`], with gRPC on `listen` (a cluster's
    /// peers must know each other's addresses before they start).
    pub async fn start_listening(
        data_dir: &Path,
        listen: &str,
        flags: &[&str],
        stderr: Stdio,
    ) -> Server {
        let mut child = Command::new(BROOK)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--http-listen", "127.0.0.1:0"])
            .args(flags)
            // BROOK_TEST_SERVER_LOG raises the servers' log level when a
            // test is being looked into.
            .env(
                "RUST_LOG",
                std::env::var("BROOK_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn brook serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = timeout(SERVER_LIMIT, stdout.next_line())
            .await
            .expect("the ready line in time")
            .expect("read stdout")
            .expect("a ready line before stdout closes");
        let (grpc, http) = parse_ready(&line);
        Server {
            child,
            _stdout: stdout,
            grpc,
            http,
        }
    }

    /// The server's stderr, if it was started with it piped.
    pub fn take_stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The gRPC endpoint as a URI.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub async fn stop(self, signal: Signal) -> ExitStatus {
        self.stop_within(signal, Duration::from_secs(10)).await
    }

    /// Sends `signal` and waits up to `limit` for the process to exit.
    pub async fn stop_within(mut self, signal: Signal, limit: Duration) -> ExitStatus {
        let pid = self.child.id().expect("still running");
        kill(Pid::from_raw(pid as i32), signal).expect("send the signal");
        timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server exits within {limit:?}"))
            .expect("wait for the server")
    }
}

/// `brook ready grpc=<addr> http=<addr>` → the two addresses.
fn parse_ready(line: &str) -> (String, String) {
    let rest = line
        .strip_prefix("brook ready ")
        .unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    let mut grpc = None;
    let mut http = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("grpc", addr)) => grpc = Some(addr.to_owned()),
            Some(("http", addr)) => http = Some(addr.to_owned()),
            _ => panic!("unexpected field {field:?} in {line:?}"),
        }
    }
    let grpc = grpc.expect("grpc address");
    let http = http.expect("http address");
    assert!(!grpc.ends_with(":0"), "the real port, not 0: {line}");
    (grpc, http)
}

/// Runs `brook --broker <broker> <args>` with `stdin` as its input; panics
/// (showing stderr) unless it exits 0. Returns stdout.
pub async fn brook(broker: &str, args: &[&str], stdin: &[u8]) -> String {
    let output = run(broker, args, stdin).await;
    assert!(
        output.status.success(),
        "brook {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs a client command to completion (bounded), whatever its exit status.
pub async fn run(broker: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BROOK)
        .arg("--broker")
        .arg(broker)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn brook");
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    // Written concurrently with reading the output, so neither pipe fills up.
    let writer = tokio::spawn(async move {
        input.write_all(&stdin).await?;
        input.shutdown().await
    });
    let output = timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("brook {args:?} finishes in time"))
        .expect("wait for brook");
    writer
        .await
        .expect("the stdin writer")
        .expect("write stdin");
    output
}

/// Reads a partition of `topic` from offset 0 to its end, checking that
/// offsets are dense, and returns each record's value parsed as a sequence
/// number, in offset order.
pub async fn read_sequence_numbers(
    client: &brook_client::Client,
    topic: &str,
    partition: u32,
) -> Vec<u64> {
    let end = client
        .list_offsets(topic, partition, brook_client::OffsetSpec::Latest)
        .await
        .expect("the end offset");
    let options = brook_client::FetchOptions::default().with_max_wait(Duration::ZERO);
    let mut numbers = Vec::new();
    let mut offset = 0;
    while offset < end {
        let fetched = client
            .fetch(topic, partition, offset, options)
            .await
            .expect("fetch");
        assert_eq!(fetched.high_watermark, end);
        assert!(!fetched.records.is_empty(), "data below the high watermark");
        for record in fetched.records {
            assert_eq!(record.offset, offset, "dense offsets in {partition}");
            let value = record.value.expect("every record has a value");
            let seq: u64 = std::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.parse().ok())
                .expect("a sequence number");
            numbers.push(seq);
            offset += 1;
        }
    }
    numbers
}

/// Free loopback ports, chosen before any server starts (a cluster's peers
/// must know each other's addresses first).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

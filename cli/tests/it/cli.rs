//! The `brook` binary end to end: serve, topic, produce, consume, and a
//! graceful stop on SIGTERM.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use common::{Server, brook, run};
use nix::sys::signal::Signal;

/// Rows of the `topic describe` table: partition → (start, end).
fn partition_rows(describe: &str) -> BTreeMap<u32, (i64, i64)> {
    describe
        .lines()
        .skip_while(|line| !line.starts_with("PARTITION"))
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 5, "{line:?}");
            (
                cells[0].parse().expect("a partition number"),
                (
                    cells[1].parse().expect("a start offset"),
                    cells[2].parse().expect("an end offset"),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn produced_lines_are_consumed_and_the_server_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();
    // A bare host:port works as well as a URI.
    let bare = server.grpc.clone();

    let created = brook(&bare, &["topic", "create", "t", "--partitions", "3"], b"").await;
    assert_eq!(created.trim(), "created topic t with 3 partitions");
    let listed = brook(&broker, &["topic", "list"], b"").await;
    assert_eq!(listed, "TOPIC  PARTITIONS\nt               3\n");

    let lines: Vec<String> = (0..1_000)
        .map(|i| format!("key-{}:value-{i}", i % 17))
        .collect();
    let input = lines.join("\n") + "\n";
    let produced = brook(
        &broker,
        &["produce", "t", "--key-separator", ":"],
        input.as_bytes(),
    )
    .await;
    assert_eq!(produced.trim(), "produced 1000 records");

    let consumed = brook(
        &broker,
        &[
            "consume",
            "t",
            "--from-beginning",
            "--count",
            "1000",
            "--idle-timeout-ms",
            "5000",
        ],
        b"",
    )
    .await;
    let mut got: Vec<&str> = consumed.lines().collect();
    let mut want: Vec<String> = (0..1_000).map(|i| format!("value-{i}")).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);

    let described = brook(&broker, &["topic", "describe", "t"], b"").await;
    let rows = partition_rows(&described);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        rows.values().map(|(_, end)| end).sum::<i64>(),
        1_000,
        "{described}"
    );
    assert!(rows.values().all(|(start, _)| *start == 0));

    // Each key lands on one partition only.
    let mut partition_of_key: HashMap<String, u32> = HashMap::new();
    for (&partition, &(_, end)) in &rows {
        let partition_arg = partition.to_string();
        let count = end.to_string();
        let values = brook(
            &broker,
            &[
                "consume",
                "t",
                "--from-beginning",
                "--partition",
                &partition_arg,
                "--count",
                &count,
                "--idle-timeout-ms",
                "5000",
            ],
            b"",
        )
        .await;
        assert_eq!(values.lines().count() as i64, end);
        for value in values.lines() {
            let i: usize = value.strip_prefix("value-").unwrap().parse().unwrap();
            let key = format!("key-{}", i % 17);
            let first = *partition_of_key.entry(key.clone()).or_insert(partition);
            assert_eq!(first, partition, "{key} is on two partitions");
        }
    }
    assert_eq!(partition_of_key.len(), 17);

    // Without --from-beginning a consumer starts at the end: nothing to read.
    let latest = brook(&broker, &["consume", "t", "--idle-timeout-ms", "200"], b"").await;
    assert_eq!(latest, "");

    let status = server.stop(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn a_topic_s_settings_change_and_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();
    brook(&broker, &["topic", "create", "t", "--partitions", "1"], b"").await;

    let altered = brook(
        &broker,
        &[
            "topic",
            "alter",
            "t",
            "--retention-ms",
            "60000",
            "--segment-ms",
            "30000",
        ],
        b"",
    )
    .await;
    assert!(
        altered.contains("retention_ms=60000") && altered.contains("segment_ms=30000"),
        "{altered}"
    );
    let described = brook(&broker, &["topic", "describe", "t"], b"").await;
    assert!(described.contains("retention_ms=60000"), "{described}");
    let nothing = run(&broker, &["topic", "alter", "t"], b"").await;
    assert!(!nothing.status.success());
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert!(stderr.contains("at least one setting"), "{stderr}");

    let grown = brook(
        &broker,
        &["topic", "add-partitions", "t", "--partitions", "3"],
        b"",
    )
    .await;
    assert_eq!(grown.trim(), "topic t has 3 partitions");
    let fewer = run(
        &broker,
        &["topic", "add-partitions", "t", "--partitions", "2"],
        b"",
    )
    .await;
    assert!(!fewer.status.success());
    let stderr = String::from_utf8_lossy(&fewer.stderr);
    assert!(stderr.contains("must be larger"), "{stderr}");

    let status = server.stop(Signal::SIGINT).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn topics_are_deleted_and_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();

    brook(
        &broker,
        &["topic", "create", "gone", "--partitions", "1"],
        b"",
    )
    .await;
    let deleted = brook(&broker, &["topic", "delete", "gone"], b"").await;
    assert_eq!(deleted.trim(), "deleted topic gone");
    assert_eq!(
        brook(&broker, &["topic", "list"], b"").await,
        "TOPIC  PARTITIONS\n"
    );

    let missing = run(&broker, &["produce", "gone"], b"a\n").await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("NotFound"), "{stderr}");

    let status = server.stop(Signal::SIGINT).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

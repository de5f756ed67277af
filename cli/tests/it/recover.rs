//! `brook topic recover`: a topic whose metadata was lost is quarantined
//! at start, refused while a broker holds the data directory, brought back
//! with the broker stopped, and its records read again.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Server, brook, run};
use nix::sys::signal::Signal;

const TOPIC: &str = "orders";
const RECORDS: usize = 50;
/// No broker listens there: `topic recover` must not need one.
const NO_BROKER: &str = "http://127.0.0.1:1";

/// The directories in `<data>/quarantine/`.
fn quarantined(data: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data.join("quarantine")) {
        Ok(entries) => entries
            .map(|e| e.expect("a quarantine directory entry").path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read the quarantine directory: {e}"),
    }
}

async fn consume_all(broker: &str) -> Vec<String> {
    let count = RECORDS.to_string();
    let consumed = brook(
        broker,
        &[
            "consume",
            TOPIC,
            "--from-beginning",
            "--count",
            &count,
            "--idle-timeout-ms",
            "5000",
        ],
        b"",
    )
    .await;
    let mut values: Vec<String> = consumed.lines().map(str::to_owned).collect();
    values.sort_unstable();
    values
}

#[tokio::test]
async fn a_quarantined_topic_is_recovered_offline_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let data_arg = data.to_str().unwrap();
    let server = Server::start(data).await;
    let broker = server.endpoint();
    brook(
        &broker,
        &["topic", "create", TOPIC, "--partitions", "2"],
        b"",
    )
    .await;
    let mut want: Vec<String> = (0..RECORDS).map(|i| format!("value-{i}")).collect();
    let input = want.join("\n") + "\n";
    brook(&broker, &["produce", TOPIC], input.as_bytes()).await;
    want.sort_unstable();
    assert_eq!(server.stop(Signal::SIGTERM).await.code(), Some(0));

    // The metadata is lost: the next start moves the topic aside.
    std::fs::remove_dir_all(data.join("meta")).unwrap();
    let server = Server::start(data).await;
    let moved = quarantined(data);
    assert_eq!(moved.len(), 1, "{moved:?}");
    let moved_arg = moved[0].to_str().unwrap();
    assert!(
        moved[0]
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("orders.")),
        "{moved:?}"
    );
    let listed = brook(&server.endpoint(), &["topic", "list"], b"").await;
    assert!(!listed.contains(TOPIC), "{listed}");

    // A running broker holds the metadata store: refused, nothing changed.
    let refused = run(
        NO_BROKER,
        &["topic", "recover", moved_arg, "--data-dir", data_arg],
        b"",
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("locked by another process"), "{stderr}");
    assert_eq!(quarantined(data), moved);
    assert_eq!(server.stop(Signal::SIGTERM).await.code(), Some(0));

    let recovered = brook(
        NO_BROKER,
        &["topic", "recover", moved_arg, "--data-dir", data_arg],
        b"",
    )
    .await;
    let mut lines = recovered.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "recovered topic {TOPIC} with 2 partitions into {}",
                data.join("topics").join(TOPIC).display()
            )
            .as_str()
        ),
        "{recovered}"
    );
    let ends: usize = lines
        .skip(1)
        .map(|row| {
            let cells: Vec<&str> = row.split_whitespace().collect();
            cells[2].parse::<usize>().expect("an end offset")
        })
        .sum();
    assert_eq!(ends, RECORDS, "{recovered}");
    assert!(quarantined(data).is_empty());

    let server = Server::start(data).await;
    assert_eq!(consume_all(&server.endpoint()).await, want);
    assert_eq!(server.stop(Signal::SIGTERM).await.code(), Some(0));
}

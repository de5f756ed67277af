//! `brook consume --group` and `brook group` end to end: two runs of a
//! group print everything once in total, describe shows no lag, a reset
//! replays, and a group without members is deleted.

use crate::common;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use common::{Server, brook, run};

/// The `LAG` cells of `group describe`'s partition table, by partition.
fn lags(describe: &str) -> Vec<(u32, i64)> {
    describe
        .lines()
        .skip_while(|line| !line.starts_with("TOPIC"))
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert!(cells.len() >= 5, "{line:?}");
            (
                cells[1].parse().expect("a partition"),
                cells[4].parse().expect("a lag"),
            )
        })
        .collect()
}

fn lines(output: &str) -> Vec<String> {
    output.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_group_prints_everything_once_across_runs_and_replays_after_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();
    brook(&broker, &["topic", "create", "t", "--partitions", "3"], b"").await;
    let produced: Vec<String> = (0..300).map(|i| format!("record-{i}")).collect();
    // Keyed, so that every partition gets records.
    let mut input = String::new();
    for (i, value) in produced.iter().enumerate() {
        writeln!(input, "key-{i}:{value}").expect("writing to a String");
    }
    brook(
        &broker,
        &["produce", "t", "--key-separator", ":"],
        input.as_bytes(),
    )
    .await;
    let everything: BTreeSet<String> = produced.iter().cloned().collect();

    let consume = ["consume", "t", "--group", "g", "--from-beginning"];
    let first = lines(&brook(&broker, &[&consume[..], &["--count", "120"]].concat(), b"").await);
    assert_eq!(first.len(), 120);
    let second = lines(
        &brook(
            &broker,
            &[&consume[..], &["--idle-timeout-ms", "1500"]].concat(),
            b"",
        )
        .await,
    );
    assert_eq!(
        first.len() + second.len(),
        300,
        "each record printed once in total"
    );
    let printed: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(printed, everything);

    let describe = brook(&broker, &["group", "describe", "g"], b"").await;
    assert!(describe.starts_with("group g  state empty"), "{describe}");
    let lag = lags(&describe);
    assert_eq!(lag, [(0, 0), (1, 0), (2, 0)], "{describe}");

    let listed = brook(&broker, &["group", "list"], b"").await;
    assert_eq!(listed, "GROUP  STATE  MEMBERS\ng      empty        0\n");

    let reset = brook(
        &broker,
        &["group", "reset", "g", "--topic", "t", "--to-earliest"],
        b"",
    )
    .await;
    assert_eq!(
        reset.lines().count(),
        4,
        "a header and three partitions: {reset}"
    );
    let replayed = lines(
        &brook(
            &broker,
            &[&consume[..], &["--idle-timeout-ms", "1500"]].concat(),
            b"",
        )
        .await,
    );
    assert_eq!(replayed.len(), 300);
    assert_eq!(replayed.into_iter().collect::<BTreeSet<_>>(), everything);

    let describe = brook(&broker, &["group", "describe", "g"], b"").await;
    assert!(
        lags(&describe).iter().all(|&(_, lag)| lag == 0),
        "{describe}"
    );
    // An exact offset on one partition: its whole log is lag again.
    brook(
        &broker,
        &[
            "group",
            "reset",
            "g",
            "--topic",
            "t",
            "--partition",
            "0",
            "--to-offset",
            "0",
        ],
        b"",
    )
    .await;
    let describe = brook(&broker, &["group", "describe", "g"], b"").await;
    let row: Vec<&str> = describe
        .lines()
        .find(|line| line.starts_with("t ") && line.split_whitespace().nth(1) == Some("0"))
        .expect("partition 0's row")
        .split_whitespace()
        .collect();
    assert_eq!(row[2], "0", "committed: {describe}");
    assert_eq!(row[4], row[3], "lag = end: {describe}");

    let deleted = brook(&broker, &["group", "delete", "g"], b"").await;
    assert_eq!(deleted.trim(), "deleted group g");
    let listed = brook(&broker, &["group", "list"], b"").await;
    assert_eq!(listed, "GROUP  STATE  MEMBERS\n");
    let missing = run(&broker, &["group", "delete", "g"], b"").await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("delete group g"), "{stderr}");
}

#[tokio::test]
async fn reset_needs_exactly_one_target_and_consume_group_refuses_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();
    let neither = run(&broker, &["group", "reset", "g", "--topic", "t"], b"").await;
    assert!(!neither.status.success());
    let both = run(
        &broker,
        &[
            "group",
            "reset",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-offset",
            "3",
        ],
        b"",
    )
    .await;
    assert!(!both.status.success());
    let conflicting = run(
        &broker,
        &["consume", "t", "--group", "g", "--partition", "0"],
        b"",
    )
    .await;
    assert!(!conflicting.status.success());
}

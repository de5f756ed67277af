//! `brook quota set/list/remove` against a running broker: quotas set for
//! a principal and as the default are listed (as a table and as JSON),
//! survive a restart, and are removed; a rate of 0 is refused naming the
//! field, and a quota without a rate or without a target is refused by
//! the command line.

use nix::sys::signal::Signal;

use crate::common::{Server, brook, run};

#[tokio::test]
async fn quotas_are_set_listed_kept_across_a_restart_and_removed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();

    let set = brook(
        &broker,
        &[
            "quota",
            "set",
            "--principal",
            "alice",
            "--produce-bytes-per-sec",
            "1000",
        ],
        b"",
    )
    .await;
    assert_eq!(
        set.trim(),
        "set principal alice: produce 1000 B/s fetch unlimited"
    );
    brook(
        &broker,
        &["quota", "set", "--default", "--fetch-bytes-per-sec", "5000"],
        b"",
    )
    .await;
    // Set again: the quota is replaced, rates not given are no limit.
    brook(
        &broker,
        &[
            "quota",
            "set",
            "--principal",
            "alice",
            "--produce-bytes-per-sec",
            "2000",
            "--fetch-bytes-per-sec",
            "3000",
        ],
        b"",
    )
    .await;
    let expected_table = "PRINCIPAL  PRODUCE_BYTES_PER_SEC  FETCH_BYTES_PER_SEC\n\
                          (default)                      -                 5000\n\
                          alice                       2000                 3000\n";
    assert_eq!(
        brook(&broker, &["quota", "list"], b"").await,
        expected_table
    );

    server.stop(Signal::SIGTERM).await;
    let server = Server::start(dir.path()).await;
    let broker = server.endpoint();
    let listed = brook(&broker, &["quota", "list", "--json"], b"").await;
    let json: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!([
            {"principal": null, "default": true,
             "produce_bytes_per_second": null, "fetch_bytes_per_second": 5000},
            {"principal": "alice", "default": false,
             "produce_bytes_per_second": 2000, "fetch_bytes_per_second": 3000},
        ])
    );

    let zero = run(
        &broker,
        &[
            "quota",
            "set",
            "--principal",
            "bob",
            "--produce-bytes-per-sec",
            "0",
        ],
        b"",
    )
    .await;
    assert!(!zero.status.success());
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("produce_bytes_per_second"),
        "{stderr}"
    );
    for refused in [
        &["quota", "set", "--principal", "bob"][..],
        &["quota", "set", "--produce-bytes-per-sec", "5"][..],
        &[
            "quota",
            "set",
            "--default",
            "--principal",
            "bob",
            "--produce-bytes-per-sec",
            "5",
        ][..],
        &["quota", "remove"][..],
    ] {
        let output = run(&broker, refused, b"").await;
        assert!(!output.status.success(), "{refused:?} was taken");
    }

    let removed = brook(&broker, &["quota", "remove", "--principal", "alice"], b"").await;
    assert_eq!(removed.trim(), "removed principal alice");
    brook(&broker, &["quota", "remove", "--default"], b"").await;
    let missing = run(&broker, &["quota", "remove", "--default"], b"").await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert_eq!(
        brook(&broker, &["quota", "list", "--json"], b"")
            .await
            .trim(),
        "[]"
    );
    server.stop(Signal::SIGTERM).await;
}

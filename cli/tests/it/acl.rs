//! `brook acl` against a `brook serve --authorizer acl`: a superuser
//! grants, lists and revokes; the grant takes effect on the next request,
//! and so does its removal.

use nix::sys::signal::Signal;

use crate::common::{Server, brook, run};

const OPS_TOKEN: &str = "cli-test-token-6d0f";
const DEV_TOKEN: &str = "cli-test-dev-token-41c2";

#[tokio::test]
async fn acl_commands_grant_list_and_revoke() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let tokens = data.path().join("tokens");
    std::fs::write(
        &tokens,
        "ops sha256:5cdfcf405e6b528bde1ccb02668309cba88612020f9745332c290025c32e0965\n\
         dev sha256:60bdb39e9cef290d324bd90ff175f519422cad1153756b8d76b44bdcbd5eaa1c\n",
    )
    .expect("write the token file");
    let tokens = tokens.display().to_string();
    let server = Server::start_with(
        &data.path().join("data"),
        &[
            "--auth",
            "token",
            "--token-file",
            &tokens,
            "--authorizer",
            "acl",
            "--super-users",
            "ops",
        ],
    )
    .await;
    let broker = server.grpc.clone();
    let ops = ["--token", OPS_TOKEN];
    let dev = ["--token", DEV_TOKEN];
    let create = ["topic", "create", "dev.events", "--partitions", "1"];
    let grant = [
        "--principal",
        "dev",
        "--operation",
        "create",
        "--topic-prefix",
        "dev.",
    ];

    let refused = run(&broker, &[&dev[..], &create[..]].concat(), b"").await;
    assert!(!refused.status.success(), "created without an ACL");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("topic:dev.events"),
        "{stderr}"
    );
    let refused = run(
        &broker,
        &[&dev[..], &["acl", "add"], &grant[..]].concat(),
        b"",
    )
    .await;
    assert!(!refused.status.success(), "dev granted itself an ACL");

    let added = brook(
        &broker,
        &[&ops[..], &["acl", "add"], &grant[..]].concat(),
        b"",
    )
    .await;
    assert_eq!(added.trim(), "added: allow dev create topic:dev.*");
    let listed = brook(&broker, &[&ops[..], &["acl", "list"]].concat(), b"").await;
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["PRINCIPAL", "OPERATION", "RESOURCE", "PERMISSION"],
            vec!["dev", "create", "topic:dev.*", "allow"],
        ],
        "{listed}"
    );
    brook(&broker, &[&dev[..], &create[..]].concat(), b"").await;

    brook(
        &broker,
        &[&ops[..], &["acl", "remove"], &grant[..]].concat(),
        b"",
    )
    .await;
    let again = ["topic", "create", "dev.other", "--partitions", "1"];
    let refused = run(&broker, &[&dev[..], &again[..]].concat(), b"").await;
    assert!(
        !refused.status.success(),
        "created after the ACL was removed"
    );
    let missing = run(
        &broker,
        &[&ops[..], &["acl", "remove"], &grant[..]].concat(),
        b"",
    )
    .await;
    assert!(!missing.status.success(), "removed an ACL twice");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no such ACL"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    server.stop(Signal::SIGTERM).await;
}

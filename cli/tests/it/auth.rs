//! The client commands against a `brook serve --auth token`: with
//! `--token` (or `--token-file`) they create, produce and consume; without it, or with another
//! token, they fail with UNAUTHENTICATED's message. `brook serve --auth
//! mtls` without required client certificates refuses to start.

use std::process::Stdio;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::time::timeout;

use crate::common::{BROOK, COMMAND_LIMIT, Server, brook, run};

const TOKEN: &str = "cli-test-token-6d0f";
/// `printf %s cli-test-token-6d0f | sha256sum`
const TOKEN_SHA256: &str =
    "sha256:5cdfcf405e6b528bde1ccb02668309cba88612020f9745332c290025c32e0965";

#[tokio::test]
async fn client_commands_send_their_token() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let tokens = data.path().join("tokens");
    std::fs::write(&tokens, format!("ops {TOKEN_SHA256}\n")).expect("write the token file");
    let tokens = tokens.display().to_string();
    let server = Server::start_with(
        &data.path().join("data"),
        &["--auth", "token", "--token-file", &tokens],
    )
    .await;
    let broker = server.grpc.clone();

    for args in [&[][..], &["--token", "someone-elses"][..]] {
        let refused = run(&broker, &[args, &["topic", "list"]].concat(), b"").await;
        assert!(!refused.status.success(), "served with {args:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("Unauthenticated"), "{stderr}");
        assert!(!stderr.contains("someone-elses"), "{stderr}");
    }

    let token = ["--token", TOKEN];
    let created = brook(
        &broker,
        &[&token[..], &["topic", "create", "ops", "--partitions", "1"]].concat(),
        b"",
    )
    .await;
    assert_eq!(created.trim(), "created topic ops with 1 partitions");
    brook(
        &broker,
        &[&token[..], &["produce", "ops"]].concat(),
        b"one\ntwo\n",
    )
    .await;
    let consumed = brook(
        &broker,
        &[
            &token[..],
            &["consume", "ops", "--from-beginning", "--count", "2"],
        ]
        .concat(),
        b"",
    )
    .await;
    assert_eq!(consumed, "one\ntwo\n");

    // The token from a file, as a projected ServiceAccount token is mounted.
    let token_file = data.path().join("client-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the client's token");
    let listed = brook(
        &broker,
        &[
            "--token-file",
            &token_file.display().to_string(),
            "topic",
            "list",
        ],
        b"",
    )
    .await;
    assert!(listed.contains("ops"), "{listed}");

    // The bench's connections send it too: consume fills its topic over the
    // raw produce stream, then reads it through the client.
    let report = brook(
        &broker,
        &[
            &token[..],
            &[
                "bench",
                "consume",
                "--records",
                "2000",
                "--partitions",
                "2",
                "--json",
            ],
        ]
        .concat(),
        b"",
    )
    .await;
    assert!(report.contains("\"records\":2000"), "{report}");
    server.stop(Signal::SIGTERM).await;
}

#[tokio::test]
async fn serve_refuses_mtls_without_required_client_certificates() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(BROOK)
        .args(["serve", "--auth", "mtls", "--print-config", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = timeout(COMMAND_LIMIT, output)
        .await
        .expect("brook serve finishes in time")
        .expect("run brook serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls_client_auth = required"), "{stderr}");
}

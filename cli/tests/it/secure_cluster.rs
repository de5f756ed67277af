//! Three `brook serve` with TLS on their gRPC port and token
//! authentication: the brokers call each other over TLS, each presenting
//! the token of the super user `broker`; a topic with three replicas takes
//! a producer's records and every broker ends up holding them. A broker
//! told to authenticate clients but given no token of its own for its
//! peers does not start.

use std::process::Stdio;
use std::time::Duration;

use brook_client::{
    BearerToken, ClientOptions, Pem, Producer, ProducerConfig, ProducerRecord, TlsOptions,
};
use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::process::Command;

use crate::common;
use crate::three_brokers::{Cluster, create_replicated_topic};
use crate::tls::certificates;

const TOPIC: &str = "secure";
const PEER_TOKEN: &str = "peer-token-5c1e";
/// `printf %s peer-token-5c1e | sha256sum`
const PEER_TOKEN_SHA256: &str = "c3428a2567adbb08291c5003f998ae2aa8d9914df24d329ba66e8cef740e5f09";
const OPS_TOKEN: &str = "ops-token-9a4b";
/// `printf %s ops-token-9a4b | sha256sum`
const OPS_TOKEN_SHA256: &str = "0ab63c0ae2d4b43cee27f8c619f4a869cbba081fc99afe5b8f9cef8fdf962cfc";

#[tokio::test]
async fn brokers_with_tls_and_tokens_replicate_to_each_other() {
    let files = tempfile::tempdir().expect("a temporary directory");
    let (ca, cert, key) = certificates(files.path());
    let tokens = files.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("broker sha256:{PEER_TOKEN_SHA256}\nops sha256:{OPS_TOKEN_SHA256}\n"),
    )
    .expect("write the token file");
    let peer_token = files.path().join("peer-token");
    std::fs::write(&peer_token, format!("{PEER_TOKEN}\n")).expect("write the peers' token");
    let flags: Vec<String> = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--peer-ca",
        &ca,
        "--auth",
        "token",
        "--token-file",
        &tokens.display().to_string(),
        "--peer-token-file",
        &peer_token.display().to_string(),
        "--super-users",
        "broker",
    ]
    .iter()
    .map(|flag| (*flag).to_owned())
    .collect();
    let mut options = ClientOptions::default();
    options.tls = Some(TlsOptions::default().with_ca(Pem::from_file(&ca)));
    options.bearer_token = Some(BearerToken::new(OPS_TOKEN).expect("a token"));
    let cluster = Cluster::start_with(flags, options).await;

    let client = cluster.connect(1).await.expect("connect over TLS");
    create_replicated_topic(&client, TOPIC).await;
    let producer = Producer::new(client, ProducerConfig::default());
    for seq in 0..100u64 {
        let record = ProducerRecord::new(TOPIC, Bytes::from(seq.to_string()));
        tokio::time::timeout(Duration::from_secs(30), producer.send(record))
            .await
            .expect("acknowledged in time")
            .unwrap_or_else(|e| panic!("record {seq}: {e}"));
    }
    producer.close().await;
    // Every replica caught up: the brokers' pings (over TLS, with the
    // peers' token) say so.
    cluster.leader(TOPIC, &[1, 2, 3]).await;
    for id in 1..=3 {
        let replica = cluster.connect(id).await.expect("connect");
        let log = common::read_sequence_numbers(&replica, TOPIC, 0).await;
        assert_eq!(log, (0..100).collect::<Vec<u64>>(), "broker {id}'s log");
    }
    for server in cluster.servers.into_iter().flatten() {
        server.stop(Signal::SIGTERM).await;
    }
}

#[tokio::test]
async fn a_broker_authenticating_clients_needs_a_token_for_its_peers() {
    let files = tempfile::tempdir().expect("a temporary directory");
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, format!("broker sha256:{PEER_TOKEN_SHA256}\n")).expect("write");
    let output = Command::new(common::BROOK)
        .args(["serve", "--data-dir"])
        .arg(files.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--node-id",
            "1",
            "--peers",
            "1=127.0.0.1:1",
            "--auth",
            "token",
            "--token-file",
        ])
        .arg(&tokens)
        .args(["--super-users", "broker"])
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("brook serve ends in time")
        .expect("run brook serve");
    assert!(!output.status.success(), "brook serve started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("peer_token_file"), "{stderr}");
}

//! The client commands against a `brook serve` with TLS on its gRPC port:
//! with `--tls-ca` and a plain `host:port` they create a topic, produce,
//! consume and run a bench; without the CA they fail naming the
//! certificate problem.

use std::path::Path;

use nix::sys::signal::Signal;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::common::{Server, brook, run};

/// Writes a CA and a broker certificate for `localhost` and 127.0.0.1,
/// signed by it, into `dir`; returns the paths of the CA, the certificate
/// and its key.
pub fn certificates(dir: &Path) -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key")).expect("a CA");
    let key = KeyPair::generate().expect("a broker key");
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("broker parameters")
        .signed_by(&key, &ca)
        .expect("a broker certificate");
    let path = |name: &str, contents: String| {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write a PEM file");
        path.display().to_string()
    };
    (
        path("ca.pem", ca.pem()),
        path("broker.pem", cert.pem()),
        path("broker.key", key.serialize_pem()),
    )
}

#[tokio::test]
async fn client_commands_speak_tls_with_the_brokers_ca() {
    let certs = tempfile::tempdir().expect("a temporary directory");
    let data = tempfile::tempdir().expect("a temporary directory");
    let (ca, cert, key) = certificates(certs.path());
    let server = Server::start_with(data.path(), &["--tls-cert", &cert, "--tls-key", &key]).await;
    let broker = server.grpc.clone();

    let tls = ["--tls-ca", ca.as_str()];
    let created = brook(
        &broker,
        &[
            &tls[..],
            &["topic", "create", "secure", "--partitions", "1"],
        ]
        .concat(),
        b"",
    )
    .await;
    assert_eq!(created.trim(), "created topic secure with 1 partitions");
    brook(
        &broker,
        &[&tls[..], &["produce", "secure"]].concat(),
        b"one\ntwo\n",
    )
    .await;
    let consumed = brook(
        &broker,
        &[
            &tls[..],
            &["consume", "secure", "--from-beginning", "--count", "2"],
        ]
        .concat(),
        b"",
    )
    .await;
    assert_eq!(consumed, "one\ntwo\n");

    // The bench's connections too: consume fills the topic over the raw
    // stream, then reads it through the client.
    let report = brook(
        &broker,
        &[
            &tls[..],
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

    // Without the CA the broker's certificate is not trusted, and the
    // error says so.
    let untrusted = run(&format!("https://{broker}"), &["topic", "list"], b"").await;
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");

    // TLS flags with an http:// address are refused, not ignored.
    let plain = run(
        &format!("http://{broker}"),
        &[&tls[..], &["topic", "list"]].concat(),
        b"",
    )
    .await;
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("plaintext endpoint"), "{stderr}");

    server.stop(Signal::SIGTERM).await;
}

//! TLS on the gRPC port: only clients that trust the broker's CA get in,
//! plaintext is refused, client certificates are required when configured,
//! and rewritten certificate files are used for new connections while open
//! ones keep theirs.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use brook_broker::{BrokerConfig, ClientAuth, EmbeddedBroker, TlsConfig};
use brook_proto::TopicConfig;
use common::{Clients, WAIT, batch, within};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority that signs the test's certificates.
pub(crate) struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub(crate) struct Signed {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Authority {
    pub(crate) fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub(crate) fn sign(&self, names: &[&str]) -> anyhow::Result<Signed> {
        self.sign_with(names, |_| {})
    }

    pub(crate) fn sign_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> anyhow::Result<Signed> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        adjust(&mut params);
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Signed {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Writes the broker's certificate and key (and the client CA) into `dir`.
pub(crate) fn write_files(
    dir: &Path,
    server: &Signed,
    client_ca: Option<&Authority>,
) -> anyhow::Result<TlsConfig> {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, &server.cert)?;
    std::fs::write(&key, &server.key)?;
    let mut tls = TlsConfig::new(cert, key);
    if let Some(ca) = client_ca {
        let path: PathBuf = dir.join("clients-ca.crt");
        std::fs::write(&path, ca.pem())?;
        tls.client_ca = Some(path);
        tls.client_auth = ClientAuth::Required;
    }
    tls.reload_interval = Duration::from_millis(50);
    Ok(tls)
}

async fn start(tls: TlsConfig) -> anyhow::Result<EmbeddedBroker> {
    let mut config = BrokerConfig::default();
    config.tls = Some(tls);
    Ok(EmbeddedBroker::builder().config(config).start().await?)
}

/// A channel over TLS trusting `ca`, with a client certificate if given.
pub(crate) async fn connect(
    embedded: &EmbeddedBroker,
    ca: &Authority,
    identity: Option<&Signed>,
) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    let endpoint = format!("https://127.0.0.1:{}", embedded.addr().port());
    let endpoint = Channel::from_shared(endpoint)?
        .tls_config(tls)?
        .connect_timeout(WAIT);
    Ok(within("connecting over TLS", endpoint.connect()).await??)
}

/// Creates a topic, produces and reads back over `channel`.
async fn round_trip(channel: Channel, topic: &str) -> anyhow::Result<()> {
    let mut clients = Clients::over(channel);
    clients
        .create_topic(topic, 1, TopicConfig::default())
        .await?;
    clients.produce(topic, 0, batch("tls", 3)?).await?;
    let records = clients.fetch_all(topic, 0, 0).await?;
    ensure!(records.len() == 3, "{} records read back", records.len());
    Ok(())
}

#[tokio::test]
async fn only_clients_that_trust_the_brokers_ca_get_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let broker = start(write_files(
        dir.path(),
        &ca.sign(&["localhost", "127.0.0.1"])?,
        None,
    )?)
    .await?;

    round_trip(connect(&broker, &ca, None).await?, "secure").await?;

    // Plaintext against the TLS port fails, and so does a client that
    // trusts another CA.
    let plain = Clients::connect(broker.endpoint()).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut clients) => clients
            .create_topic("plain", 1, TopicConfig::default())
            .await
            .is_err(),
    };
    ensure!(refused, "a plaintext client was served");
    let stranger = Authority::new("Another CA")?;
    ensure!(
        connect(&broker, &stranger, None).await.is_err(),
        "a client trusting another CA connected"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn required_client_certificates_must_chain_to_the_client_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let clients_ca = Authority::new("Brook clients CA")?;
    let tls = write_files(
        dir.path(),
        &ca.sign(&["localhost", "127.0.0.1"])?,
        Some(&clients_ca),
    )?;
    let broker = start(tls).await?;

    let member = clients_ca.sign(&["orders-service"])?;
    round_trip(connect(&broker, &ca, Some(&member)).await?, "mutual").await?;

    // Without a certificate, or with one the client CA did not sign, the
    // handshake (or the first call over it) fails.
    let outsider = ca.sign(&["outsider"])?;
    for identity in [None, Some(&outsider)] {
        let served = match connect(&broker, &ca, identity).await {
            Err(_) => false,
            Ok(channel) => Clients::over(channel)
                .create_topic("nope", 1, TopicConfig::default())
                .await
                .is_ok(),
        };
        ensure!(
            !served,
            "served a client with identity {:?}",
            identity.map(|i| &i.cert[..40])
        );
    }
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn rewritten_certificate_files_serve_new_connections_and_open_ones_go_on()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let old_ca = Authority::new("Old CA")?;
    let tls = write_files(dir.path(), &old_ca.sign(&["localhost"])?, None)?;
    let broker = start(tls).await?;
    let open = connect(&broker, &old_ca, None).await?;
    round_trip(open.clone(), "before").await?;

    // Rotate: a certificate from a new CA, written over the old files.
    let new_ca = Authority::new("New CA")?;
    write_files(dir.path(), &new_ca.sign(&["localhost"])?, None)?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if connect(&broker, &new_ca, None).await.is_ok() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the rewritten certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        connect(&broker, &old_ca, None).await.is_err(),
        "new connections still get the old certificate"
    );
    // The connection opened before the rotation still works.
    round_trip(open, "after")
        .await
        .context("the open connection")?;
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_broker_with_unreadable_tls_files_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = TlsConfig::new(dir.path().join("none.crt"), dir.path().join("none.key"));
    let error = start(missing)
        .await
        .err()
        .context("started without a certificate")?;
    ensure!(error.to_string().contains("none.crt"), "{error}");
    std::fs::write(dir.path().join("empty.crt"), "")?;
    std::fs::write(dir.path().join("empty.key"), "")?;
    let empty = TlsConfig::new(dir.path().join("empty.crt"), dir.path().join("empty.key"));
    let error = start(empty)
        .await
        .err()
        .context("started with an empty certificate")?;
    ensure!(
        error.to_string().contains("holds no certificate"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_broker_certificate_is_refused_by_clients() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let expired = ca.sign_with(&["localhost"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    })?;
    let broker = start(write_files(dir.path(), &expired, None)?).await?;
    let error = connect(&broker, &ca, None)
        .await
        .err()
        .context("a client accepted an expired certificate")?;
    let chain = format!("{error:#}");
    ensure!(chain.to_lowercase().contains("expired"), "{chain}");
    broker.shutdown().await?;
    Ok(())
}

/// With `http`, the HTTP port serves HTTPS with the same certificate.
#[tokio::test]
async fn the_http_port_can_serve_tls_too() -> anyhow::Result<()> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let mut tls = write_files(dir.path(), &ca.sign(&["localhost"])?, None)?;
    tls.http = true;
    let broker = start(tls).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (http, server) = crate::damage::serve_http(&broker, &stop).await?;

    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes())?;
    roots.add(ca_der)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(http).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let mut stream = within("HTTPS handshake", connector.connect(name, tcp)).await??;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    within("HTTPS answer", stream.read_to_string(&mut answer)).await??;
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP to the same port gets no answer.
    let (status, _) = crate::http::get(http, "/health")
        .await
        .unwrap_or((0, String::new()));
    ensure!(status != 200, "plain HTTP was served on a TLS port");
    stop.cancel();
    let _ = server.await;
    Ok(())
}

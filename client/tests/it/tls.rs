//! The client over TLS against an in-process broker with TLS: trusting the
//! broker's CA it produces and consumes; without that CA, or in plaintext,
//! it fails with an error that says why; a broker that requires client
//! certificates serves a client with one and refuses one without.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use brook_broker::{BrokerConfig, ClientAuth, EmbeddedBroker, TlsConfig};
use brook_client::{
    Client, ClientError, ClientOptions, ErrorKind, FetchOptions, NewRecord, Pem, TlsIdentity,
    TlsOptions, TopicConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);

/// A certificate authority that signs the test's certificates.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Signed {
    cert: String,
    key: String,
}

impl Authority {
    fn new(name: &str) -> anyhow::Result<Self> {
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

    fn pem(&self) -> Pem {
        Pem::from_bytes(self.issuer.pem())
    }

    fn sign(&self, names: &[&str]) -> anyhow::Result<Signed> {
        let key = KeyPair::generate()?;
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Signed {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

impl Signed {
    fn identity(&self) -> TlsIdentity {
        TlsIdentity::new(
            Pem::from_bytes(self.cert.clone()),
            Pem::from_bytes(self.key.clone()),
        )
    }
}

/// A broker with TLS on its gRPC port, its certificate issued by `ca` for
/// `localhost` and 127.0.0.1; requiring client certificates signed by
/// `clients_ca` if given.
async fn start(
    dir: &Path,
    ca: &Authority,
    clients_ca: Option<&Authority>,
) -> anyhow::Result<EmbeddedBroker> {
    let server = ca.sign(&["localhost", "127.0.0.1"])?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &server.cert)?;
    std::fs::write(&key, &server.key)?;
    let mut tls = TlsConfig::new(cert, key);
    if let Some(clients_ca) = clients_ca {
        let path = dir.join("clients-ca.crt");
        std::fs::write(&path, clients_ca.issuer.pem())?;
        tls.client_ca = Some(path);
        tls.client_auth = ClientAuth::Required;
    }
    let mut config = BrokerConfig::default();
    config.tls = Some(tls);
    Ok(EmbeddedBroker::builder().config(config).start().await?)
}

async fn connect(address: String, tls: Option<TlsOptions>) -> Result<Client, ClientError> {
    let mut options = ClientOptions::default().with_connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    timeout(LIMIT, Client::connect_with(address, options))
        .await
        .expect("connect in time")
}

/// Creates a topic, produces three records and fetches them back.
async fn round_trip(client: &Client, topic: &str) -> Result<(), ClientError> {
    client
        .create_topic(topic, 1, TopicConfig::default())
        .await?;
    let records: Vec<NewRecord> = (0..3)
        .map(|i| NewRecord {
            value: Some(format!("over tls {i}").into()),
            ..NewRecord::default()
        })
        .collect();
    let ack = client.produce(topic, 0, &records).await?;
    let fetched = client
        .fetch(topic, 0, ack.base_offset, FetchOptions::default())
        .await?;
    assert_eq!(fetched.records.len(), 3);
    assert_eq!(
        fetched.records[2].value.as_deref(),
        Some(&b"over tls 2"[..])
    );
    Ok(())
}

/// The error, or the first call's: a handshake the broker ends after the
/// client's side of it completed (TLS 1.3) fails only there.
async fn refusal(address: String, tls: Option<TlsOptions>) -> anyhow::Result<ClientError> {
    match connect(address, tls).await {
        Err(error) => Ok(error),
        Ok(client) => match timeout(LIMIT, client.list_topics()).await? {
            Err(error) => Ok(error),
            Ok(topics) => anyhow::bail!("served: {topics:?}"),
        },
    }
}

/// The error with its causes, as `brook` prints it.
fn chain(error: ClientError) -> String {
    format!("{:#}", anyhow::Error::new(error))
}

#[tokio::test]
async fn a_client_trusting_the_brokers_ca_produces_and_consumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let broker = start(dir.path(), &ca, None).await?;
    let port = broker.addr().port();

    // host:port with TLS settings means https.
    let client = connect(
        format!("127.0.0.1:{port}"),
        Some(TlsOptions::default().with_ca(ca.pem())),
    )
    .await?;
    round_trip(&client, "by-address").await?;

    // The CA as a file, and an explicit https:// URI by name.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem())?;
    let client = connect(
        format!("https://localhost:{port}"),
        Some(TlsOptions::default().with_ca(Pem::from_file(&ca_file))),
    )
    .await?;
    round_trip(&client, "by-name").await?;
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_server_name_override_checks_the_certificate_against_that_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let broker = start(dir.path(), &ca, None).await?;
    let address = format!("127.0.0.1:{}", broker.addr().port());
    let tls = TlsOptions::default().with_ca(ca.pem());

    let client = connect(
        address.clone(),
        Some(tls.clone().with_server_name("localhost")),
    )
    .await?;
    round_trip(&client, "named").await?;
    // A name the certificate was not issued for is refused.
    let error = refusal(address, Some(tls.with_server_name("broker.elsewhere"))).await?;
    let message = chain(error);
    ensure!(message.contains("certificate"), "{message}");
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_client_without_the_ca_or_without_tls_is_refused_clearly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let broker = start(dir.path(), &ca, None).await?;
    let address = format!("127.0.0.1:{}", broker.addr().port());

    // Trusting another CA: the broker's certificate is not trusted.
    let stranger = Authority::new("Another CA")?;
    let error = refusal(
        address.clone(),
        Some(TlsOptions::default().with_ca(stranger.pem())),
    )
    .await?;
    let message = chain(error);
    ensure!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );

    // Plaintext against the TLS port: the broker cannot read the request
    // and closes the connection, which is all a plaintext client can see.
    let error = refusal(format!("http://{address}"), None).await?;
    ensure!(error.kind() == ErrorKind::Unavailable, "{}", chain(error));
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_required_client_certificate_is_presented_or_the_client_is_refused() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let clients_ca = Authority::new("Brook clients CA")?;
    let broker = start(dir.path(), &ca, Some(&clients_ca)).await?;
    let address = format!("127.0.0.1:{}", broker.addr().port());
    let tls = TlsOptions::default().with_ca(ca.pem());

    let member = clients_ca.sign(&["orders-service"])?;
    let client = connect(
        address.clone(),
        Some(tls.clone().with_identity(member.identity())),
    )
    .await
    .context("a client with a certificate")?;
    round_trip(&client, "mutual").await?;

    // The broker's alert is in the error, however deep the transport
    // layers bury it.
    let error = refusal(address, Some(tls)).await?;
    let message = chain(error);
    ensure!(message.contains("CertificateRequired"), "{message}");
    broker.shutdown().await?;
    Ok(())
}

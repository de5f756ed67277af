//! Authentication: with `auth = token` only requests carrying a known
//! bearer token reach the Brook services (the others get UNAUTHENTICATED,
//! and the token never reaches the log); with `auth = mtls` the client
//! certificate names the principal (its common name, or the field
//! `mtls_principal` picks); a broker configured for mTLS without required
//! client certificates does not start. JWTs: `auth_jwt`.

use crate::common;
use crate::tls::{Authority, connect, write_files};

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use brook_broker::acl::{AclBinding, Operation, Permission, ResourcePattern, ResourceType};
use brook_broker::config::{Authentication, CertificatePrincipal, TokenAuth};
use brook_broker::{AuthorizerMode, BrokerConfig, ClientAuth, EmbeddedBroker};
use brook_proto::admin_service_client::AdminServiceClient;
use brook_proto::fetch_service_client::FetchServiceClient;
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_proto::{
    CreateTopicRequest, FetchPartition, FetchRequest, ListTopicsRequest, TopicConfig,
};
use common::{Clients, WAIT, batch, partition_batch, produce_request, within};
use rcgen::SanType;
use tonic::Code;
use tonic::transport::Channel;

const ALICE_TOKEN: &str = "alice-secret-token-4f1b";
const WRONG_TOKEN: &str = "wrong-secret-token-9c2e";

/// Everything the broker logs (at debug level) while the guard lives, on
/// this thread: the embedded broker's tasks run on the test's
/// single-threaded runtime.
///
/// tracing caches, per log statement, whether any subscriber wants it. A
/// statement first run by a test without a subscriber, while no capturing
/// test's is alive, would be cached as wanted by no one, and racing
/// rebuilds of that cache can leave it so while a capturing test runs. So
/// the first capture also installs a global subscriber that wants nothing
/// but keeps every statement's interest open ([`KeepInterest`]).
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            // Another global default (none is set in these tests) would do
            // as well.
            let _ = tracing::subscriber::set_global_default(KeepInterest);
        });
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("brook_broker=debug")
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A subscriber that records nothing and says every statement may be
/// wanted, so that the interest tracing caches never shuts out the
/// capturing subscribers of other threads.
struct KeepInterest;

impl tracing::Subscriber for KeepInterest {
    fn register_callsite(
        &self,
        _metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn enabled(&self, _metadata: &tracing::Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, _event: &tracing::Event<'_>) {}

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// `printf %s "$token" | sha256sum`, as the token file wants it.
fn sha256_hex(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

pub fn write_token_file(path: &Path, entries: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut text = String::from("# name sha256:hex\n");
    for (name, token) in entries {
        let _ = writeln!(text, "{name} sha256:{}", sha256_hex(token));
    }
    std::fs::write(path, text)?;
    Ok(())
}

pub async fn start_with_tokens(file: &Path) -> anyhow::Result<EmbeddedBroker> {
    let mut tokens = TokenAuth::new(file);
    tokens.reload_interval = Duration::from_millis(50);
    let mut config = BrokerConfig::default();
    config.auth = Authentication::Token(tokens);
    Ok(EmbeddedBroker::builder().config(config).start().await?)
}

/// A request carrying `authorization: Bearer <token>`, when given.
pub fn with_token<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(WAIT);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(request)
}

pub async fn channel(broker: &EmbeddedBroker) -> anyhow::Result<Channel> {
    Ok(within(
        "connecting",
        Channel::from_shared(broker.endpoint())?
            .connect_timeout(WAIT)
            .connect(),
    )
    .await??)
}

pub(crate) async fn list_topics(
    channel: &Channel,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let request = with_token(ListTopicsRequest::default(), token)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    AdminServiceClient::new(channel.clone())
        .list_topics(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn requests_without_a_known_bearer_token_are_unauthenticated() -> anyhow::Result<()> {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    write_token_file(&file, &[("alice", ALICE_TOKEN)])?;
    let broker = start_with_tokens(&file).await?;
    let channel = channel(&broker).await?;

    for (token, says) in [
        (None, "missing `authorization: Bearer <token>`"),
        (Some(WRONG_TOKEN), "not known"),
    ] {
        let status = within("list topics", list_topics(&channel, token))
            .await?
            .err()
            .with_context(|| format!("served with token {token:?}"))?;
        ensure!(status.code() == Code::Unauthenticated, "{status:?}");
        ensure!(status.message().contains(says), "{status:?}");
        ensure!(!status.message().contains(WRONG_TOKEN), "{status:?}");
    }
    // A refused produce reaches no handler: nothing is appended.
    let refused = ProduceServiceClient::new(channel.clone())
        .produce(with_token(
            produce_request(0, vec![partition_batch("t", 0, batch("x", 1)?)]),
            Some(WRONG_TOKEN),
        )?)
        .await
        .err()
        .context("a produce with a wrong token was served")?;
    ensure!(refused.code() == Code::Unauthenticated, "{refused:?}");

    // gRPC health stays open for probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    within(
        "health check",
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await??;

    let logged = logs.text();
    ensure!(
        logged.contains("refused an unauthenticated request") && logged.contains("not known"),
        "the refusals were not logged:\n{logged}"
    );
    ensure!(
        logged.contains("127.0.0.1:"),
        "the peer is not named:\n{logged}"
    );
    ensure!(
        !logged.contains(WRONG_TOKEN) && !logged.contains(ALICE_TOKEN),
        "a token reached the log:\n{logged}"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_known_bearer_token_produces_and_fetches_as_its_name() -> anyhow::Result<()> {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    write_token_file(&file, &[("bob", "bobs-token"), ("alice", ALICE_TOKEN)])?;
    let broker = start_with_tokens(&file).await?;
    let channel = channel(&broker).await?;
    let token = Some(ALICE_TOKEN);

    let create = CreateTopicRequest {
        name: "orders".to_owned(),
        partitions: 1,
        config: Some(TopicConfig::default()),
        replication_factor: None,
    };
    AdminServiceClient::new(channel.clone())
        .create_topic(with_token(create, token)?)
        .await?;
    let produced = ProduceServiceClient::new(channel.clone())
        .produce(with_token(
            produce_request(0, vec![partition_batch("orders", 0, batch("o", 3)?)]),
            token,
        )?)
        .await?
        .into_inner();
    ensure!(
        produced.results.iter().all(|r| r.error.is_none()),
        "{produced:?}"
    );
    let fetch = FetchRequest {
        partitions: vec![FetchPartition {
            topic: "orders".to_owned(),
            partition: 0,
            offset: 0,
            ..FetchPartition::default()
        }],
        ..FetchRequest::default()
    };
    let fetched = FetchServiceClient::new(channel.clone())
        .fetch(with_token(fetch, token)?)
        .await?
        .into_inner();
    let bytes: usize = fetched.partitions.iter().map(|p| p.records.len()).sum();
    ensure!(bytes > 0, "nothing fetched: {fetched:?}");

    let logged = logs.text();
    ensure!(
        logged
            .lines()
            .any(|l| l.contains("authenticated request") && l.contains("alice")),
        "requests were not logged as alice's:\n{logged}"
    );
    ensure!(!logged.contains(ALICE_TOKEN), "the token reached the log");
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_rewritten_token_file_takes_effect_without_a_restart() -> anyhow::Result<()> {
    let _guard = CapturedLogs::default().install();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    write_token_file(&file, &[("alice", ALICE_TOKEN)])?;
    let broker = start_with_tokens(&file).await?;
    let channel = channel(&broker).await?;
    within("list topics", list_topics(&channel, Some(ALICE_TOKEN))).await??;

    // Rotate alice's token: the new one gets in, the old one no longer.
    let rotated = "alice-rotated-token-77aa-longer";
    write_token_file(&file, &[("alice", rotated)])?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while list_topics(&channel, Some(rotated)).await.is_err() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the rewritten token file was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = list_topics(&channel, Some(ALICE_TOKEN)).await;
    ensure!(
        old.as_ref().err().map(tonic::Status::code) == Some(Code::Unauthenticated),
        "{old:?}"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_broker_with_an_unreadable_token_file_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let error = start_with_tokens(&dir.path().join("missing"))
        .await
        .err()
        .context("started without its token file")?;
    ensure!(error.to_string().contains("missing"), "{error}");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "alice not-a-hash\n")?;
    let error = start_with_tokens(&bad)
        .await
        .err()
        .context("started with a malformed token file")?;
    ensure!(error.to_string().contains("line 1"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_client_certificate_names_its_principal_under_mtls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let clients_ca = Authority::new("Brook clients CA")?;
    let tls = write_files(
        dir.path(),
        &ca.sign(&["localhost", "127.0.0.1"])?,
        Some(&clients_ca),
    )?;
    let mut config = BrokerConfig::default();
    config.tls = Some(tls);
    config.auth = Authentication::Mtls;
    // The ACLs tell principals apart: only alice may create and produce.
    config.authorizer = AuthorizerMode::Acl;
    let broker = EmbeddedBroker::builder().config(config).start().await?;
    broker
        .broker()
        .add_acl(AclBinding {
            principal: "alice".to_owned(),
            operation: Operation::All,
            resource: ResourcePattern::literal(ResourceType::Topic, "audit"),
            permission: Permission::Allow,
        })
        .await?;

    // `sign` puts the first name in the subject's common name.
    let bob = clients_ca.sign(&["bob", "alice"])?;
    let mut clients = Clients::over(connect(&broker, &ca, Some(&bob)).await?);
    let refused = clients
        .create_topic("audit", 1, TopicConfig::default())
        .await
        .err()
        .context("bob's certificate created alice's topic")?;
    ensure!(
        format!("{refused:#}").contains("principal `bob`"),
        "{refused:#}"
    );

    let alice = clients_ca.sign(&["alice", "alice.clients.example"])?;
    let mut clients = Clients::over(connect(&broker, &ca, Some(&alice)).await?);
    clients
        .create_topic("audit", 1, TopicConfig::default())
        .await?;
    clients.produce("audit", 0, batch("a", 2)?).await?;
    broker.shutdown().await?;
    Ok(())
}

/// With `mtls_principal = uri` the first URI name (a SPIFFE id) names the
/// client, not its common name; a certificate without one is refused.
#[tokio::test]
async fn a_uri_name_names_the_principal_when_mtls_principal_is_uri() -> anyhow::Result<()> {
    const SPIFFE: &str = "spiffe://cluster.local/ns/shop/sa/orders";
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let clients_ca = Authority::new("Brook clients CA")?;
    let mut tls = write_files(
        dir.path(),
        &ca.sign(&["localhost", "127.0.0.1"])?,
        Some(&clients_ca),
    )?;
    tls.client_principal = CertificatePrincipal::Uri;
    let mut config = BrokerConfig::default();
    config.tls = Some(tls);
    config.auth = Authentication::Mtls;
    let broker = EmbeddedBroker::builder().config(config).start().await?;

    let orders = clients_ca.sign_with(&["orders"], |params| {
        params
            .subject_alt_names
            .push(SanType::URI(SPIFFE.try_into().expect("an IA5 string")));
    })?;
    let mut clients = Clients::over(connect(&broker, &ca, Some(&orders)).await?);
    clients
        .create_topic("spiffe", 1, TopicConfig::default())
        .await?;
    let logged = logs.text();
    let principals: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("authenticated request"))
        .collect();
    ensure!(
        !principals.is_empty()
            && principals
                .iter()
                .all(|l| l.contains(&format!("principal=\"{SPIFFE}\""))),
        "requests were not logged as the SPIFFE id's:\n{logged}"
    );

    // Common name and DNS name, but no URI name: no principal.
    let without_uri = clients_ca.sign(&["billing", "billing.shop.svc"])?;
    let channel = connect(&broker, &ca, Some(&without_uri)).await?;
    let status = within("list topics", list_topics(&channel, None))
        .await?
        .err()
        .context("a certificate without a URI name was served")?;
    ensure!(status.code() == Code::Unauthenticated, "{status:?}");
    ensure!(
        status
            .message()
            .contains("no client certificate naming the client"),
        "{status:?}"
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn mtls_without_required_client_certificates_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Authority::new("Brook test CA")?;
    let clients_ca = Authority::new("Brook clients CA")?;
    let mut optional = write_files(dir.path(), &ca.sign(&["localhost"])?, Some(&clients_ca))?;
    optional.client_auth = ClientAuth::Optional;
    for tls in [None, Some(optional)] {
        let mut config = BrokerConfig::default();
        config.tls = tls.clone();
        config.auth = Authentication::Mtls;
        let error = EmbeddedBroker::builder()
            .config(config)
            .start()
            .await
            .err()
            .with_context(|| format!("started with mtls and TLS {tls:?}"))?;
        ensure!(
            error.to_string().contains("tls_client_auth = required"),
            "{error}"
        );
    }
    Ok(())
}

/// Every admin change is one audit line naming who asked, what, and how it
/// ended; tokens never appear in it.
#[tokio::test]
async fn admin_changes_are_audited_with_their_principal_and_result() -> anyhow::Result<()> {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    write_token_file(&file, &[("alice", ALICE_TOKEN)])?;
    let broker = start_with_tokens(&file).await?;
    let channel = channel(&broker).await?;
    let mut admin = AdminServiceClient::new(channel.clone());
    let create = brook_proto::CreateTopicRequest {
        name: "audited".into(),
        partitions: 2,
        config: Some(brook_proto::TopicConfig {
            retention_ms: Some(60_000),
            ..brook_proto::TopicConfig::default()
        }),
        replication_factor: None,
    };
    within(
        "create",
        admin.create_topic(with_token(create, Some(ALICE_TOKEN))?),
    )
    .await??;
    let delete = |name: &str| brook_proto::DeleteTopicRequest { name: name.into() };
    within(
        "delete",
        admin.delete_topic(with_token(delete("audited"), Some(ALICE_TOKEN))?),
    )
    .await??;
    let missing = within(
        "delete a missing topic",
        admin.delete_topic(with_token(delete("missing"), Some(ALICE_TOKEN))?),
    )
    .await?;
    ensure!(missing.is_err(), "deleting a missing topic succeeded");
    // Reads are not audited.
    within("list", list_topics(&channel, Some(ALICE_TOKEN))).await??;

    let logged = logs.text();
    let audit: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("brook_broker::audit"))
        .collect();
    ensure!(audit.len() == 3, "audit lines:\n{}", audit.join("\n"));
    let expect = [
        ("create_topic", "topic:audited", "result=\"ok\""),
        ("delete_topic", "topic:audited", "result=\"ok\""),
        ("delete_topic", "topic:missing", "result=NotFound"),
    ];
    for (line, (operation, resource, result)) in audit.iter().zip(expect) {
        for needle in [
            "principal=alice",
            &format!("operation=\"{operation}\""),
            &format!("resource=\"{resource}\""),
            result,
            "peer=127.0.0.1:",
        ] {
            ensure!(line.contains(needle), "{needle} not in {line}");
        }
    }
    ensure!(
        audit[0].contains("retention_ms: Some(60000)"),
        "{}",
        audit[0]
    );
    ensure!(!logged.contains(ALICE_TOKEN), "a token reached the log");
    broker.shutdown().await?;
    Ok(())
}

/// The brokers' own service (`brook.cluster.v1`: Raft, pings, log reads)
/// is authenticated like the others, and only super users (the principals
/// the brokers present to each other) get past: anyone else is refused
/// with PERMISSION_DENIED, whatever the authorizer.
#[tokio::test]
async fn only_super_users_call_the_brokers_own_service() -> anyhow::Result<()> {
    use brook_proto::cluster::PingRequest;
    use brook_proto::cluster::raft_service_client::RaftServiceClient;

    const BROKER_TOKEN: &str = "broker-secret-token-0d3a";
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    write_token_file(&file, &[("alice", ALICE_TOKEN), ("broker", BROKER_TOKEN)])?;
    let mut tokens = TokenAuth::new(&file);
    tokens.reload_interval = Duration::from_millis(50);
    let mut config = BrokerConfig::default();
    config.auth = Authentication::Token(tokens);
    config.super_users = vec!["broker".to_owned()];
    let broker = EmbeddedBroker::builder().config(config).start().await?;
    let channel = channel(&broker).await?;
    let ping = |token: Option<&'static str>| {
        let channel = channel.clone();
        async move {
            let request = with_token(PingRequest {}, token)
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            RaftServiceClient::new(channel)
                .ping(request)
                .await
                .map(|_| ())
        }
    };

    let anonymous = within("ping", ping(None)).await?.err().context("served")?;
    ensure!(anonymous.code() == Code::Unauthenticated, "{anonymous:?}");
    let alice = within("ping", ping(Some(ALICE_TOKEN)))
        .await?
        .err()
        .context("served alice")?;
    ensure!(alice.code() == Code::PermissionDenied, "{alice:?}");
    ensure!(alice.message().contains("super users"), "{alice:?}");
    // A broker alone serves no cluster service: a super user gets past
    // authentication and finds nothing there.
    let peer = within("ping", ping(Some(BROKER_TOKEN)))
        .await?
        .err()
        .context("a broker alone answered a ping")?;
    ensure!(peer.code() == Code::Unimplemented, "{peer:?}");
    // Clients' services are not limited to super users.
    within("list topics", list_topics(&channel, Some(ALICE_TOKEN))).await??;
    broker.shutdown().await?;
    Ok(())
}

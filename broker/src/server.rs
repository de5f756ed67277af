//! Serving a broker: the gRPC services (with `grpc.health.v1` and server
//! reflection) and the HTTP endpoints on listeners the caller bound.
//!
//! Lifecycle: HTTP answers from the start (`/ready` is 503 while recovery
//! runs); once the broker is open, gRPC serves and `/ready` turns 200. On the
//! shutdown signal `/ready` and gRPC health turn not-serving, the gRPC
//! listener stops accepting, in-flight work gets `shutdown_grace` to finish,
//! every partition is fsynced, and only then does HTTP stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::auth::Authenticator;
use crate::auth::layer::AuthLayer;
use crate::grpc::connections::{ConnectionLimits, TrackRequestsLayer};
use crate::grpc::receive_budget::{ReceiveBudget, ReceiveBudgetLayer};
use crate::http::{HttpLimits, Phase, ServerStatus};
use crate::replicas::Replicas;
use crate::still_failing::StillFailing;
use crate::tls::ServerTls;
use brook_cluster::network::client::{Connector, PeerTls, RemoteLog, SharedChannels, TcpConnector};
use brook_cluster::{BrokerNode, MetaCommand, MetaNode, MetaNodeConfig, MetaResponse};
use brook_engine::AuthorizerMode;
use brook_engine::ClusterConfig;
use brook_engine::config::Authentication;
use brook_engine::config::BrokerConfig;
use brook_engine::{Broker, Invalid, OpenError};

/// HTTP/2 receive windows: bytes a client may send before the broker
/// reads them. hyper's 1 MiB default stalls a producer that keeps several
/// requests of a few MiB in flight; these let it stream at disk speed.
const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
const HTTP2_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame a client may send: large batches travel in few
/// frames instead of 16 KiB ones.
const HTTP2_FRAME_BYTES_MAX: u32 = 1024 * 1024;

/// The services `grpc.health.v1` reports on, besides the server as a whole ("").
const SERVICES: [&str; 7] = [
    "brook.v1.AdminService",
    "brook.v1.ProduceService",
    "brook.v1.FetchService",
    "brook.v1.GroupService",
    "brook.v1.AclService",
    "brook.v1.QuotaService",
    "brook.v1.ClusterService",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("invalid setting")]
    Config(#[source] Invalid),
    #[error("cannot open the broker: {0}")]
    Open(#[from] OpenError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Cluster(#[from] brook_cluster::ClusterError),
}

/// Opens the broker from `config` (HTTP already answering, not ready) and
/// serves it until `shutdown` resolves. `on_ready` runs once the broker is
/// open, right before gRPC starts serving.
pub async fn run(
    config: BrokerConfig,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Arc<Broker>) + Send,
) -> Result<(), ServeError> {
    let connections = connection_limits(&config)?;
    // Bad TLS or token files fail the start before recovery, not after it.
    let tls = load_tls(&config)?;
    let auth = load_auth(&config)?;
    let status = Arc::new(ServerStatus::default());
    let stop = stop_token(shutdown);
    let http_stop = CancellationToken::new();
    let http_task = http.map(|listener| {
        spawn_http(
            listener,
            &config,
            tls.clone(),
            status.clone(),
            http_stop.clone(),
        )
    });
    let opened = tokio::select! {
        opened = Broker::open(config) => Some(opened),
        () = stop.cancelled() => None,
    };
    let broker = match opened {
        Some(Ok(broker)) => broker,
        Some(Err(e)) => {
            http_stop.cancel();
            return Err(e.into());
        }
        None => {
            tracing::info!("shutdown requested during recovery");
            http_stop.cancel();
            return Ok(());
        }
    };
    status.set_broker(broker.clone());
    on_ready(&broker);
    serve_grpc(
        broker,
        grpc,
        connections,
        tls,
        auth,
        status,
        stop,
        http_stop,
        http_task,
        None,
    )
    .await
}

/// Serves an already opened broker until `shutdown` resolves.
pub async fn serve(
    broker: Arc<Broker>,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let status = Arc::new(ServerStatus::default());
    serve_with_peers(broker, grpc, http, shutdown, None, status).await
}

/// [`serve`], calling the cluster's peers through `peers` (TCP when
/// `None`) and reporting its readiness in `status`.
pub(crate) async fn serve_with_peers(
    broker: Arc<Broker>,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    peers: Option<Arc<dyn Connector>>,
    status: Arc<ServerStatus>,
) -> Result<(), ServeError> {
    let connections = connection_limits(broker.config())?;
    let tls = load_tls(broker.config())?;
    let auth = load_auth(broker.config())?;
    status.set_broker(broker.clone());
    let stop = stop_token(shutdown);
    let http_stop = CancellationToken::new();
    let http_task = http.map(|listener| {
        spawn_http(
            listener,
            broker.config(),
            tls.clone(),
            status.clone(),
            http_stop.clone(),
        )
    });
    serve_grpc(
        broker,
        grpc,
        connections,
        tls,
        auth,
        status,
        stop,
        http_stop,
        http_task,
        peers,
    )
    .await
}

/// The gRPC port's TLS, when configured.
fn load_tls(config: &BrokerConfig) -> Result<Option<Arc<ServerTls>>, ServeError> {
    let Some(settings) = &config.tls else {
        return Ok(None);
    };
    let tls = ServerTls::load(settings)?;
    tracing::info!(
        cert = %settings.cert.display(),
        client_auth = %settings.client_auth,
        "gRPC serves TLS only"
    );
    Ok(Some(tls))
}

/// How requests are authenticated; refuses settings it cannot honour.
fn load_auth(config: &BrokerConfig) -> Result<Authenticator, ServeError> {
    let auth = Authenticator::load(config)?;
    tracing::info!(
        auth = auth.mode(),
        authorizer = %config.authorizer,
        super_users = ?config.super_users,
        "gRPC client authentication and authorization"
    );
    if config.authorizer == AuthorizerMode::Acl && auth.mode() == "none" {
        tracing::warn!(
            "authorizer = acl without authentication: every client is the principal `anonymous`"
        );
    }
    Ok(auth)
}

/// Raises the descriptor limit and chooses how many gRPC connections it
/// leaves room for; refuses a configured maximum that leaves too few
/// descriptors for the broker's files.
fn connection_limits(config: &BrokerConfig) -> Result<ConnectionLimits, ServeError> {
    let nofile = crate::descriptors::raise_nofile_limit();
    let max =
        crate::descriptors::connections_max(&config.limits, nofile).map_err(ServeError::Config)?;
    tracing::info!(
        max_connections = max,
        max_http_connections = config.limits.http_connections_max,
        file_descriptors = nofile,
        "connection limits"
    );
    Ok(ConnectionLimits {
        max,
        idle_timeout: config.connection_idle_timeout,
    })
}

/// A token cancelled when `shutdown` resolves.
fn stop_token(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => cancel.cancel(),
            () = cancel.cancelled() => {}
        }
    });
    stop
}

type HttpTask = JoinHandle<Result<(), std::io::Error>>;

fn spawn_http(
    listener: TcpListener,
    config: &BrokerConfig,
    tls: Option<Arc<ServerTls>>,
    status: Arc<ServerStatus>,
    stop: CancellationToken,
) -> HttpTask {
    let tls = tls.filter(|_| config.tls.as_ref().is_some_and(|t| t.http));
    let router = crate::http::router(status);
    let limits = HttpLimits {
        connections_max: config.limits.http_connections_max,
        idle_timeout: config.http_idle_timeout,
        header_read_timeout: config.http_header_read_timeout,
    };
    tokio::spawn(crate::http::serve(listener, router, limits, tls, stop))
}

#[allow(clippy::too_many_arguments)]
async fn serve_grpc(
    broker: Arc<Broker>,
    grpc: TcpListener,
    connections: ConnectionLimits,
    tls: Option<Arc<ServerTls>>,
    auth: Authenticator,
    status: Arc<ServerStatus>,
    stop: CancellationToken,
    http_stop: CancellationToken,
    http_task: Option<HttpTask>,
    peers: Option<Arc<dyn Connector>>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in SERVICES {
        health
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(brook_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(brook_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let limits = broker.config().limits;
    let grpc_addr = grpc
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string());
    if let Some(tls) = &tls {
        tls.spawn_reloader(stop.clone());
    }
    auth.spawn_reloader(&stop);
    let incoming =
        crate::grpc::connections::accept(grpc, connections, broker.metrics().clone(), tls);
    let receive_budget = ReceiveBudget::new(
        limits.receive_buffer_bytes_max,
        limits.grpc_message_bytes_max,
        limits.message_receive_timeout,
        broker.metrics().clone(),
    );
    let drain = {
        let stop = stop.clone();
        let status = status.clone();
        let broker = broker.clone();
        async move {
            stop.cancelled().await;
            tracing::info!("shutting down: refusing new work, finishing in-flight requests");
            status.set_phase(Phase::Stopping);
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for service in SERVICES {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            broker.begin_shutdown();
        }
    };
    let (meta, replicas, reconciler) = match &broker.config().cluster {
        Some(cluster) => {
            let (meta, replicas) = join_cluster(&broker, cluster, &stop, peers).await?;
            status.set_meta(meta.clone());
            tokio::spawn(watch_metadata_group(
                meta.clone(),
                broker.metrics().clone(),
                stop.clone(),
            ));
            status.set_replicas(replicas.clone());
            let reconciler = tokio::spawn(replicas.clone().run(stop.clone()));
            (Some(meta), Some(replicas), Some(reconciler))
        }
        None => (None, None, None),
    };
    let grpc_server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.streams_per_connection_max))
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .max_frame_size(HTTP2_FRAME_BYTES_MAX)
        .layer(TrackRequestsLayer)
        // Before the receive budget: a refused request reserves nothing.
        .layer(AuthLayer::new(auth, &broker.config().super_users))
        .layer(ReceiveBudgetLayer::new(receive_budget))
        .add_routes(crate::grpc::routes(
            &broker,
            meta.as_ref(),
            replicas.as_ref(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, drain);
    status.set_phase(Phase::Ready);
    tracing::info!(%grpc_addr, "serving");
    let grace = broker.config().shutdown_grace;
    let mut grpc_task = tokio::spawn(grpc_server);
    let served = tokio::select! {
        served = &mut grpc_task => served,
        () = stop.cancelled() => finish_within(grace, grpc_task, "gRPC").await,
    };
    if let Some(reconciler) = reconciler {
        // The replicas stop (stop is cancelled by now) before the logs
        // under them are closed.
        stop.cancel();
        if let Err(e) = reconciler.await {
            tracing::warn!(error = %e, "the replicas did not stop cleanly");
        }
    }
    if let Some(meta) = &meta {
        meta.shutdown().await;
    }
    // Whatever was cut off, every partition is fsynced before returning.
    broker.shutdown().await;
    http_stop.cancel();
    let http_served = match http_task {
        Some(task) => finish_within(grace, task, "HTTP")
            .await?
            .map_err(ServeError::Http),
        None => Ok(()),
    };
    served??;
    http_served
}

/// Starts this broker's member of the metadata group (its files under
/// `<data dir>/cluster/meta`), forms the group with the peers, and keeps
/// trying to register the broker's address until it is committed; and the
/// replicas the broker will run.
async fn join_cluster(
    broker: &Arc<Broker>,
    cluster: &ClusterConfig,
    stop: &CancellationToken,
    peers: Option<Arc<dyn Connector>>,
) -> Result<(MetaNode, Arc<Replicas>), ServeError> {
    let config = broker.config();
    let connector: Arc<dyn Connector> = match peers {
        Some(peers) => peers,
        None => Arc::new(peer_connector(config, cluster).map_err(ServeError::Config)?),
    };
    // Catch-up reads (4 MiB each) keep connections of their own, so that
    // they never hold up the groups' heartbeats.
    let catch_up = Arc::new(RemoteLog::new(connector.clone()));
    let connector: Arc<dyn Connector> = Arc::new(SharedChannels::new(connector));
    let meta = MetaNode::start(
        &MetaNodeConfig::new(
            cluster.node_id,
            config.data_dir.join("cluster").join("meta"),
        ),
        connector.clone(),
    )
    .await?;
    let voters = cluster
        .founding_voters()
        .into_iter()
        .map(|(id, address)| (id, BrokerNode::new(address)))
        .collect();
    if cluster.forms() {
        meta.initialize(voters).await?;
        tracing::info!(
            node_id = cluster.node_id,
            peers = ?cluster.peers,
            "joined the cluster's metadata group"
        );
    } else if cluster.asks_to_join() && meta.is_fresh() {
        tracing::info!(
            node_id = cluster.node_id,
            "asking the cluster's brokers to add this one"
        );
        tokio::spawn(ask_to_be_added(meta.clone(), cluster.clone(), stop.clone()));
    } else {
        // Added by the metadata group's leader (`AddBroker`): forming a
        // group here would make a second one.
        tracing::info!(
            node_id = cluster.node_id,
            "waiting to be added to the cluster (join): `brook cluster add-broker` on any of its brokers"
        );
    }
    let registering = meta.clone();
    let address = cluster
        .peers
        .get(&cluster.node_id)
        .cloned()
        .unwrap_or_default();
    let incarnation = new_incarnation();
    let replicas = Replicas::new(
        meta.clone(),
        broker.clone(),
        connector.clone(),
        catch_up,
        incarnation,
    );
    let stop = stop.clone();
    tokio::spawn(async move {
        let register = MetaCommand::RegisterBroker {
            id: registering.id(),
            address,
            incarnation,
        };
        let mut told_removed = false;
        let mut failing = StillFailing::since(Instant::now());
        loop {
            match registering.propose_anywhere(register.clone()).await {
                Ok(MetaResponse::BrokerRemoved { id }) => {
                    // Until it is added again.
                    if !told_removed {
                        tracing::error!(
                            node_id = id,
                            "this broker was removed from the cluster: it takes no part until it is added again (brook cluster add-broker)"
                        );
                        told_removed = true;
                    }
                }
                Ok(_) => {
                    tracing::info!("broker registered with the cluster");
                    return;
                }
                Err(e) => {
                    if let Some(failing_for) = failing.warn_now(Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            failing_for_s = failing_for.as_secs(),
                            "still not registered with the cluster; trying again"
                        );
                    } else {
                        tracing::debug!(error = %e, "registering with the cluster; trying again");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(REGISTER_RETRY) => {}
                () = stop.cancelled() => return,
            }
        }
    });
    Ok((meta, replicas))
}

/// Asks the other peers in turn, until one (the metadata leader) has added
/// this broker, it votes, or `stop`.
async fn ask_to_be_added(meta: MetaNode, cluster: ClusterConfig, stop: CancellationToken) {
    let own_address = cluster
        .peers
        .get(&cluster.node_id)
        .cloned()
        .unwrap_or_default();
    let mut failing = StillFailing::since(Instant::now());
    loop {
        let mut refusals = Vec::new();
        for (id, peer) in &cluster.peers {
            if *id == cluster.node_id {
                continue;
            }
            if meta.is_voter() {
                return;
            }
            let asked = tokio::select! {
                asked = meta.ask_to_be_added(peer, &own_address) => asked,
                () = stop.cancelled() => return,
            };
            match asked {
                Ok(_) => {
                    tracing::info!(by = id, "added to the cluster");
                    return;
                }
                Err(e) => {
                    tracing::debug!(broker = id, error = %e, "not added by this broker; asking the next");
                    refusals.push(format!("{id}: {e}"));
                }
            }
        }
        if let Some(failing_for) = failing.warn_now(Instant::now()) {
            tracing::warn!(
                failing_for_s = failing_for.as_secs(),
                answers = %refusals.join("; "),
                "still not added to the cluster: no broker asked could add this one (is the metadata group's leader up, and this broker's address in its peers?); asking again"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(REGISTER_RETRY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How this broker calls its peers: over TLS when it serves TLS (trusting
/// `peer_ca`, else the client CA, and presenting its own certificate),
/// with its token when clients authenticate with tokens. Its peers must
/// see it as a super user, and it them: with authentication on, the
/// brokers' own service takes calls from super users only.
fn peer_connector(config: &BrokerConfig, cluster: &ClusterConfig) -> Result<TcpConnector, Invalid> {
    let mut connector = TcpConnector::plain(PEER_CONNECT_TIMEOUT);
    if let Some(tls) = &config.tls {
        let ca = cluster.peer_ca.as_ref().or(tls.client_ca.as_ref()).ok_or_else(|| {
            Invalid::new(
                "peer_ca",
                "needed in a cluster with TLS (unless tls_client_ca is set): the CAs the peers' certificates chain to",
            )
        })?;
        connector.tls = Some(PeerTls {
            ca: ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        });
    }
    // With mTLS, the certificate presented above names the broker.
    if let Authentication::Token(_) = &config.auth {
        let file = cluster.peer_token_file.as_ref().ok_or_else(|| {
            Invalid::new(
                "peer_token_file",
                "needed in a cluster with auth = token: the token this broker presents to its peers",
            )
        })?;
        let token = std::fs::read_to_string(file).map_err(|e| {
            Invalid::new(
                "peer_token_file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let mut header: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {}", token.trim()).parse().map_err(|_| {
                Invalid::new(
                    "peer_token_file",
                    format!(
                        "{} does not hold a token that fits a header",
                        file.display()
                    ),
                )
            })?;
        // Never shown by a `Debug` or a log line.
        header.set_sensitive(true);
        connector.authorization = Some(header);
    }
    if !matches!(config.auth, Authentication::None) && config.super_users.is_empty() {
        return Err(Invalid::new(
            "super_users",
            "needed in a cluster with authentication: the principals the brokers present to each other (only they may call the brokers' own service)",
        ));
    }
    Ok(connector)
}

/// A number no earlier start of this broker registered with: the start's
/// time in nanoseconds (a clock set back by more than the broker's uptime
/// aside, which the process id guards against as well).
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// Mirrors the metadata group's term and leadership into the metrics, and
/// logs each change of leader.
async fn watch_metadata_group(
    meta: MetaNode,
    metrics: Arc<brook_engine::metrics::Metrics>,
    stop: CancellationToken,
) {
    let mut watched = meta.raft().metrics();
    let mut leader = None;
    loop {
        {
            let now = watched.borrow();
            metrics
                .metadata_term
                .set(i64::try_from(now.current_term).unwrap_or(i64::MAX));
            metrics
                .metadata_leader
                .set(i64::from(now.current_leader == Some(meta.id())));
            if now.current_leader != leader {
                metrics.metadata_leader_changes.inc();
                tracing::info!(
                    term = now.current_term,
                    leader = ?now.current_leader,
                    "the cluster's metadata group has a new leader"
                );
                leader = now.current_leader;
            }
        }
        tokio::select! {
            changed = watched.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// How long connecting to a peer may take.
pub(crate) const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait before registering with the cluster again.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// Waits up to `grace` for a server task to drain; then closes what is
/// left (streams a client keeps open, long polls) by aborting it.
async fn finish_within<E>(
    grace: Duration,
    mut task: JoinHandle<Result<(), E>>,
    server: &'static str,
) -> Result<Result<(), E>, tokio::task::JoinError> {
    if let Ok(result) = tokio::time::timeout(grace, &mut task).await {
        return result;
    }
    tracing::warn!(
        server,
        grace_ms = grace.as_millis() as u64,
        "connections still open after the grace period; closing them"
    );
    task.abort();
    Ok(Ok(()))
}

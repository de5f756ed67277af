//! Serving a broker: the gRPC services (with `grpc.health.v1`) and the HTTP
//! endpoints on listeners the caller bound, until a shutdown signal; then
//! in-flight requests finish, streams end, and every partition is fsynced.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::broker::Broker;

/// The services `grpc.health.v1` reports on, besides the server as a whole ("").
const SERVICES: [&str; 3] = [
    "brook.v1.AdminService",
    "brook.v1.ProduceService",
    "brook.v1.FetchService",
];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Serves until `shutdown` resolves, then drains and stops the broker.
pub async fn serve(
    broker: Arc<Broker>,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in SERVICES {
        health
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    {
        let stop = stop.clone();
        let broker = broker.clone();
        let ready = ready.clone();
        let health = health.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => {}
                () = stop.cancelled() => {}
            }
            tracing::info!("shutting down: refusing new work, finishing in-flight requests");
            ready.store(false, Ordering::Release);
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for service in SERVICES {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            broker.begin_shutdown();
            stop.cancel();
        });
    }
    let http_task = http.map(|listener| {
        let router = crate::http::router(broker.clone(), ready.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    });
    let limits = broker.config().limits;
    let grpc_addr = grpc
        .local_addr()
        .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string());
    let grpc_server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.streams_per_connection_max))
        .add_routes(crate::grpc::routes(&broker))
        .add_service(health_service)
        // Accepted connections get TCP_NODELAY only through `TcpIncoming`;
        // without it small responses wait for the peer's delayed ACK.
        .serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        });
    ready.store(true, Ordering::Release);
    tracing::info!(%grpc_addr, "serving");
    let grace = broker.config().shutdown_grace;
    let mut grpc_task = tokio::spawn(grpc_server);
    let served = tokio::select! {
        served = &mut grpc_task => served,
        () = stop.cancelled() => finish_within(grace, grpc_task, "gRPC").await,
    };
    stop.cancel();
    let http_served = match http_task {
        Some(task) => finish_within(grace, task, "HTTP")
            .await?
            .map_err(ServeError::Http),
        None => Ok(()),
    };
    // Whatever was cut off, every partition is fsynced before returning.
    broker.shutdown().await;
    served??;
    http_served
}

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

//! Serving the HTTP endpoints on a listener with bounds a slow or idle
//! client cannot get around: at most `connections_max` connections (the
//! next waits to be accepted until one closes), request headers within
//! `header_read_timeout`, and a connection that sends nothing for
//! `idle_timeout` is closed. With TLS, the handshake must also be done
//! within `header_read_timeout`. On `stop` each connection finishes the
//! request it is answering and closes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::idle::{Activity, IdleTimeout, ReadsCount};
use crate::tls::ServerTls;

/// Pause after an accept failed for lack of a resource (descriptors,
/// memory): trying again at once would only fail again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The HTTP side's bounds (see `docs/configuration.md`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connections_max: usize,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`, then waits for the
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    // One permit per open connection; taken before accepting, so that a
    // crowd of clients waits in the listen backlog, not in our descriptors.
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                connections.spawn(accept_connection(
                    stream,
                    tls.clone(),
                    router.clone(),
                    limits,
                    stop.clone(),
                    permit,
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection, after its TLS handshake when the port has TLS.
async fn accept_connection(
    stream: TcpStream,
    tls: Option<Arc<ServerTls>>,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let Some(tls) = tls else {
        return serve_connection(stream, router, limits, stop, permit).await;
    };
    let handshake = tls.http_acceptor().accept(stream);
    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => serve_connection(stream, router, limits, stop, permit).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "HTTP TLS handshake failed"),
        Err(_elapsed) => tracing::debug!("HTTP TLS handshake timed out"),
    }
}

async fn serve_connection<IO>(
    stream: IO,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = IdleTimeout::new(
        stream,
        Activity::new(),
        limits.idle_timeout,
        ReadsCount::Yes,
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

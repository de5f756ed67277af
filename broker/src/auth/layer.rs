//! The tower layer that authenticates each request to a Brook service
//! before its handler (or anything that reads its body) runs.
//!
//! A request whose path is under `/brook.v1.` is authenticated; its
//! [`Principal`] goes into the request's extensions (for handlers and the
//! authorization that builds on it) and is logged at debug level. A refused
//! one is answered with UNAUTHENTICATED at once, and a WARN names the peer
//! and the reason, at most once every [`WARN_INTERVAL`] per reason (the
//! refusals in between are counted into the next). Other paths
//! (`grpc.health.v1`, server reflection) pass untouched.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use parking_lot::Mutex;

use super::{Authenticator, Principal, Refusal};
use crate::grpc::connections::{ConnectionInfo, WARN_INTERVAL, Warnings};

/// The path prefix of the services that need authentication.
const BROOK_SERVICES: &str = "/brook.v1.";

/// Authenticates requests to the Brook services.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    authenticator: Authenticator,
    /// One rate limit per kind of refusal, taken briefly by refused
    /// requests only.
    warnings: Mutex<[Warnings; Refusal::COUNT]>,
}

impl AuthLayer {
    pub(crate) fn new(authenticator: Authenticator) -> Self {
        Self {
            shared: Arc::new(Shared {
                authenticator,
                warnings: Mutex::new(Default::default()),
            }),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(BROOK_SERVICES) {
            return Either::Right(self.inner.call(request));
        }
        let connection = request.extensions().get::<ConnectionInfo>();
        match self
            .shared
            .authenticator
            .authenticate(connection, request.headers())
        {
            Ok(Some(principal)) => {
                tracing::debug!(
                    principal = principal.name(),
                    method = request.uri().path(),
                    "authenticated request"
                );
                request.extensions_mut().insert::<Principal>(principal);
                Either::Right(self.inner.call(request))
            }
            Ok(None) => Either::Right(self.inner.call(request)),
            Err(refusal) => {
                self.warn(&request, refusal);
                let status = tonic::Status::unauthenticated(refusal.to_string());
                Either::Left(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

impl<S> Authenticate<S> {
    fn warn<B>(&self, request: &http::Request<B>, refusal: Refusal) {
        let due = self.shared.warnings.lock()[refusal.index()].due();
        if let Some(refused) = due {
            let peer = connection_peer(request);
            tracing::warn!(
                peer = peer.as_deref().unwrap_or("unknown"),
                method = request.uri().path(),
                auth = self.shared.authenticator.mode(),
                reason = %refusal,
                refused_since_last_warning = refused,
                warn_interval_s = WARN_INTERVAL.as_secs(),
                "refused an unauthenticated request"
            );
        }
    }
}

fn connection_peer<B>(request: &http::Request<B>) -> Option<String> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(ConnectionInfo::remote_addr)
        .map(|addr| addr.to_string())
}

//! The tower layer that authenticates each request to a Brook service
//! before its handler (or anything that reads its body) runs.
//!
//! A request whose path is under `/brook.v1.` or `/brook.cluster.v1.` is
//! authenticated (the second, the brokers' own service, only for super
//! users: PERMISSION_DENIED for others); its
//! [`Principal`] goes into the request's extensions (for handlers and the
//! authorization that builds on it) and is logged at debug level. A refused
//! one is answered with UNAUTHENTICATED at once, and a WARN names the peer
//! and the reason, at most once every [`WARN_INTERVAL`] per reason (the
//! refusals in between are counted into the next). Other paths
//! (`grpc.health.v1`, server reflection) pass untouched.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use parking_lot::Mutex;

use super::{Authenticator, Principal, Refusal};
use crate::grpc::connections::{ConnectionInfo, WARN_INTERVAL, Warnings};

/// The path prefix of the services that need authentication.
const BROOK_SERVICES: &str = "/brook.v1.";
/// The path prefix of the brokers' own service (Raft, pings, log reads
/// between the brokers of a cluster): authenticated too, and only for
/// super users, the principals the brokers present to each other.
const CLUSTER_SERVICES: &str = "/brook.cluster.v1.";

/// Authenticates requests to the Brook services.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    authenticator: Authenticator,
    /// Who may call the cluster's service.
    super_users: HashSet<String>,
    /// Rate limit of the warnings about refused calls to it.
    cluster_refusals: Mutex<Warnings>,
    /// One rate limit per kind of refusal, taken briefly by refused
    /// requests only.
    warnings: Mutex<[Warnings; Refusal::COUNT]>,
}

impl AuthLayer {
    pub(crate) fn new(authenticator: Authenticator, super_users: &[String]) -> Self {
        Self {
            shared: Arc::new(Shared {
                authenticator,
                super_users: super_users.iter().cloned().collect(),
                cluster_refusals: Mutex::default(),
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
        let path = request.uri().path();
        let cluster_service = path.starts_with(CLUSTER_SERVICES);
        if !path.starts_with(BROOK_SERVICES) && !cluster_service {
            return Either::Right(self.inner.call(request));
        }
        let connection = request.extensions().get::<ConnectionInfo>();
        match self
            .shared
            .authenticator
            .authenticate(connection, request.headers())
        {
            Ok(Some(principal))
                if cluster_service && !self.shared.super_users.contains(principal.name()) =>
            {
                self.warn_cluster_refusal(&request, &principal);
                let status = tonic::Status::permission_denied(format!(
                    "{principal} may not call the brokers' own service: only super users (the brokers) may"
                ));
                Either::Left(futures::future::ready(Ok(status.into_http())))
            }
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
    fn warn_cluster_refusal<B>(&self, request: &http::Request<B>, principal: &Principal) {
        let due = self.shared.cluster_refusals.lock().due();
        if let Some(refused) = due {
            let peer = connection_peer(request);
            tracing::warn!(
                peer = peer.as_deref().unwrap_or("unknown"),
                method = request.uri().path(),
                %principal,
                refused_since_last_warning = refused,
                warn_interval_s = WARN_INTERVAL.as_secs(),
                "refused a call to the brokers' own service from a principal that is not a super user"
            );
        }
    }

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

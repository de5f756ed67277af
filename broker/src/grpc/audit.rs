//! The audit log: one structured line per change an admin call makes or
//! tries (creating, deleting or altering a topic, adding partitions,
//! deleting a group or resetting its offsets, setting or removing a
//! quota): who asked (the principal, or
//! `anonymous` without authentication, and the peer address), what
//! (operation, resource, the settings asked for), and the result (`ok`, or
//! the status code and message).
//!
//! Lines go to the `brook_broker::audit` log target at INFO, so a log
//! filter or collector can route them apart. They never carry tokens, keys
//! or record contents.

use std::net::SocketAddr;

use tonic::{Request, Status};

use crate::auth::Principal;
use brook_engine::acl::ANONYMOUS;

/// Who made an admin request, taken before the request is consumed.
#[derive(Debug)]
pub(crate) struct Audit {
    principal: String,
    peer: Option<SocketAddr>,
}

impl Audit {
    pub(crate) fn of<T>(request: &Request<T>) -> Self {
        let principal = request
            .extensions()
            .get::<Principal>()
            .map_or_else(|| ANONYMOUS.to_owned(), |p| p.name().to_owned());
        Self {
            principal,
            peer: request.remote_addr(),
        }
    }

    /// Logs the outcome of `operation` on `resource` (`topic:NAME`,
    /// `group:NAME`); `details` are the settings the request asked for.
    pub(crate) fn record<R>(
        &self,
        operation: &str,
        resource: &str,
        details: &str,
        result: &Result<R, Status>,
    ) {
        let peer = self
            .peer
            .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        match result {
            Ok(_) => tracing::info!(
                target: "brook_broker::audit",
                principal = %self.principal,
                peer = %peer,
                operation,
                resource,
                details,
                result = "ok",
                "admin change"
            ),
            Err(status) => tracing::info!(
                target: "brook_broker::audit",
                principal = %self.principal,
                peer = %peer,
                operation,
                resource,
                details,
                result = ?status.code(),
                reason = status.message(),
                "admin change refused"
            ),
        }
    }
}

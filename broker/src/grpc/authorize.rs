//! The ACL check every handler makes before it acts: who the request comes
//! from (its authenticated principal, or `anonymous`), and whether the
//! broker's authorizer lets them do the operation on the resource.
//!
//! A refusal is PERMISSION_DENIED naming the principal, the operation and
//! the resource, and is logged at debug level (admin calls are audited as
//! well). A broker without ACLs skips all of it.

use std::collections::HashSet;

use brook_engine::Broker;
use brook_engine::acl::{ANONYMOUS, Denied, Operation, Resource};
use tonic::{Request, Status};

use crate::auth::Principal;

/// The principal a request is checked as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    principal: String,
}

impl Caller {
    pub(crate) fn of<T>(request: &Request<T>) -> Self {
        let principal = request
            .extensions()
            .get::<Principal>()
            .map_or_else(|| ANONYMOUS.to_owned(), |p| p.name().to_owned());
        Self { principal }
    }

    pub(crate) fn principal(&self) -> &str {
        &self.principal
    }

    /// `Ok` when the caller may do `operation` on `resource`.
    pub(crate) fn check(
        &self,
        broker: &Broker,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<(), Status> {
        broker
            .authorizer()
            .authorize(&self.principal, operation, &resource)
            .map_err(|e| denied(&e))
    }

    /// Whether the caller may do `operation` on `resource` (for filtering
    /// lists).
    pub(crate) fn may(
        &self,
        broker: &Broker,
        operation: Operation,
        resource: Resource<'_>,
    ) -> bool {
        broker
            .authorizer()
            .authorize(&self.principal, operation, &resource)
            .is_ok()
    }
}

fn denied(denied: &Denied) -> Status {
    tracing::debug!(
        principal = %denied.principal,
        operation = %denied.operation,
        resource = %denied.resource,
        "request refused by the ACLs"
    );
    Status::permission_denied(denied.to_string())
}

/// Checks `operation` on each distinct topic of a request, in order.
pub(crate) fn check_topics<'a>(
    caller: &Caller,
    broker: &Broker,
    operation: Operation,
    topics: impl IntoIterator<Item = &'a str>,
) -> Result<(), Status> {
    if !broker.authorizer().is_enabled() {
        return Ok(());
    }
    let mut checked = HashSet::new();
    for topic in topics {
        if checked.insert(topic) {
            caller.check(broker, operation, Resource::Topic(topic))?;
        }
    }
    Ok(())
}

//! The decision: may this principal do this operation on this resource?
//!
//! Once authorization is on, everything not allowed is refused:
//! - a superuser may do everything;
//! - an ACL that denies beats any that allows;
//! - otherwise an ACL that allows is needed. `describe` is also allowed to
//!   whoever may produce, consume, commit, delete or alter the resource
//!   (unless an ACL denies `describe` itself): a consumer can look up the
//!   offsets of the topic it reads without an ACL of its own for that.
//!
//! The ACLs are held in memory as one immutable list swapped whole on a
//! change, so a request reads them without waiting on a writer.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::RwLock;

use super::binding::{AclBinding, Operation, Permission, Resource, ResourceType};

/// The operations that let a principal describe the resource they act on.
const IMPLY_DESCRIBE: [Operation; 5] = [
    Operation::Produce,
    Operation::Consume,
    Operation::Commit,
    Operation::Delete,
    Operation::Alter,
];

/// A request refused by the ACLs. Its text names the principal, the
/// operation and the resource, and is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal `{principal}` may not {operation} {resource}: {reason}")]
pub struct Denied {
    pub principal: String,
    pub operation: Operation,
    /// `topic:NAME`, `group:NAME` or `cluster`.
    pub resource: String,
    pub reason: &'static str,
}

/// Decides requests against the broker's ACLs.
#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<String>,
    acls: RwLock<Arc<Vec<AclBinding>>>,
}

impl Authorizer {
    /// An authorizer that allows everything: the broker's default.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            super_users: HashSet::new(),
            acls: RwLock::default(),
        }
    }

    /// Deny by default, except what `acls` allow and what superusers do.
    pub fn with_acls(
        super_users: impl IntoIterator<Item = String>,
        acls: impl IntoIterator<Item = AclBinding>,
    ) -> Self {
        let authorizer = Self {
            enabled: true,
            super_users: super_users.into_iter().collect(),
            acls: RwLock::default(),
        };
        authorizer.replace(acls.into_iter().collect());
        authorizer
    }

    /// Whether requests are checked at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// Every ACL, sorted.
    pub fn acls(&self) -> Arc<Vec<AclBinding>> {
        self.acls.read().clone()
    }

    /// Replaces the ACLs (after the store has them).
    pub(crate) fn replace(&self, mut acls: Vec<AclBinding>) {
        acls.sort();
        acls.dedup();
        *self.acls.write() = Arc::new(acls);
    }

    /// `Ok` when `principal` may do `operation` on `resource`.
    pub fn authorize(
        &self,
        principal: &str,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> Result<(), Denied> {
        if !self.enabled || self.super_users.contains(principal) {
            return Ok(());
        }
        let acls = self.acls.read().clone();
        let decided = decide(&acls, principal, operation, resource);
        let decided = match decided {
            Decision::NoAcl if operation == Operation::Describe => {
                if IMPLY_DESCRIBE.iter().any(|implying| {
                    decide(&acls, principal, *implying, resource) == Decision::Allowed
                }) {
                    Decision::Allowed
                } else {
                    Decision::NoAcl
                }
            }
            other => other,
        };
        let reason = match decided {
            Decision::Allowed => return Ok(()),
            Decision::DeniedByAcl => "an ACL denies it",
            Decision::NoAcl => "no ACL allows it",
        };
        Err(Denied {
            principal: principal.to_owned(),
            operation,
            resource: resource.to_string(),
            reason,
        })
    }

    /// Whether `principal` may produce to at least some topic: what taking
    /// a producer id needs (its batches are still checked topic by topic).
    pub fn may_produce_somewhere(&self, principal: &str) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        self.acls.read().iter().any(|acl| {
            acl.permission == Permission::Allow
                && (acl.principal == principal || acl.principal == super::ANY_PRINCIPAL)
                && acl.operation.covers(Operation::Produce)
                && matches!(
                    acl.resource.resource_type,
                    ResourceType::Topic | ResourceType::Cluster
                )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allowed,
    DeniedByAcl,
    NoAcl,
}

fn decide(
    acls: &[AclBinding],
    principal: &str,
    operation: Operation,
    resource: &Resource<'_>,
) -> Decision {
    let mut allowed = false;
    for acl in acls
        .iter()
        .filter(|acl| acl.applies_to(principal, operation, resource))
    {
        match acl.permission {
            Permission::Deny => return Decision::DeniedByAcl,
            Permission::Allow => allowed = true,
        }
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::NoAcl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{ANY_PRINCIPAL, ResourcePattern};

    fn acl(
        principal: &str,
        operation: Operation,
        resource: ResourcePattern,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.to_owned(),
            operation,
            resource,
            permission,
        }
    }

    fn topic(name: &str) -> ResourcePattern {
        ResourcePattern::literal(ResourceType::Topic, name)
    }

    #[test]
    fn everything_is_denied_by_default() {
        let authorizer = Authorizer::with_acls([], []);
        let denied = authorizer
            .authorize("alice", Operation::Produce, &Resource::Topic("orders"))
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "principal `alice` may not produce topic:orders: no ACL allows it"
        );
    }

    #[test]
    fn a_disabled_authorizer_allows_everything() {
        let authorizer = Authorizer::disabled();
        assert!(
            authorizer
                .authorize("alice", Operation::Delete, &Resource::Cluster)
                .is_ok()
        );
    }

    #[test]
    fn an_allow_acl_allows_only_its_operation_resource_and_principal() {
        let authorizer = Authorizer::with_acls(
            [],
            [acl(
                "alice",
                Operation::Produce,
                topic("orders"),
                Permission::Allow,
            )],
        );
        let orders = Resource::Topic("orders");
        assert!(
            authorizer
                .authorize("alice", Operation::Produce, &orders)
                .is_ok()
        );
        assert!(
            authorizer
                .authorize("alice", Operation::Consume, &orders)
                .is_err()
        );
        assert!(
            authorizer
                .authorize("bob", Operation::Produce, &orders)
                .is_err()
        );
        assert!(
            authorizer
                .authorize("alice", Operation::Produce, &Resource::Topic("orders2"))
                .is_err()
        );
        assert!(
            authorizer
                .authorize("alice", Operation::Produce, &Resource::Group("orders"))
                .is_err()
        );
    }

    #[test]
    fn deny_beats_allow() {
        let authorizer = Authorizer::with_acls(
            [],
            [
                acl(
                    ANY_PRINCIPAL,
                    Operation::All,
                    ResourcePattern::prefix(ResourceType::Topic, ""),
                    Permission::Allow,
                ),
                acl(
                    "mallory",
                    Operation::Delete,
                    topic("orders"),
                    Permission::Deny,
                ),
            ],
        );
        let orders = Resource::Topic("orders");
        assert!(
            authorizer
                .authorize("alice", Operation::Delete, &orders)
                .is_ok()
        );
        let denied = authorizer
            .authorize("mallory", Operation::Delete, &orders)
            .unwrap_err();
        assert_eq!(denied.reason, "an ACL denies it");
        assert!(
            authorizer
                .authorize("mallory", Operation::Produce, &orders)
                .is_ok()
        );
    }

    #[test]
    fn describe_follows_from_other_operations_unless_denied() {
        let orders = Resource::Topic("orders");
        let consume = acl(
            "alice",
            Operation::Consume,
            topic("orders"),
            Permission::Allow,
        );
        let authorizer = Authorizer::with_acls([], [consume.clone()]);
        assert!(
            authorizer
                .authorize("alice", Operation::Describe, &orders)
                .is_ok()
        );
        assert!(
            authorizer
                .authorize("alice", Operation::Describe, &Resource::Topic("other"))
                .is_err()
        );
        let no_describe = acl(
            "alice",
            Operation::Describe,
            topic("orders"),
            Permission::Deny,
        );
        let authorizer = Authorizer::with_acls([], [consume, no_describe]);
        assert!(
            authorizer
                .authorize("alice", Operation::Describe, &orders)
                .is_err()
        );
        assert!(
            authorizer
                .authorize("alice", Operation::Consume, &orders)
                .is_ok()
        );
    }

    #[test]
    fn super_users_may_do_everything() {
        let authorizer = Authorizer::with_acls(
            ["admin".to_owned()],
            [acl(
                "admin",
                Operation::All,
                ResourcePattern::cluster(),
                Permission::Deny,
            )],
        );
        assert!(
            authorizer
                .authorize("admin", Operation::Alter, &Resource::Cluster)
                .is_ok()
        );
        assert!(
            authorizer
                .authorize("other", Operation::Alter, &Resource::Cluster)
                .is_err()
        );
    }

    #[test]
    fn a_producer_id_needs_produce_on_some_topic() {
        let authorizer = Authorizer::with_acls(
            [],
            [
                acl(
                    "alice",
                    Operation::Produce,
                    ResourcePattern::prefix(ResourceType::Topic, "orders."),
                    Permission::Allow,
                ),
                acl(
                    "bob",
                    Operation::Consume,
                    topic("orders"),
                    Permission::Allow,
                ),
            ],
        );
        assert!(authorizer.may_produce_somewhere("alice"));
        assert!(!authorizer.may_produce_somewhere("bob"));
    }
}

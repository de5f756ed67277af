//! Authorization: ACLs binding principals to operations on topics, groups
//! and the cluster, and the decision made from them for each request.
//!
//! The ACLs are kept in the metadata store; the broker holds a copy in
//! memory ([`Authorizer`]) that every change replaces after the store has
//! it.

mod authorizer;
mod binding;

pub use authorizer::{Authorizer, Denied};
pub use binding::{
    ANONYMOUS, ANY_PRINCIPAL, ANY_RESOURCE, AclBinding, Operation, PatternType, Permission,
    Resource, ResourcePattern, ResourceType,
};

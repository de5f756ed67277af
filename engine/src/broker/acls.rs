//! Changing the ACLs: the store first, then the authorizer's copy, under
//! the admin lock so that concurrent changes cannot reorder the two.

use super::Broker;
use crate::acl::{AclBinding, PatternType, ResourceType};
use crate::error::{AdminError, Invalid, blocking};

/// The longest principal or resource name an ACL may hold.
pub const ACL_NAME_BYTES_MAX: usize = 1024;

impl Broker {
    /// Adds an ACL; adding one that exists changes nothing. It applies to
    /// the requests that follow.
    pub async fn add_acl(&self, acl: AclBinding) -> Result<(), AdminError> {
        check(&acl)?;
        let _admin = self.admin.lock().await;
        let meta = self.meta.clone();
        let stored = acl.clone();
        blocking(move || meta.put_acl(&stored)).await??;
        let mut acls = self.authorizer.acls().as_ref().clone();
        acls.push(acl);
        self.authorizer.replace(acls);
        Ok(())
    }

    /// Removes an ACL; whether it existed.
    pub async fn remove_acl(&self, acl: AclBinding) -> Result<bool, AdminError> {
        check(&acl)?;
        let _admin = self.admin.lock().await;
        let meta = self.meta.clone();
        let stored = acl.clone();
        let removed = blocking(move || meta.delete_acl(&stored)).await??;
        let mut acls = self.authorizer.acls().as_ref().clone();
        acls.retain(|kept| *kept != acl);
        self.authorizer.replace(acls);
        Ok(removed)
    }

    /// Whether `acl` may be stored, by the rules `add_acl` applies (a
    /// cluster checks before it commits the change).
    pub fn check_acl(&self, acl: &AclBinding) -> Result<(), Invalid> {
        check(acl)
    }

    /// Every ACL, sorted.
    pub fn acls(&self) -> Vec<AclBinding> {
        self.authorizer.acls().as_ref().clone()
    }
}

/// The rules an ACL must follow to be stored.
fn check(acl: &AclBinding) -> Result<(), Invalid> {
    if acl.principal.is_empty() {
        return Err(Invalid::new(
            "principal",
            "must be set (a principal's name, or * for every principal)",
        ));
    }
    if acl.principal.len() > ACL_NAME_BYTES_MAX {
        return Err(Invalid::new(
            "principal",
            format!("is longer than {ACL_NAME_BYTES_MAX} bytes"),
        ));
    }
    if acl.resource.name.len() > ACL_NAME_BYTES_MAX {
        return Err(Invalid::new(
            "resource_name",
            format!("is longer than {ACL_NAME_BYTES_MAX} bytes"),
        ));
    }
    match acl.resource.resource_type {
        ResourceType::Cluster if !acl.resource.name.is_empty() => Err(Invalid::new(
            "resource_name",
            "must be empty for the cluster",
        )),
        ResourceType::Topic | ResourceType::Group
            if acl.resource.name.is_empty()
                && acl.resource.pattern_type == PatternType::Literal =>
        {
            Err(Invalid::new(
                "resource_name",
                "must be set for a topic or group (`*` names all of them)",
            ))
        }
        _ => Ok(()),
    }
}

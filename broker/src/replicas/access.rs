//! ACLs and client quotas in a cluster: changed through the metadata
//! group, so that every broker enforces the same ones, and applied to each
//! broker's engine by the reconciler, which makes the engine's match the
//! group's (the only writer of them in a cluster). A change returns once
//! the broker that took it has applied it.

use std::collections::{BTreeMap, BTreeSet};

use brook_cluster::{ClusterState, MetaCommand, MetaResponse};
use brook_engine::acl::AclBinding;
use brook_engine::quota::{QuotaLimits, QuotaTarget};
use brook_engine::{AdminError, QuotaError};

use super::{ClusterAdminError, Replicas};

impl Replicas {
    /// Adds an ACL on every broker.
    pub async fn add_acl(&self, acl: AclBinding) -> Result<(), ClusterAdminError> {
        self.broker.check_acl(&acl).map_err(AdminError::from)?;
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::AddAcl { acl: acl.clone() })
            .await?;
        access_refusal(answer)?;
        self.applied_here(|broker| broker.acls().contains(&acl).then_some(()))
            .await
            .ok_or_else(|| ClusterAdminError::NotAppliedHere("the ACL added".to_owned()))
    }

    /// Removes an ACL from every broker; whether it existed.
    pub async fn remove_acl(&self, acl: AclBinding) -> Result<bool, ClusterAdminError> {
        self.broker.check_acl(&acl).map_err(AdminError::from)?;
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::RemoveAcl { acl: acl.clone() })
            .await?;
        let existed = match answer {
            MetaResponse::AclRemoved { existed } => existed,
            other => {
                access_refusal(other)?;
                false
            }
        };
        self.applied_here(|broker| (!broker.acls().contains(&acl)).then_some(()))
            .await
            .ok_or_else(|| ClusterAdminError::NotAppliedHere("the ACL removed".to_owned()))?;
        Ok(existed)
    }

    /// Sets a quota on every broker.
    pub async fn set_quota(
        &self,
        target: QuotaTarget,
        limits: QuotaLimits,
    ) -> Result<(), ClusterAdminError> {
        self.broker
            .check_quota(&target, &limits)
            .map_err(QuotaError::from)?;
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::SetQuota {
                principal: principal(&target),
                limits,
            })
            .await?;
        access_refusal(answer)?;
        self.applied_here(|broker| {
            broker
                .list_quotas()
                .contains(&(target.clone(), limits))
                .then_some(())
        })
        .await
        .ok_or_else(|| ClusterAdminError::NotAppliedHere(format!("the quota of {target} set")))
    }

    /// Removes a quota from every broker.
    pub async fn remove_quota(&self, target: QuotaTarget) -> Result<(), ClusterAdminError> {
        let answer = self
            .meta
            .propose_anywhere(MetaCommand::RemoveQuota {
                principal: principal(&target),
            })
            .await?;
        if answer == MetaResponse::NoSuchQuota {
            return Err(QuotaError::NotFound(target).into());
        }
        access_refusal(answer)?;
        self.applied_here(|broker| {
            (!broker.list_quotas().iter().any(|(set, _)| *set == target)).then_some(())
        })
        .await
        .ok_or_else(|| ClusterAdminError::NotAppliedHere(format!("the quota of {target} removed")))
    }

    /// Makes the engine's ACLs and quotas those of `state`.
    pub(super) async fn reconcile_access(&self, state: &ClusterState) {
        let have: BTreeSet<AclBinding> = self.broker.acls().into_iter().collect();
        for acl in state.acls.difference(&have) {
            if let Err(e) = self.broker.add_acl(acl.clone()).await {
                tracing::warn!(error = %e, ?acl, "could not add the cluster's ACL on this broker; trying again");
            }
        }
        for acl in have.difference(&state.acls) {
            if let Err(e) = self.broker.remove_acl(acl.clone()).await {
                tracing::warn!(error = %e, ?acl, "could not remove an ACL the cluster does not have; trying again");
            }
        }
        let mut wanted: BTreeMap<QuotaTarget, QuotaLimits> = state
            .quotas
            .iter()
            .map(|(principal, limits)| (QuotaTarget::Principal(principal.clone()), *limits))
            .collect();
        if let Some(limits) = state.default_quota {
            wanted.insert(QuotaTarget::Default, limits);
        }
        let have: BTreeMap<QuotaTarget, QuotaLimits> =
            self.broker.list_quotas().into_iter().collect();
        for target in have.keys().filter(|target| !wanted.contains_key(*target)) {
            if let Err(e) = self.broker.remove_quota(target.clone()).await {
                tracing::warn!(error = %e, quota = %target, "could not remove a quota the cluster does not have; trying again");
            }
        }
        for (target, limits) in wanted {
            if have.get(&target) != Some(&limits)
                && let Err(e) = self.broker.set_quota(target.clone(), limits).await
            {
                tracing::warn!(error = %e, quota = %target, "could not set the cluster's quota on this broker; trying again");
            }
        }
    }
}

fn principal(target: &QuotaTarget) -> Option<String> {
    match target {
        QuotaTarget::Default => None,
        QuotaTarget::Principal(name) => Some(name.clone()),
    }
}

fn access_refusal(answer: MetaResponse) -> Result<(), ClusterAdminError> {
    match answer {
        MetaResponse::Done | MetaResponse::AclRemoved { .. } => Ok(()),
        MetaResponse::TooManyQuotas { max } => Err(QuotaError::TooMany { max }.into()),
        other => Err(ClusterAdminError::Unexpected(format!("{other:?}"))),
    }
}

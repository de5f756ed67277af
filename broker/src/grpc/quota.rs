//! `brook.v1.QuotaService`: setting, removing and listing client quotas.
//! Every change, and every refused attempt, is one audit line.

use std::sync::Arc;

use brook_proto::quota_service_server::QuotaService;
use brook_proto::{
    ListQuotasRequest, ListQuotasResponse, Quota, RemoveQuotaRequest, RemoveQuotaResponse,
    SetQuotaRequest, SetQuotaResponse,
};
use tonic::{Request, Response, Status};

use brook_engine::quota::{QuotaLimits, QuotaTarget};
use brook_engine::{Broker, Invalid};

use super::audit::Audit;
use super::authorize::Caller;
use super::status::{cluster_status, status};
use crate::replicas::Replicas;
use brook_engine::acl::{Operation, Resource};

#[derive(Debug)]
pub struct QuotaHandler {
    broker: Arc<Broker>,
    /// In a cluster: quotas change through the metadata group.
    replicas: Option<Arc<Replicas>>,
}

impl QuotaHandler {
    pub fn new(broker: Arc<Broker>, replicas: Option<Arc<Replicas>>) -> Self {
        Self { broker, replicas }
    }
}

/// Whose quota a request names: exactly one of a principal and `default`.
fn target(principal: &str, default: bool) -> Result<QuotaTarget, Status> {
    match (principal.is_empty(), default) {
        (false, false) => Ok(QuotaTarget::Principal(principal.to_owned())),
        (true, true) => Ok(QuotaTarget::Default),
        (true, false) => Err(status(Invalid::new(
            "principal",
            "name a principal, or set default for the default quota",
        ))),
        (false, true) => Err(status(Invalid::new(
            "default",
            "name a principal or set default, not both",
        ))),
    }
}

fn to_proto(target: QuotaTarget, limits: QuotaLimits) -> Quota {
    let (principal, default) = match target {
        QuotaTarget::Default => (String::new(), true),
        QuotaTarget::Principal(name) => (name, false),
    };
    Quota {
        principal,
        default,
        produce_bytes_per_second: limits.produce_bytes_per_second,
        fetch_bytes_per_second: limits.fetch_bytes_per_second,
    }
}

/// The audit line's resource: `quota:default` or `quota:principal:NAME`.
fn resource(principal: &str, default: bool) -> String {
    if default && principal.is_empty() {
        "quota:default".to_owned()
    } else {
        format!("quota:principal:{principal}")
    }
}

#[tonic::async_trait]
impl QuotaService for QuotaHandler {
    #[tracing::instrument(skip_all)]
    async fn set_quota(
        &self,
        request: Request<SetQuotaRequest>,
    ) -> Result<Response<SetQuotaResponse>, Status> {
        let _timer = self.broker.metrics().time_request("SetQuota");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let quota = request.into_inner().quota.unwrap_or_default();
        let details = format!(
            "produce_bytes_per_second={:?} fetch_bytes_per_second={:?}",
            quota.produce_bytes_per_second, quota.fetch_bytes_per_second
        );
        let result = async {
            caller.check(&self.broker, Operation::Alter, Resource::Cluster)?;
            let target = target(&quota.principal, quota.default)?;
            let limits = QuotaLimits {
                produce_bytes_per_second: quota.produce_bytes_per_second,
                fetch_bytes_per_second: quota.fetch_bytes_per_second,
            };
            match &self.replicas {
                Some(replicas) => replicas
                    .set_quota(target.clone(), limits)
                    .await
                    .map_err(cluster_status)?,
                None => self
                    .broker
                    .set_quota(target.clone(), limits)
                    .await
                    .map_err(status)?,
            }
            Ok(Response::new(SetQuotaResponse {
                quota: Some(to_proto(target, limits)),
            }))
        }
        .await;
        audit.record(
            "set_quota",
            &resource(&quota.principal, quota.default),
            &details,
            &result,
        );
        result
    }

    #[tracing::instrument(skip_all)]
    async fn remove_quota(
        &self,
        request: Request<RemoveQuotaRequest>,
    ) -> Result<Response<RemoveQuotaResponse>, Status> {
        let _timer = self.broker.metrics().time_request("RemoveQuota");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let result = async {
            caller.check(&self.broker, Operation::Alter, Resource::Cluster)?;
            let target = target(&request.principal, request.default)?;
            match &self.replicas {
                Some(replicas) => replicas
                    .remove_quota(target)
                    .await
                    .map_err(cluster_status)?,
                None => self.broker.remove_quota(target).await.map_err(status)?,
            }
            Ok(Response::new(RemoveQuotaResponse {}))
        }
        .await;
        audit.record(
            "remove_quota",
            &resource(&request.principal, request.default),
            "",
            &result,
        );
        result
    }

    async fn list_quotas(
        &self,
        request: Request<ListQuotasRequest>,
    ) -> Result<Response<ListQuotasResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ListQuotas");
        Caller::of(&request).check(&self.broker, Operation::Describe, Resource::Cluster)?;
        let quotas = self
            .broker
            .list_quotas()
            .into_iter()
            .map(|(target, limits)| to_proto(target, limits))
            .collect();
        Ok(Response::new(ListQuotasResponse { quotas }))
    }
}

//! `brook.v1.AclService`: adding, removing and listing ACLs. Every change,
//! and every refused attempt, is audited.

use std::sync::Arc;

use brook_proto::acl_service_server::AclService;
use brook_proto::{
    AclOperation, AclPatternType, AclPermission, AclResourceType, CreateAclRequest,
    CreateAclResponse, DeleteAclRequest, DeleteAclResponse, ListAclsRequest, ListAclsResponse,
};
use tonic::{Request, Response, Status};

use brook_engine::acl::{
    AclBinding, Operation, PatternType, Permission, Resource, ResourcePattern, ResourceType,
};
use brook_engine::{Broker, Invalid};

use super::audit::Audit;
use super::authorize::Caller;
use super::status::{cluster_status, status};
use crate::replicas::Replicas;

#[derive(Debug)]
pub struct AclHandler {
    broker: Arc<Broker>,
    /// In a cluster: ACLs change through the metadata group.
    replicas: Option<Arc<Replicas>>,
}

impl AclHandler {
    pub fn new(broker: Arc<Broker>, replicas: Option<Arc<Replicas>>) -> Self {
        Self { broker, replicas }
    }
}

#[tonic::async_trait]
impl AclService for AclHandler {
    async fn create_acl(
        &self,
        request: Request<CreateAclRequest>,
    ) -> Result<Response<CreateAclResponse>, Status> {
        let _timer = self.broker.metrics().time_request("CreateAcl");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let acl = request.into_inner().acl;
        let details = format!("{acl:?}");
        let result = async {
            caller.check(&self.broker, Operation::Alter, Resource::Cluster)?;
            let acl = binding_from_proto(acl)?;
            match &self.replicas {
                Some(replicas) => replicas.add_acl(acl).await.map_err(cluster_status)?,
                None => self.broker.add_acl(acl).await.map_err(status)?,
            }
            Ok(Response::new(CreateAclResponse {}))
        }
        .await;
        audit.record("create_acl", "cluster", &details, &result);
        result
    }

    async fn delete_acl(
        &self,
        request: Request<DeleteAclRequest>,
    ) -> Result<Response<DeleteAclResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DeleteAcl");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let acl = request.into_inner().acl;
        let details = format!("{acl:?}");
        let result = async {
            caller.check(&self.broker, Operation::Alter, Resource::Cluster)?;
            let acl = binding_from_proto(acl)?;
            let removed = match &self.replicas {
                Some(replicas) => replicas.remove_acl(acl).await.map_err(cluster_status)?,
                None => self.broker.remove_acl(acl).await.map_err(status)?,
            };
            Ok(Response::new(DeleteAclResponse { removed }))
        }
        .await;
        audit.record("delete_acl", "cluster", &details, &result);
        result
    }

    async fn list_acls(
        &self,
        request: Request<ListAclsRequest>,
    ) -> Result<Response<ListAclsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ListAcls");
        let caller = Caller::of(&request);
        caller.check(&self.broker, Operation::Describe, Resource::Cluster)?;
        let principal = request.into_inner().principal;
        let acls = self
            .broker
            .acls()
            .into_iter()
            .filter(|acl| principal.is_empty() || acl.principal == principal)
            .map(binding_to_proto)
            .collect();
        Ok(Response::new(ListAclsResponse { acls }))
    }
}

fn binding_from_proto(acl: Option<brook_proto::AclBinding>) -> Result<AclBinding, Status> {
    let acl = acl.ok_or_else(|| status(Invalid::new("acl", "must be set")))?;
    let operation = match AclOperation::try_from(acl.operation) {
        Ok(AclOperation::Produce) => Operation::Produce,
        Ok(AclOperation::Consume) => Operation::Consume,
        Ok(AclOperation::Commit) => Operation::Commit,
        Ok(AclOperation::Create) => Operation::Create,
        Ok(AclOperation::Delete) => Operation::Delete,
        Ok(AclOperation::Alter) => Operation::Alter,
        Ok(AclOperation::Describe) => Operation::Describe,
        Ok(AclOperation::All) => Operation::All,
        Ok(AclOperation::Unspecified) | Err(_) => {
            return Err(status(Invalid::new(
                "operation",
                format!(
                    "must be one of {} (got {})",
                    Operation::NAMES.join(", "),
                    acl.operation
                ),
            )));
        }
    };
    let resource_type = match AclResourceType::try_from(acl.resource_type) {
        Ok(AclResourceType::Topic) => ResourceType::Topic,
        Ok(AclResourceType::Group) => ResourceType::Group,
        Ok(AclResourceType::Cluster) => ResourceType::Cluster,
        Ok(AclResourceType::Unspecified) | Err(_) => {
            return Err(status(Invalid::new(
                "resource_type",
                format!(
                    "must be topic, group or cluster (got {})",
                    acl.resource_type
                ),
            )));
        }
    };
    let pattern_type = match AclPatternType::try_from(acl.pattern_type) {
        Ok(AclPatternType::Literal) => PatternType::Literal,
        Ok(AclPatternType::Prefix) => PatternType::Prefix,
        Err(_) => {
            return Err(status(Invalid::new(
                "pattern_type",
                format!("must be literal or prefix (got {})", acl.pattern_type),
            )));
        }
    };
    let permission = match AclPermission::try_from(acl.permission) {
        Ok(AclPermission::Allow) => Permission::Allow,
        Ok(AclPermission::Deny) => Permission::Deny,
        Err(_) => {
            return Err(status(Invalid::new(
                "permission",
                format!("must be allow or deny (got {})", acl.permission),
            )));
        }
    };
    Ok(AclBinding {
        principal: acl.principal,
        operation,
        resource: ResourcePattern {
            resource_type,
            name: acl.resource_name,
            pattern_type,
        },
        permission,
    })
}

fn binding_to_proto(acl: AclBinding) -> brook_proto::AclBinding {
    let operation = match acl.operation {
        Operation::Produce => AclOperation::Produce,
        Operation::Consume => AclOperation::Consume,
        Operation::Commit => AclOperation::Commit,
        Operation::Create => AclOperation::Create,
        Operation::Delete => AclOperation::Delete,
        Operation::Alter => AclOperation::Alter,
        Operation::Describe => AclOperation::Describe,
        Operation::All => AclOperation::All,
    };
    let resource_type = match acl.resource.resource_type {
        ResourceType::Topic => AclResourceType::Topic,
        ResourceType::Group => AclResourceType::Group,
        ResourceType::Cluster => AclResourceType::Cluster,
    };
    brook_proto::AclBinding {
        principal: acl.principal,
        operation: operation.into(),
        resource_type: resource_type.into(),
        resource_name: acl.resource.name,
        pattern_type: match acl.resource.pattern_type {
            PatternType::Literal => AclPatternType::Literal,
            PatternType::Prefix => AclPatternType::Prefix,
        }
        .into(),
        permission: match acl.permission {
            Permission::Allow => AclPermission::Allow,
            Permission::Deny => AclPermission::Deny,
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_engine::acl::ANY_PRINCIPAL;

    #[test]
    fn bindings_survive_the_round_trip_through_protobuf() {
        let acl = AclBinding {
            principal: ANY_PRINCIPAL.to_owned(),
            operation: Operation::Commit,
            resource: ResourcePattern::prefix(ResourceType::Group, "billing-"),
            permission: Permission::Deny,
        };
        let back = binding_from_proto(Some(binding_to_proto(acl.clone()))).unwrap();
        assert_eq!(back, acl);
    }

    #[test]
    fn an_unset_operation_is_refused_naming_the_field() {
        let mut acl = binding_to_proto(AclBinding {
            principal: "alice".to_owned(),
            operation: Operation::Produce,
            resource: ResourcePattern::literal(ResourceType::Topic, "orders"),
            permission: Permission::Allow,
        });
        acl.operation = 0;
        let refused = binding_from_proto(Some(acl)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("operation"),
            "{}",
            refused.message()
        );
    }
}

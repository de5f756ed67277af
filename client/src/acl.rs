//! Access control lists: adding, removing and listing the ACLs a broker
//! with `authorizer = acl` checks requests against (see
//! `docs/security.md`). The proto types stay inside this crate.

use std::fmt;
use std::str::FromStr;

use brook_proto as proto;
use brook_proto::acl_service_client::AclServiceClient;

use crate::client::Client;
use crate::error::ClientError;

/// What an ACL lets a principal do (or forbids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AclOperation {
    /// Append records to a topic (and take a producer id).
    Produce,
    /// Read a topic; join a group.
    Consume,
    /// Commit a group's offsets.
    Commit,
    /// Create a topic.
    Create,
    /// Delete a topic or a group.
    Delete,
    /// Change a topic's settings or partitions, a group's offsets, or (on
    /// the cluster) ACLs and quotas.
    Alter,
    /// Read a resource's description and offsets, or (on the cluster) the
    /// ACLs and quotas.
    Describe,
    /// Every operation.
    All,
}

impl AclOperation {
    /// Every operation's name, as `FromStr` reads them.
    pub const NAMES: [&'static str; 8] = [
        "produce", "consume", "commit", "create", "delete", "alter", "describe", "all",
    ];

    /// The operation's name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::Commit => "commit",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Alter => "alter",
            Self::Describe => "describe",
            Self::All => "all",
        }
    }

    fn to_proto(self) -> proto::AclOperation {
        match self {
            Self::Produce => proto::AclOperation::Produce,
            Self::Consume => proto::AclOperation::Consume,
            Self::Commit => proto::AclOperation::Commit,
            Self::Create => proto::AclOperation::Create,
            Self::Delete => proto::AclOperation::Delete,
            Self::Alter => proto::AclOperation::Alter,
            Self::Describe => proto::AclOperation::Describe,
            Self::All => proto::AclOperation::All,
        }
    }

    fn from_proto(operation: i32) -> Option<Self> {
        Some(match proto::AclOperation::try_from(operation).ok()? {
            proto::AclOperation::Produce => Self::Produce,
            proto::AclOperation::Consume => Self::Consume,
            proto::AclOperation::Commit => Self::Commit,
            proto::AclOperation::Create => Self::Create,
            proto::AclOperation::Delete => Self::Delete,
            proto::AclOperation::Alter => Self::Alter,
            proto::AclOperation::Describe => Self::Describe,
            proto::AclOperation::All => Self::All,
            proto::AclOperation::Unspecified => return None,
        })
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An operation name that is not one of [`AclOperation::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an operation: use produce, consume, commit, create, delete, alter, describe or all"
)]
pub struct UnknownAclOperation(String);

impl FromStr for AclOperation {
    type Err = UnknownAclOperation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "produce" => Self::Produce,
            "consume" => Self::Consume,
            "commit" => Self::Commit,
            "create" => Self::Create,
            "delete" => Self::Delete,
            "alter" => Self::Alter,
            "describe" => Self::Describe,
            "all" => Self::All,
            other => return Err(UnknownAclOperation(other.to_owned())),
        })
    }
}

/// The resources an ACL applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AclResource {
    /// The topic of this name (`*`: every topic).
    Topic(String),
    /// Every topic whose name starts with this.
    TopicPrefix(String),
    /// The group of this name (`*`: every group).
    Group(String),
    /// Every group whose name starts with this.
    GroupPrefix(String),
    /// The broker as a whole: ACLs and quotas.
    Cluster,
}

impl fmt::Display for AclResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topic(name) => write!(f, "topic:{name}"),
            Self::TopicPrefix(prefix) => write!(f, "topic:{prefix}*"),
            Self::Group(name) => write!(f, "group:{name}"),
            Self::GroupPrefix(prefix) => write!(f, "group:{prefix}*"),
            Self::Cluster => f.write_str("cluster"),
        }
    }
}

/// Whether an ACL grants or refuses; a refusal beats any grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclPermission {
    /// The ACL grants the operation.
    Allow,
    /// The ACL refuses the operation, whatever other ACLs grant.
    Deny,
}

impl fmt::Display for AclPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// One ACL: `principal` (or `*`, every principal) may, or may not, do
/// `operation` on `resource`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    /// A principal's name, or `*` for every principal.
    pub principal: String,
    /// What it is about.
    pub operation: AclOperation,
    /// The topics, groups or cluster it applies to.
    pub resource: AclResource,
    /// Whether it grants or refuses.
    pub permission: AclPermission,
}

impl Acl {
    /// An ACL allowing `principal` to do `operation` on `resource`.
    pub fn allow(
        principal: impl Into<String>,
        operation: AclOperation,
        resource: AclResource,
    ) -> Self {
        Self {
            principal: principal.into(),
            operation,
            resource,
            permission: AclPermission::Allow,
        }
    }

    /// An ACL denying `principal` `operation` on `resource`.
    pub fn deny(
        principal: impl Into<String>,
        operation: AclOperation,
        resource: AclResource,
    ) -> Self {
        Self {
            permission: AclPermission::Deny,
            ..Self::allow(principal, operation, resource)
        }
    }

    fn to_proto(&self) -> proto::AclBinding {
        let (resource_type, name, pattern) = match &self.resource {
            AclResource::Topic(name) => (proto::AclResourceType::Topic, name.as_str(), false),
            AclResource::TopicPrefix(prefix) => {
                (proto::AclResourceType::Topic, prefix.as_str(), true)
            }
            AclResource::Group(name) => (proto::AclResourceType::Group, name.as_str(), false),
            AclResource::GroupPrefix(prefix) => {
                (proto::AclResourceType::Group, prefix.as_str(), true)
            }
            AclResource::Cluster => (proto::AclResourceType::Cluster, "", false),
        };
        proto::AclBinding {
            principal: self.principal.clone(),
            operation: self.operation.to_proto().into(),
            resource_type: resource_type.into(),
            resource_name: name.to_owned(),
            pattern_type: if pattern {
                proto::AclPatternType::Prefix
            } else {
                proto::AclPatternType::Literal
            }
            .into(),
            permission: match self.permission {
                AclPermission::Allow => proto::AclPermission::Allow,
                AclPermission::Deny => proto::AclPermission::Deny,
            }
            .into(),
        }
    }

    /// `None` for an ACL of a kind this client does not know (from a newer
    /// broker).
    fn from_proto(acl: proto::AclBinding) -> Option<Self> {
        let prefix = proto::AclPatternType::try_from(acl.pattern_type).ok()?
            == proto::AclPatternType::Prefix;
        let name = acl.resource_name;
        let resource = match proto::AclResourceType::try_from(acl.resource_type).ok()? {
            proto::AclResourceType::Topic if prefix => AclResource::TopicPrefix(name),
            proto::AclResourceType::Topic => AclResource::Topic(name),
            proto::AclResourceType::Group if prefix => AclResource::GroupPrefix(name),
            proto::AclResourceType::Group => AclResource::Group(name),
            proto::AclResourceType::Cluster => AclResource::Cluster,
            proto::AclResourceType::Unspecified => return None,
        };
        let permission = match proto::AclPermission::try_from(acl.permission).ok()? {
            proto::AclPermission::Allow => AclPermission::Allow,
            proto::AclPermission::Deny => AclPermission::Deny,
        };
        Some(Self {
            principal: acl.principal,
            operation: AclOperation::from_proto(acl.operation)?,
            resource,
            permission,
        })
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.permission, self.principal, self.operation, self.resource
        )
    }
}

impl Client {
    fn acl_stub(&self) -> AclServiceClient<crate::auth::Transport> {
        AclServiceClient::new(self.channel.clone())
    }

    /// Adds an ACL (needs `alter` on the cluster); adding one that exists
    /// changes nothing.
    pub async fn create_acl(&self, acl: &Acl) -> Result<(), ClientError> {
        let request = proto::CreateAclRequest {
            acl: Some(acl.to_proto()),
        };
        self.rpc(
            "create_acl",
            self.options.request_timeout,
            self.acl_stub().create_acl(request),
        )
        .await?;
        Ok(())
    }

    /// Removes an ACL (needs `alter` on the cluster); whether it existed.
    pub async fn delete_acl(&self, acl: &Acl) -> Result<bool, ClientError> {
        let request = proto::DeleteAclRequest {
            acl: Some(acl.to_proto()),
        };
        let response = self
            .rpc(
                "delete_acl",
                self.options.request_timeout,
                self.acl_stub().delete_acl(request),
            )
            .await?;
        Ok(response.removed)
    }

    /// The broker's ACLs (needs `describe` on the cluster), only those
    /// naming `principal` when one is given.
    pub async fn list_acls(&self, principal: Option<&str>) -> Result<Vec<Acl>, ClientError> {
        let request = proto::ListAclsRequest {
            principal: principal.unwrap_or_default().to_owned(),
        };
        let response = self
            .rpc(
                "list_acls",
                self.options.request_timeout,
                self.acl_stub().list_acls(request),
            )
            .await?;
        Ok(response
            .acls
            .into_iter()
            .filter_map(Acl::from_proto)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_survive_the_round_trip_through_protobuf() {
        for resource in [
            AclResource::Topic("orders".into()),
            AclResource::TopicPrefix("orders.".into()),
            AclResource::Group("billing".into()),
            AclResource::GroupPrefix("billing-".into()),
            AclResource::Cluster,
        ] {
            let acl = Acl::deny("alice", AclOperation::Commit, resource);
            assert_eq!(Acl::from_proto(acl.to_proto()), Some(acl));
        }
    }

    #[test]
    fn operations_parse_from_their_names() {
        for name in AclOperation::NAMES {
            assert_eq!(name.parse::<AclOperation>().unwrap().name(), name);
        }
        assert!("write".parse::<AclOperation>().is_err());
    }
}

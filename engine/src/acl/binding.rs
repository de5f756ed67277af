//! What an ACL says: a principal, an operation, a resource pattern, and
//! whether it allows or denies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The principal an ACL names when it applies to every client.
pub const ANY_PRINCIPAL: &str = "*";

/// The literal resource name that matches every topic (or every group).
pub const ANY_RESOURCE: &str = "*";

/// The principal of requests a broker does not authenticate (`auth = none`).
pub const ANONYMOUS: &str = "anonymous";

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Append records to a topic (and take a producer id).
    Produce,
    /// Read a topic's records; join a group.
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
    /// Read a resource's description: topic settings and offsets, group
    /// state and offsets, (on the cluster) ACLs and quotas.
    Describe,
    /// Every operation.
    All,
}

impl Operation {
    pub const NAMES: [&'static str; 8] = [
        "produce", "consume", "commit", "create", "delete", "alter", "describe", "all",
    ];

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

    /// Whether an ACL for `self` covers a request for `requested`.
    pub(crate) fn covers(self, requested: Operation) -> bool {
        self == Self::All || self == requested
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Operation {
    type Err = String;

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
            _ => {
                return Err(format!(
                    "must be one of {}, not `{s}`",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }
}

/// A kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    /// The broker (or cluster) as a whole: ACLs, quotas.
    Cluster,
}

impl ResourceType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
            Self::Cluster => "cluster",
        }
    }
}

/// The resource a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
}

impl Resource<'_> {
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Self::Topic(_) => ResourceType::Topic,
            Self::Group(_) => ResourceType::Group,
            Self::Cluster => ResourceType::Cluster,
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Topic(name) | Self::Group(name) => name,
            Self::Cluster => "",
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cluster => f.write_str("cluster"),
            other => write!(f, "{}:{}", other.resource_type().name(), other.name()),
        }
    }
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    /// The resource's name equals the pattern; `*` matches every name.
    Literal,
    /// The resource's name starts with the pattern.
    Prefix,
}

/// The resources an ACL applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    /// Empty for the cluster.
    pub name: String,
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    pub fn literal(resource_type: ResourceType, name: impl Into<String>) -> Self {
        Self {
            resource_type,
            name: name.into(),
            pattern_type: PatternType::Literal,
        }
    }

    pub fn prefix(resource_type: ResourceType, name: impl Into<String>) -> Self {
        Self {
            resource_type,
            name: name.into(),
            pattern_type: PatternType::Prefix,
        }
    }

    pub fn cluster() -> Self {
        Self::literal(ResourceType::Cluster, "")
    }

    pub fn matches(&self, resource: &Resource<'_>) -> bool {
        if self.resource_type != resource.resource_type() {
            return false;
        }
        match self.pattern_type {
            PatternType::Literal => self.name == resource.name() || self.name == ANY_RESOURCE,
            PatternType::Prefix => resource.name().starts_with(&self.name),
        }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.resource_type, self.pattern_type) {
            (ResourceType::Cluster, _) => f.write_str("cluster"),
            (kind, PatternType::Literal) => write!(f, "{}:{}", kind.name(), self.name),
            (kind, PatternType::Prefix) => write!(f, "{}:{}*", kind.name(), self.name),
        }
    }
}

/// Whether an ACL grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// One ACL: `principal` may (or may not) do `operation` on the resources
/// `resource` matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// A principal's name, or [`ANY_PRINCIPAL`].
    pub principal: String,
    pub operation: Operation,
    pub resource: ResourcePattern,
    pub permission: Permission,
}

impl AclBinding {
    /// Whether this ACL speaks of `principal` doing `operation` on `resource`.
    pub(crate) fn applies_to(
        &self,
        principal: &str,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> bool {
        (self.principal == principal || self.principal == ANY_PRINCIPAL)
            && self.operation.covers(operation)
            && self.resource.matches(resource)
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.permission.name(),
            self.principal,
            self.operation,
            self.resource
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_match_only_names_that_start_with_them() {
        let pattern = ResourcePattern::prefix(ResourceType::Topic, "orders.");
        assert!(pattern.matches(&Resource::Topic("orders.eu")));
        assert!(pattern.matches(&Resource::Topic("orders.")));
        assert!(!pattern.matches(&Resource::Topic("orders")));
        assert!(!pattern.matches(&Resource::Topic("payments.orders.eu")));
        assert!(!pattern.matches(&Resource::Group("orders.eu")));
    }

    #[test]
    fn literal_patterns_match_only_their_name() {
        let pattern = ResourcePattern::literal(ResourceType::Group, "billing");
        assert!(pattern.matches(&Resource::Group("billing")));
        assert!(!pattern.matches(&Resource::Group("billing-2")));
        assert!(!pattern.matches(&Resource::Topic("billing")));
        let every_group = ResourcePattern::literal(ResourceType::Group, ANY_RESOURCE);
        assert!(every_group.matches(&Resource::Group("billing")));
        assert!(!every_group.matches(&Resource::Topic("billing")));
        assert!(ResourcePattern::cluster().matches(&Resource::Cluster));
    }

    #[test]
    fn operations_parse_from_their_names() {
        for name in Operation::NAMES {
            let operation: Operation = name.parse().unwrap();
            assert_eq!(operation.name(), name);
        }
        assert!("write".parse::<Operation>().is_err());
    }
}

//! `brook acl`: add, remove and list the ACLs a broker with
//! `authorizer = acl` checks requests against.

use anyhow::bail;
use brook_client::{Acl, AclOperation, AclPermission, AclResource, Client};
use clap::{Args, Subcommand};

use crate::table::table;

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, forbid) a principal an operation on a resource.
    Add(AclArgs),
    /// Remove the ACL these flags describe (the same flags as `add`).
    Remove(AclArgs),
    /// List the ACLs.
    List {
        /// Only the ACLs naming this principal.
        #[arg(long)]
        principal: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("resource")
        .required(true)
        .args(["topic", "topic_prefix", "group", "group_prefix", "cluster"]),
))]
pub struct AclArgs {
    /// The principal: a certificate's or token's name, a JWT's subject,
    /// `anonymous` without authentication, or `*` for every principal.
    #[arg(long)]
    principal: String,
    /// produce, consume, commit, create, delete, alter, describe or all.
    #[arg(long)]
    operation: AclOperation,
    /// A topic (`*`: every topic).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Every topic whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    topic_prefix: Option<String>,
    /// A consumer group (`*`: every group).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Every group whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    group_prefix: Option<String>,
    /// The broker as a whole: ACLs (alter, describe) and quotas.
    #[arg(long)]
    cluster: bool,
    /// Forbid instead of allow; a deny beats any allow.
    #[arg(long)]
    deny: bool,
}

impl AclArgs {
    fn acl(self) -> anyhow::Result<Acl> {
        let resource = match (
            self.topic,
            self.topic_prefix,
            self.group,
            self.group_prefix,
            self.cluster,
        ) {
            (Some(topic), None, None, None, false) => AclResource::Topic(topic),
            (None, Some(prefix), None, None, false) => AclResource::TopicPrefix(prefix),
            (None, None, Some(group), None, false) => AclResource::Group(group),
            (None, None, None, Some(prefix), false) => AclResource::GroupPrefix(prefix),
            (None, None, None, None, true) => AclResource::Cluster,
            _ => bail!(
                "give exactly one of --topic, --topic-prefix, --group, --group-prefix, --cluster"
            ),
        };
        Ok(if self.deny {
            Acl::deny(self.principal, self.operation, resource)
        } else {
            Acl::allow(self.principal, self.operation, resource)
        })
    }
}

pub async fn run(client: &Client, command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Add(args) => {
            let acl = args.acl()?;
            client.create_acl(&acl).await?;
            println!("added: {acl}");
        }
        AclCommand::Remove(args) => {
            let acl = args.acl()?;
            if !client.delete_acl(&acl).await? {
                bail!("no such ACL: {acl}");
            }
            println!("removed: {acl}");
        }
        AclCommand::List { principal } => {
            let rows: Vec<Vec<String>> = client
                .list_acls(principal.as_deref())
                .await?
                .into_iter()
                .map(|acl| {
                    vec![
                        acl.principal,
                        acl.operation.to_string(),
                        acl.resource.to_string(),
                        match acl.permission {
                            AclPermission::Allow => "allow".to_owned(),
                            AclPermission::Deny => "deny".to_owned(),
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["PRINCIPAL", "OPERATION", "RESOURCE", "PERMISSION"], &rows)
            );
        }
    }
    Ok(())
}

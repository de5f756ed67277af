//! `brook group`: list, describe, reset and delete consumer groups; results
//! as aligned tables on stdout.

use anyhow::{Context as _, bail};
use brook_client::{GroupClient, GroupDescription, ResetTo, TopicPartition};
use clap::{Args, Subcommand};

use crate::table::table;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the groups: state and member count.
    List,
    /// Show a group's members and, per partition, the committed offset,
    /// end offset, lag and owner.
    Describe { group: String },
    /// Set a group's committed offsets on a topic (the group must have no members).
    Reset(ResetArgs),
    /// Delete a group without members, with its committed offsets.
    Delete { group: String },
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("to")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_timestamp"]),
))]
pub struct ResetArgs {
    group: String,
    /// The topic whose offsets to set.
    #[arg(long)]
    topic: String,
    /// Only this partition (repeatable; default: every partition).
    #[arg(long = "partition", value_name = "P")]
    partitions: Vec<u32>,
    /// Each partition's first retained record.
    #[arg(long)]
    to_earliest: bool,
    /// Each partition's end: skip everything written so far.
    #[arg(long)]
    to_latest: bool,
    /// This offset on every partition named.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The first record at or after this time (ms since the Unix epoch).
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
}

impl ResetArgs {
    fn to(&self) -> anyhow::Result<ResetTo> {
        Ok(
            match (
                self.to_earliest,
                self.to_latest,
                self.to_offset,
                self.to_timestamp,
            ) {
                (true, false, None, None) => ResetTo::Earliest,
                (false, true, None, None) => ResetTo::Latest,
                (false, false, Some(offset), None) => ResetTo::Offset(offset),
                (false, false, None, Some(ms)) => ResetTo::Timestamp(ms),
                _ => bail!(
                    "give exactly one of --to-earliest, --to-latest, --to-offset, --to-timestamp"
                ),
            },
        )
    }
}

pub async fn run(client: &GroupClient, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => {
            let rows: Vec<Vec<String>> = client
                .list_groups()
                .await?
                .into_iter()
                .map(|g| vec![g.group, g.state, g.members.to_string()])
                .collect();
            print!("{}", table(&["GROUP", "STATE", "MEMBERS"], &rows));
        }
        GroupCommand::Describe { group } => {
            let description = client
                .describe_group(&group)
                .await
                .with_context(|| format!("describe group {group}"))?;
            print!("{}", describe(&description));
        }
        GroupCommand::Reset(args) => {
            let to = args.to()?;
            let offsets = client
                .reset_offsets(&args.group, &args.topic, &args.partitions, to)
                .await
                .with_context(|| format!("reset the offsets of group {}", args.group))?;
            let rows: Vec<Vec<String>> = offsets
                .into_iter()
                .map(|o| vec![o.topic, o.partition.to_string(), o.offset.to_string()])
                .collect();
            print!("{}", table(&["TOPIC", "PARTITION", "OFFSET"], &rows));
        }
        GroupCommand::Delete { group } => {
            client
                .delete_group(&group)
                .await
                .with_context(|| format!("delete group {group}"))?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

/// The group's header line, its members, then its partitions.
fn describe(group: &GroupDescription) -> String {
    let mut out = format!(
        "group {}  state {}  generation {}  members {}\n\n",
        group.group,
        group.state,
        group.generation,
        group.members.len()
    );
    let members: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|m| {
            vec![
                m.member_id.clone(),
                m.client_id.clone(),
                partitions(&m.assigned),
                partitions(&m.revoking),
            ]
        })
        .collect();
    if !members.is_empty() {
        out.push_str(&table(
            &["MEMBER", "CLIENT", "ASSIGNED", "REVOKING"],
            &members,
        ));
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = group
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed_offset
                    .map_or_else(|| "-".to_owned(), |o| o.to_string()),
                p.end_offset.to_string(),
                p.lag.to_string(),
                p.owner.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    out.push_str(&table(
        &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"],
        &rows,
    ));
    out
}

/// `t/0,t/1`, or `-` for none.
fn partitions(partitions: &[TopicPartition]) -> String {
    if partitions.is_empty() {
        return "-".to_owned();
    }
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use brook_client::{MemberDescription, PartitionLag};

    use super::*;

    #[test]
    fn describe_aligns_members_and_partitions() {
        let group = GroupDescription {
            group: "g".into(),
            state: "stable".into(),
            generation: 4,
            members: vec![MemberDescription {
                member_id: "m-1".into(),
                client_id: "cli".into(),
                topics: vec!["t".into()],
                assigned: vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)],
                revoking: vec![],
            }],
            partitions: vec![
                PartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    committed_offset: Some(120),
                    end_offset: 125,
                    lag: 5,
                    owner: Some("m-1".into()),
                },
                PartitionLag {
                    topic: "t".into(),
                    partition: 1,
                    committed_offset: None,
                    end_offset: 7,
                    lag: 7,
                    owner: Some("m-1".into()),
                },
            ],
        };
        assert_eq!(
            describe(&group),
            "group g  state stable  generation 4  members 1\n\
             \n\
             MEMBER  CLIENT  ASSIGNED  REVOKING\n\
             m-1     cli     t/0,t/1   -\n\
             \n\
             TOPIC  PARTITION  COMMITTED  END  LAG  OWNER\n\
             t              0        120  125    5  m-1\n\
             t              1          -    7    7  m-1\n"
        );
    }

    #[test]
    fn reset_takes_exactly_one_target() {
        let args = |to_earliest, to_offset| ResetArgs {
            group: "g".into(),
            topic: "t".into(),
            partitions: vec![],
            to_earliest,
            to_latest: false,
            to_offset,
            to_timestamp: None,
        };
        assert_eq!(args(true, None).to().unwrap(), ResetTo::Earliest);
        assert_eq!(args(false, Some(3)).to().unwrap(), ResetTo::Offset(3));
        assert!(args(true, Some(3)).to().is_err());
    }
}

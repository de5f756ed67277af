//! `brook quota`: set, remove and list client quotas (bytes per second a
//! principal may produce and fetch) through a running broker; the list as
//! an aligned table on stdout, or JSON with `--json`.

use anyhow::Context as _;
use brook_client::{Client, Quota, QuotaTarget};
use clap::{ArgGroup, Args, Subcommand};

use crate::table::table;

/// How the default quota shows in the table.
const DEFAULT_ROW: &str = "(default)";

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a principal's quota, or the default one, replacing what it had:
    /// a rate not given is no limit in that direction.
    ///
    /// A client over its quota is slowed, not failed: the broker holds its
    /// answers back. A principal's own quota applies to it whole; the
    /// default applies to every principal without one of its own.
    Set(SetArgs),
    /// Remove a principal's quota, or the default one.
    Remove(TargetArgs),
    /// List the quotas: the default first, then by principal.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["principal", "default"])))]
pub struct TargetArgs {
    /// The principal: a token's name, a client certificate's common name,
    /// or `anonymous` on a broker that authenticates no one.
    #[arg(long, value_name = "P")]
    principal: Option<String>,
    /// The default quota, for every principal without one of its own.
    #[arg(long)]
    default: bool,
}

impl TargetArgs {
    fn target(&self) -> QuotaTarget {
        match &self.principal {
            Some(name) => QuotaTarget::principal(name.clone()),
            None => QuotaTarget::Default,
        }
    }
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("rate")
        .required(true)
        .multiple(true)
        .args(["produce_bytes_per_sec", "fetch_bytes_per_sec"]),
))]
pub struct SetArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Record batch bytes per second the principal may produce.
    #[arg(long, value_name = "N")]
    produce_bytes_per_sec: Option<u64>,
    /// Record bytes per second the principal may fetch (fetches and
    /// subscriptions together).
    #[arg(long, value_name = "N")]
    fetch_bytes_per_sec: Option<u64>,
}

pub async fn run(client: &Client, command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Set(args) => {
            let target = args.target.target();
            let quota = Quota::new(target.clone())
                .with_produce_bytes_per_second(args.produce_bytes_per_sec)
                .with_fetch_bytes_per_second(args.fetch_bytes_per_sec);
            let set = client
                .set_quota(&quota)
                .await
                .with_context(|| format!("set {target}"))?;
            println!(
                "set {}: produce {} fetch {}",
                set.target,
                rate(set.produce_bytes_per_second),
                rate(set.fetch_bytes_per_second)
            );
        }
        QuotaCommand::Remove(args) => {
            let target = args.target();
            client
                .remove_quota(&target)
                .await
                .with_context(|| format!("remove {target}"))?;
            println!("removed {target}");
        }
        QuotaCommand::List { json } => {
            let quotas = client.list_quotas().await?;
            if json {
                println!("{}", serde_json::to_string(&to_json(&quotas))?);
            } else {
                print!("{}", listing(&quotas));
            }
        }
    }
    Ok(())
}

fn rate(bytes_per_second: Option<u64>) -> String {
    bytes_per_second.map_or_else(|| "unlimited".to_owned(), |n| format!("{n} B/s"))
}

fn listing(quotas: &[Quota]) -> String {
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|q| {
            let cell = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            vec![
                match &q.target {
                    QuotaTarget::Principal(name) => name.clone(),
                    QuotaTarget::Default => DEFAULT_ROW.to_owned(),
                    other => other.to_string(),
                },
                cell(q.produce_bytes_per_second),
                cell(q.fetch_bytes_per_second),
            ]
        })
        .collect();
    table(
        &["PRINCIPAL", "PRODUCE_BYTES_PER_SEC", "FETCH_BYTES_PER_SEC"],
        &rows,
    )
}

/// `[{"principal": "alice", "default": false, "produce_bytes_per_second":
/// 1000, "fetch_bytes_per_second": null}, ...]`; the default's principal
/// is null.
fn to_json(quotas: &[Quota]) -> serde_json::Value {
    quotas
        .iter()
        .map(|q| {
            let principal = match &q.target {
                QuotaTarget::Principal(name) => Some(name.as_str()),
                _ => None,
            };
            serde_json::json!({
                "principal": principal,
                "default": q.target == QuotaTarget::Default,
                "produce_bytes_per_second": q.produce_bytes_per_second,
                "fetch_bytes_per_second": q.fetch_bytes_per_second,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_quota_lists_first_and_unset_rates_as_dashes() {
        let quotas = [
            Quota::new(QuotaTarget::Default).with_fetch_bytes_per_second(Some(5_000)),
            Quota::new(QuotaTarget::principal("alice")).with_produce_bytes_per_second(Some(1_000)),
        ];
        assert_eq!(
            listing(&quotas),
            "PRINCIPAL  PRODUCE_BYTES_PER_SEC  FETCH_BYTES_PER_SEC\n\
             (default)                      -                 5000\n\
             alice                       1000                    -\n"
        );
        let json = to_json(&quotas);
        assert_eq!(json[0]["principal"], serde_json::Value::Null);
        assert_eq!(json[0]["default"], true);
        assert_eq!(json[1]["principal"], "alice");
        assert_eq!(json[1]["produce_bytes_per_second"], 1_000);
        assert_eq!(json[1]["fetch_bytes_per_second"], serde_json::Value::Null);
    }
}

//! `brook topic recover`: brings back a topic directory the broker moved to
//! `<data dir>/quarantine/` because its metadata was missing. Unlike the
//! other `brook topic` commands it talks to no broker: it works on the
//! data directory, with the broker stopped (the metadata store's lock
//! makes it fail while one runs there).

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use brook_broker::RecoveredTopic;
use clap::Args;

use crate::settings::{Settings, read_file};
use crate::table::table;

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The quarantined directory, as the broker named it:
    /// `<data dir>/quarantine/<topic>.<unix ms>`.
    quarantined_dir: PathBuf,
    /// The topic's name [default: the directory's name without `.<unix ms>`].
    #[arg(long)]
    name: Option<String>,
    /// The broker's data directory [default: ./brook-data].
    #[arg(long, env = "BROOK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The broker's settings file, for its data directory and topic
    /// defaults; `--data-dir` overrides it.
    #[arg(long, env = "BROOK_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    let name = match args.name {
        Some(name) => name,
        None => brook_broker::quarantined_topic_name(&args.quarantined_dir)
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow!(
                    "{} does not end in `.<unix ms>` like a quarantined directory; give the topic's name with --name",
                    args.quarantined_dir.display()
                )
            })?,
    };
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => Settings::default(),
    };
    let flags = Settings {
        data_dir: args.data_dir,
        ..Settings::default()
    };
    let config = flags.merge(file).resolve()?.broker_config()?;
    let data_dir = config.data_dir.clone();
    let quarantined = args.quarantined_dir.clone();
    // Blocking: sled, file moves and fsyncs.
    let recovered = tokio::task::spawn_blocking(move || {
        brook_broker::recover_quarantined_topic(&config, &quarantined, &name)
    })
    .await
    .context("the recovery task failed")?
    .with_context(|| {
        format!(
            "cannot recover {} into the data directory {}",
            args.quarantined_dir.display(),
            data_dir.display()
        )
    })?;
    print!("{}", summary(&recovered));
    Ok(())
}

fn summary(topic: &RecoveredTopic) -> String {
    let mut out = format!(
        "recovered topic {} with {} partitions into {}\n",
        topic.name,
        topic.partitions.len(),
        topic.path.display()
    );
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.start_offset.to_string(),
                p.end_offset.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["PARTITION", "START", "END"], &rows));
    out
}

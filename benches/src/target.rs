//! The broker under test: one started in this process on a temporary
//! directory, or one already running.

use std::path::PathBuf;

use anyhow::Context as _;
use brook_broker::{BrokerConfig, EmbeddedBroker, FsyncPolicy};
use brook_client::ClientOptions;

use crate::connection::Connection;

/// Where the bench sends its load.
#[derive(Debug, Clone)]
pub enum BrokerTarget {
    /// Start a broker in this process; in a temporary directory unless
    /// `data_dir` names one.
    Embedded {
        fsync: FsyncPolicy,
        data_dir: Option<PathBuf>,
    },
    /// A running broker's gRPC endpoint (`host:port` or a URL; `host:port`
    /// means `https://` when the client has TLS settings).
    Remote(String),
}

/// A target ready for load; stop it with [`RunningBroker::stop`].
#[derive(Debug)]
pub struct RunningBroker {
    pub endpoint: String,
    /// The fsync policy, as `FsyncPolicy` prints it; `unknown` for a remote one.
    pub fsync: String,
    embedded: Option<EmbeddedBroker>,
}

impl BrokerTarget {
    pub async fn start(&self) -> anyhow::Result<RunningBroker> {
        match self {
            Self::Embedded { fsync, data_dir } => {
                let mut config = BrokerConfig::default();
                config.fsync = *fsync;
                let mut builder = EmbeddedBroker::builder().config(config);
                if let Some(dir) = data_dir {
                    builder = builder.data_dir(dir);
                }
                let broker = builder.start().await.context("start an embedded broker")?;
                Ok(RunningBroker {
                    endpoint: broker.endpoint(),
                    fsync: fsync.to_string(),
                    embedded: Some(broker),
                })
            }
            Self::Remote(address) => Ok(RunningBroker {
                endpoint: address.clone(),
                fsync: "unknown".to_owned(),
                embedded: None,
            }),
        }
    }
}

impl RunningBroker {
    /// How to reach this broker with the client's `options`.
    pub fn connection(&self, options: ClientOptions) -> Connection {
        Connection::new(self.endpoint.clone(), options)
    }

    /// Stops an embedded broker gracefully (a remote one is left alone).
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(broker) = self.embedded {
            broker
                .shutdown()
                .await
                .context("stop the embedded broker")?;
        }
        Ok(())
    }
}

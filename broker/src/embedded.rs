//! A real broker inside the calling process: on a random loopback port, in a
//! temporary directory unless told otherwise, gone on drop. For tests, and
//! for applications that embed Brook and also use it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{Readiness, ServerStatus};
use crate::server::{ServeError, serve_with_peers};
use brook_cluster::network::client::Connector;
use brook_engine::Broker;
use brook_engine::OpenError;
use brook_engine::config::BrokerConfig;

/// Why an embedded broker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the broker: {0}")]
    Open(#[from] OpenError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("invalid cluster setting")]
    Config(#[source] brook_engine::Invalid),
    #[error("broker {broker} had not joined the cluster after {timeout:?}")]
    NotFormed {
        broker: u64,
        timeout: std::time::Duration,
    },
}

/// A running in-process broker. Dropping it stops the server; the temporary
/// data directory (if it made one) is removed.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    broker: Arc<Broker>,
    status: Arc<ServerStatus>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    /// Held so the directory lives as long as the broker.
    _temp_dir: Option<tempfile::TempDir>,
}

/// How to start an `EmbeddedBroker`.
#[derive(Debug, Default)]
pub struct EmbeddedBrokerBuilder {
    config: BrokerConfig,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    /// A listener already bound (an `EmbeddedCluster` binds every
    /// broker's before it starts any, to name them all as peers).
    listener: Option<TcpListener>,
    peers: Option<PeerNetwork>,
}

/// How a broker of an `EmbeddedCluster` calls its peers.
#[derive(Clone)]
pub(crate) struct PeerNetwork(pub Arc<dyn Connector>);

impl std::fmt::Debug for PeerNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerNetwork")
    }
}

impl EmbeddedBrokerBuilder {
    /// Keeps data in `dir` (and leaves it there) instead of a temporary directory.
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Listens on `addr` instead of a random loopback port: a broker
    /// restarted on its predecessor's address is found by the same clients.
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Starts from this configuration; its data directory and listen
    /// addresses are replaced by the builder's.
    #[must_use]
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves on `listener` instead of binding one.
    #[must_use]
    pub(crate) fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Calls the cluster's peers through `peers` instead of plain TCP.
    #[must_use]
    pub(crate) fn peers(mut self, peers: PeerNetwork) -> Self {
        self.peers = Some(peers);
        self
    }

    pub async fn start(self) -> Result<EmbeddedBroker, StartError> {
        let mut config = self.config;
        // Bad TLS files and authentication settings fail here rather
        // than in the serving task.
        if let Some(tls) = &config.tls {
            crate::tls::ServerTls::load(tls)?;
        }
        crate::auth::Authenticator::load(&config)?;
        let temp_dir = if let Some(dir) = self.data_dir {
            config.data_dir = dir;
            None
        } else {
            {
                let dir = tempfile::Builder::new()
                    .prefix("brook-")
                    .tempdir()
                    .map_err(|source| StartError::Io {
                        what: "create a temporary data directory".to_owned(),
                        source,
                    })?;
                dir.path().clone_into(&mut config.data_dir);
                Some(dir)
            }
        };
        let listener = if let Some(listener) = self.listener {
            listener
        } else {
            let wanted = self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            TcpListener::bind(wanted)
                .await
                .map_err(|source| StartError::Io {
                    what: format!("bind {wanted}"),
                    source,
                })?
        };
        let addr = listener.local_addr().map_err(|source| StartError::Io {
            what: "read the bound address".to_owned(),
            source,
        })?;
        config.listen = addr;
        let broker = Broker::open(config).await?;
        let stop = CancellationToken::new();
        let shutdown = {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        };
        let peers = self.peers.map(|peers| peers.0);
        let status = Arc::new(ServerStatus::default());
        let task = tokio::spawn(serve_with_peers(
            broker.clone(),
            listener,
            None,
            shutdown,
            peers,
            status.clone(),
        ));
        Ok(EmbeddedBroker {
            addr,
            broker,
            status,
            stop,
            task: Some(task),
            _temp_dir: temp_dir,
        })
    }
}

impl EmbeddedBroker {
    /// Starts a broker with the default configuration in a temporary directory.
    pub async fn start() -> Result<Self, StartError> {
        Self::builder().start().await
    }

    pub fn builder() -> EmbeddedBrokerBuilder {
        EmbeddedBrokerBuilder::default()
    }

    /// The gRPC endpoint: `http://127.0.0.1:<port>`, or `https://` when
    /// the broker serves TLS (its certificate must name 127.0.0.1, or the
    /// client must be told which name it is issued for).
    pub fn endpoint(&self) -> String {
        let scheme = if self.broker.config().tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker itself, for direct calls without gRPC.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Whether it takes traffic, as a standalone broker's `/ready` says:
    /// in a cluster, once it has joined and its replicas have caught up.
    pub fn readiness(&self) -> Readiness {
        self.status.readiness()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.broker.config().data_dir
    }

    /// Stops gracefully: in-flight requests finish, partitions are fsynced.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(ServeError::Task(e))),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

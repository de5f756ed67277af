//! A real broker inside the calling process: on a random loopback port, in a
//! temporary directory unless told otherwise, gone on drop. For tests, and
//! for applications that embed Brook and also use it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::{ServeError, serve};
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
}

/// A running in-process broker. Dropping it stops the server; the temporary
/// data directory (if it made one) is removed.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    broker: Arc<Broker>,
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
        let wanted = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| StartError::Io {
                what: format!("bind {wanted}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Io {
            what: "read the bound address".to_owned(),
            source,
        })?;
        config.listen = addr;
        let broker = Broker::open(config).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(broker.clone(), listener, None, {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        Ok(EmbeddedBroker {
            addr,
            broker,
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

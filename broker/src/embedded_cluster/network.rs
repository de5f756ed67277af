//! The network between the brokers of an `EmbeddedCluster`: TCP on
//! loopback, through which a test can cut a broker off from its peers
//! while its clients still reach it.
//!
//! Every connection one broker makes to another is wrapped: while either
//! end is isolated, connecting is refused and every read or write on a
//! connection made before fails with a reset, so calls in flight fail as
//! they would on a broken network and the peer's channel reconnects once
//! the link is healed. Connections from clients are not touched.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brook_cluster::network::client::{ConnectError, Connector, TcpConnector};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Uri};

/// Which brokers are cut off from their peers; shared by every broker's
/// connector.
#[derive(Debug, Default)]
pub(crate) struct Links {
    isolated: Mutex<BTreeSet<u64>>,
}

impl Links {
    pub fn isolate(&self, id: u64) {
        self.isolated.lock().insert(id);
    }

    pub fn heal(&self, id: u64) {
        self.isolated.lock().remove(&id);
    }

    pub fn heal_all(&self) {
        self.isolated.lock().clear();
    }

    /// Whether traffic between `from` and `to` (`None`: an address that
    /// is no broker's) is cut.
    fn is_cut(&self, from: u64, to: Option<u64>) -> bool {
        let isolated = self.isolated.lock();
        isolated.contains(&from) || to.is_some_and(|to| isolated.contains(&to))
    }
}

/// How broker `from` connects to its peers.
#[derive(Clone)]
pub(crate) struct FaultyConnector {
    pub from: u64,
    /// Each broker's address, to its id.
    pub brokers: Arc<HashMap<String, u64>>,
    pub links: Arc<Links>,
    pub tcp: TcpConnector,
}

impl Connector for FaultyConnector {
    fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        let dial = Dial {
            from: self.from,
            to: self.brokers.get(address).copied(),
            address: Arc::from(address),
            links: self.links.clone(),
        };
        Ok(self
            .tcp
            .endpoint(address)?
            .connect_with_connector_lazy(dial))
    }
}

/// Connects one channel's connections to `address`, unless the link is cut.
#[derive(Clone)]
struct Dial {
    from: u64,
    to: Option<u64>,
    address: Arc<str>,
    links: Arc<Links>,
}

impl tower::Service<Uri> for Dial {
    type Response = TokioIo<Link>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Link>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let dial = self.clone();
        Box::pin(async move {
            if dial.links.is_cut(dial.from, dial.to) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the link between these brokers is cut",
                ));
            }
            let stream = TcpStream::connect(&*dial.address).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(Link {
                stream,
                from: dial.from,
                to: dial.to,
                links: dial.links,
            }))
        })
    }
}

/// One connection between two brokers, failing while their link is cut.
pub(crate) struct Link {
    stream: TcpStream,
    from: u64,
    to: Option<u64>,
    links: Arc<Links>,
}

impl Link {
    fn check(&self) -> io::Result<()> {
        if self.links.is_cut(self.from, self.to) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the link between these brokers is cut",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Link {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

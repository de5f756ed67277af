//! What the simulations share: gRPC over turmoil's simulated network, the
//! fault schedule's generator and the seeds to run.

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_cluster::network::client::{ConnectError, Connector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

/// The port every simulated broker listens on.
pub const PORT: u16 = 9430;

/// Channels over the simulated network.
pub struct SimConnector;

impl Connector for SimConnector {
    fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| ConnectError(e.to_string()))?
            .connect_timeout(Duration::from_secs(1));
        Ok(
            endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
                let authority = uri
                    .authority()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default();
                let stream = turmoil::net::TcpStream::connect(authority).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            })),
        )
    }
}

/// A simulated TCP connection, as tonic's server takes them.
pub struct Accepted(pub turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Simulated connections to `PORT`, as tonic's server takes them.
pub async fn listen() -> std::io::Result<impl futures::Stream<Item = std::io::Result<Accepted>>> {
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| Accepted(stream));
        Some((accepted, listener))
    }))
}

/// A small deterministic generator for the fault schedule.
pub struct Faults(pub u64);

impl Faults {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// The seeds to run: `BROOK_SIMULATION_SEEDS` (default 6) from
/// `BROOK_SIMULATION_FIRST_SEED` (default 1).
pub fn seeds() -> std::ops::Range<u64> {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let first = env("BROOK_SIMULATION_FIRST_SEED", 1);
    first..first + env("BROOK_SIMULATION_SEEDS", 6)
}

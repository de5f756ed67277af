//! What the simulations share: gRPC over turmoil's simulated network, the
//! fault schedule, the record of leaders by term and the seeds to run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use brook_cluster::network::client::{ConnectError, Connector};
use brook_cluster::{BrokerNode, NodeId};
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

/// Every leader seen, by term.
#[derive(Debug, Default)]
pub struct Leaders(parking_lot::Mutex<BTreeMap<u64, BTreeSet<NodeId>>>);

impl Leaders {
    /// Records each leader `metrics` shows, until its Raft stops.
    pub fn watch(
        self: &std::sync::Arc<Self>,
        mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BrokerNode>>,
    ) {
        let leaders = self.clone();
        tokio::spawn(async move {
            loop {
                {
                    let now = metrics.borrow();
                    if now.state == openraft::ServerState::Leader {
                        leaders
                            .0
                            .lock()
                            .entry(now.current_term)
                            .or_default()
                            .insert(now.id);
                    }
                }
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// How many terms had a leader, or the first term that had two.
    pub fn unique_per_term(&self) -> Result<usize, String> {
        let leaders = self.0.lock();
        match leaders.iter().find(|(_, leaders)| leaders.len() > 1) {
            Some((term, leaders)) => Err(format!("term {term} had leaders {leaders:?}")),
            None => Ok(leaders.len()),
        }
    }
}

/// The faults a run struck.
#[derive(Debug, Default)]
pub struct Struck {
    pub crashes: u32,
    pub partitions: u32,
}

/// Steps `sim` until it ends, striking `brokers` (hosts named by `host`)
/// until `faults_until`: every 0.3 to 1.8 s, half of the time at the
/// leader `leader` names, one fault: a broker cut off from the others,
/// every link mended, or a broker crashed (one at a time) and restarted
/// 0.1 to 1.6 s later with its files. After `faults_until` every link is
/// mended, so the group can heal.
pub fn run_with_faults(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    brokers: &[NodeId],
    host: fn(NodeId) -> String,
    leader: impl Fn() -> Option<NodeId>,
    faults_until: Duration,
) -> turmoil::Result<Struck> {
    let mend = |sim: &mut turmoil::Sim<'_>| {
        for a in brokers {
            for b in brokers.iter().filter(|b| a < *b) {
                sim.repair(host(*a), host(*b));
            }
        }
    };
    let mut struck = Struck::default();
    let mut faults = Faults(seed);
    let mut next_fault = Duration::from_secs(2);
    let mut crashed: Vec<(NodeId, Duration)> = Vec::new();
    let mut cut = false;
    while !sim.step()? {
        let now = sim.elapsed();
        crashed.retain(|(id, until)| {
            if now >= *until {
                sim.bounce(host(*id));
                false
            } else {
                true
            }
        });
        if now >= faults_until {
            if cut {
                mend(sim);
                cut = false;
            }
            continue;
        }
        if now < next_fault {
            continue;
        }
        next_fault = now + Duration::from_millis(300 + faults.next(1_500));
        let victim = match leader() {
            Some(leader) if faults.next(2) == 0 => leader,
            _ => brokers[faults.next(brokers.len() as u64) as usize],
        };
        match faults.next(3) {
            0 => {
                for other in brokers.iter().filter(|o| **o != victim) {
                    sim.partition(host(victim), host(*other));
                }
                cut = true;
                struck.partitions += 1;
            }
            1 if cut => {
                mend(sim);
                cut = false;
            }
            _ if crashed.is_empty() => {
                sim.crash(host(victim));
                struck.crashes += 1;
                crashed.push((
                    victim,
                    now + Duration::from_millis(100 + faults.next(1_500)),
                ));
            }
            _ => {}
        }
    }
    Ok(struck)
}

//! Sending the metadata group's Raft requests to peers.
//!
//! A peer's channel is made by a [`Connector`]: plain TCP to its address in
//! a broker, a simulated network in tests. Channels connect lazily and
//! reconnect by themselves, so an unreachable peer costs a failed call
//! (`Unreachable`, which openraft backs off from), not a stuck task.

use std::sync::Arc;
use std::time::Duration;

use brook_proto::cluster::RaftPayload;
use brook_proto::cluster::raft_service_client::RaftServiceClient;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::{decode, encode};
use crate::types::{BrokerNode, MetaRaftConfig, NodeId};

/// Makes the channel to a peer's address.
pub trait Connector: Send + Sync + 'static {
    /// A channel to `address` (`HOST:PORT`), connecting when first used.
    fn channel(&self, address: &str) -> Result<Channel, ConnectError>;
}

/// Why no channel can be made to an address (it is not a usable URI).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// Plaintext TCP to the peer's address.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub connect_timeout: Duration,
}

impl Connector for TcpConnector {
    fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        Ok(Channel::from_shared(format!("http://{address}"))
            .map_err(|e| ConnectError(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .connect_lazy())
    }
}

/// openraft's network: one [`Peer`] per target.
#[derive(Clone)]
pub struct Network {
    connector: Arc<dyn Connector>,
}

impl Network {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self { connector }
    }
}

impl RaftNetworkFactory<MetaRaftConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BrokerNode) -> Peer {
        Peer {
            target,
            address: node.address.clone(),
            connector: self.connector.clone(),
            client: None,
        }
    }
}

/// The channel to one peer.
pub struct Peer {
    target: NodeId,
    address: String,
    connector: Arc<dyn Connector>,
    /// Made at the first call, and again after a call that failed in
    /// transport: a connection whose peer restarted can stay open on our
    /// side and swallow every request until it times out.
    client: Option<RaftServiceClient<Channel>>,
}

/// Why a peer could not be used, for openraft's `Unreachable`.
#[derive(Debug, thiserror::Error)]
#[error("peer {node} at {address}: {reason}")]
struct PeerError {
    node: NodeId,
    address: String,
    reason: String,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BrokerNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |reason: String| {
            RPCError::Unreachable(Unreachable::new(&PeerError {
                node: self.target,
                address: self.address.clone(),
                reason,
            }))
        };
        if self.client.is_none() {
            match self.connector.channel(&self.address) {
                Ok(channel) => self.client = Some(RaftServiceClient::new(channel)),
                Err(e) => return Err(unreachable(format!("the address is not usable: {e}"))),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Err(unreachable("no channel".to_owned()));
        };
        let json = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut call = tonic::Request::new(RaftPayload { json: json.into() });
        call.set_timeout(option.hard_ttl());
        let answer = match method {
            Method::AppendEntries => client.append_entries(call).await,
            Method::Vote => client.vote(call).await,
            Method::InstallSnapshot => client.install_snapshot(call).await,
        };
        let payload = match answer {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Unknown
                ) {
                    // Start over with a new connection next time, and let
                    // openraft back off from an unreachable peer.
                    self.client = None;
                    return Err(unreachable(status.to_string()));
                }
                return Err(RPCError::Network(NetworkError::new(&status)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&payload.json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<MetaRaftConfig> for Peer {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<MetaRaftConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BrokerNode, RaftError<NodeId>>>
    {
        self.call(Method::AppendEntries, &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<MetaRaftConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BrokerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Method::InstallSnapshot, &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BrokerNode, RaftError<NodeId>>> {
        self.call(Method::Vote, &request, &option).await
    }
}

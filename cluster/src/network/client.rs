//! Sending a Raft group's requests to peers.
//!
//! A peer's channel is made by a [`Connector`]: plain TCP to its address in
//! a broker, a simulated network in tests. Channels connect lazily and
//! reconnect by themselves, so an unreachable peer costs a failed call
//! (`Unreachable`, which openraft backs off from), not a stuck task.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::cluster::raft_service_client::RaftServiceClient;
use brook_proto::cluster::{RaftPayload, ReadLogRequest};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{append_payload, decode, encode};
use crate::partition::source::{LogRead, LogSource};
use crate::types::{BrokerNode, EntryFormat, NodeId};

/// Makes the channel to a peer's address.
pub trait Connector: Send + Sync + 'static {
    /// A channel to `address` (`HOST:PORT`), connecting when first used.
    fn channel(&self, address: &str) -> Result<Channel, ConnectError>;

    /// The `authorization` metadata every call to a peer carries, when
    /// the brokers authenticate each other with a token.
    fn authorization(&self) -> Option<AsciiMetadataValue> {
        None
    }
}

/// A call to a peer: `message`, a time limit, and the broker's credentials.
pub(crate) fn peer_request<T>(
    connector: &dyn Connector,
    message: T,
    timeout: Duration,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Some(authorization) = connector.authorization() {
        request
            .metadata_mut()
            .insert("authorization", authorization);
    }
    request
}

/// Why no channel can be made to an address (it is not a usable URI).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// HTTP/2 receive windows of a broker's channels to its peers.
pub const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
pub const HTTP2_STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// TCP to the peer's address: plaintext, or TLS when `tls` is set.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub connect_timeout: Duration,
    /// TLS to the peers.
    pub tls: Option<PeerTls>,
    /// `Bearer <token>` sent with every call.
    pub authorization: Option<AsciiMetadataValue>,
}

impl TcpConnector {
    /// Plaintext, without credentials.
    pub fn plain(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            tls: None,
            authorization: None,
        }
    }

    /// The endpoint of a peer's channel, with the settings every broker
    /// channel uses; a [`Connector`] that makes its own connections (over a
    /// test network, say) builds on it.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, ConnectError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| ConnectError(e.to_string()))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_config()?)
                .map_err(|e| ConnectError(e.to_string()))?;
        }
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Room for whole AppendEntries of a partition in flight: the
            // default windows stall a follower's answer behind the leader's
            // reads.
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2)))
    }
}

/// The files of a broker's TLS to its peers, read again for each new
/// channel, so that renewed certificates are used without a restart.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// PEM bundle of the CAs the peers' certificates chain to.
    pub ca: PathBuf,
    /// This broker's certificate chain and key (PEM), presented to peers
    /// that ask for a client certificate.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PeerTls {
    fn client_config(&self) -> Result<ClientTlsConfig, ConnectError> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                ConnectError(format!("cannot read the {what} {}: {e}", path.display()))
            })
        };
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("peer CA bundle", &self.ca)?))
            .identity(Identity::from_pem(
                read("certificate", &self.cert)?,
                read("key", &self.key)?,
            )))
    }
}

impl Connector for TcpConnector {
    fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        Ok(self.endpoint(address)?.connect_lazy())
    }

    fn authorization(&self) -> Option<AsciiMetadataValue> {
        self.authorization.clone()
    }
}

/// openraft's network for one group: one [`Peer`] per target.
pub struct Network<C> {
    connector: Arc<dyn Connector>,
    /// The group's name in every request (empty: the metadata group).
    group: String,
    format: PhantomData<fn() -> C>,
}

impl<C> Network<C> {
    pub fn new(connector: Arc<dyn Connector>, group: &str) -> Self {
        Self {
            connector,
            group: group.to_owned(),
            format: PhantomData,
        }
    }
}

impl<C: EntryFormat> RaftNetworkFactory<C> for Network<C> {
    type Network = Peer<C>;

    async fn new_client(&mut self, target: NodeId, node: &BrokerNode) -> Peer<C> {
        Peer {
            target,
            address: node.address.clone(),
            group: self.group.clone(),
            connector: self.connector.clone(),
            client: None,
            calling: false,
            unanswered: 0,
            format: PhantomData,
        }
    }
}

/// The channel to one peer, for one group.
pub struct Peer<C> {
    target: NodeId,
    address: String,
    group: String,
    connector: Arc<dyn Connector>,
    /// Made at the first call, and again after a call that failed in
    /// transport: a connection whose peer restarted can stay open on our
    /// side and swallow every request until it times out.
    client: Option<RaftServiceClient<Channel>>,
    /// A call is under way; still set when the next call starts if
    /// openraft dropped it at its time limit.
    calling: bool,
    /// Calls in a row that openraft dropped at their time limit.
    unanswered: u32,
    format: PhantomData<fn() -> C>,
}

/// Calls in a row left unanswered within openraft's time limit after which
/// the connection is made again: one slow answer (a follower's fsync
/// behind a busy disk) says nothing about the connection, and making it
/// again cost more than the wait; several say it may be one whose peer is
/// gone without closing it.
const UNANSWERED_BEFORE_RECONNECT: u32 = 3;

/// How much longer than openraft's time limit a call is given in
/// transport: openraft's limit ends a slow call (a `Timeout`, after which
/// it sends again at once), not the transport's, whose error reads as an
/// unreachable peer that openraft backs off from.
const TRANSPORT_TIMEOUT_MARGIN: Duration = Duration::from_millis(100);

/// Why a peer could not be used, for openraft's `Unreachable`.
#[derive(Debug, thiserror::Error)]
#[error("peer {node} at {address}: {reason}")]
struct PeerError {
    node: NodeId,
    address: String,
    reason: String,
}

impl<C: EntryFormat> Peer<C> {
    /// `request` as JSON for this peer's group.
    fn json_payload<Req: Serialize>(&self, request: &Req) -> Result<RaftPayload, NetworkError> {
        let json = encode(request).map_err(|e| NetworkError::new(&e))?;
        Ok(RaftPayload {
            json: json.into(),
            group: self.group.clone(),
            entries: Vec::new(),
        })
    }

    async fn call<Resp, E>(
        &mut self,
        method: Method,
        payload: RaftPayload,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BrokerNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if std::mem::replace(&mut self.calling, true) {
            self.unanswered += 1;
            if self.unanswered >= UNANSWERED_BEFORE_RECONNECT {
                self.unanswered = 0;
                self.client = None;
            }
        }
        let result = self.call_now(method, payload, option).await;
        self.calling = false;
        self.unanswered = 0;
        result
    }

    async fn call_now<Resp, E>(
        &mut self,
        method: Method,
        payload: RaftPayload,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BrokerNode, RaftError<NodeId, E>>>
    where
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
                Ok(channel) => self.client = Some(crate::network::raft_client(channel)),
                Err(e) => return Err(unreachable(format!("the address is not usable: {e}"))),
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Err(unreachable("no channel".to_owned()));
        };
        let call = peer_request(
            &*self.connector,
            payload,
            option.hard_ttl() + TRANSPORT_TIMEOUT_MARGIN,
        );
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

impl<C: EntryFormat> RaftNetwork<C> for Peer<C> {
    /// After a peer was unreachable: 50 ms, doubling to 800 ms. openraft's
    /// constant 500 ms leaves a broker that just restarted without its
    /// entries (and standing for elections it cannot win) for as long.
    fn backoff(&self) -> Backoff {
        Backoff::new((0..).map(|failures: u32| Duration::from_millis(50 << failures.min(4))))
    }

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BrokerNode, RaftError<NodeId>>>
    {
        let payload = append_payload(&self.group, &request)
            .map_err(|e| RPCError::Network(NetworkError::new(&EncodeError(e))))?;
        self.call(Method::AppendEntries, payload, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BrokerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let payload = self.json_payload(&request).map_err(RPCError::Network)?;
        self.call(Method::InstallSnapshot, payload, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BrokerNode, RaftError<NodeId>>> {
        let payload = self.json_payload(&request).map_err(RPCError::Network)?;
        self.call(Method::Vote, payload, &option).await
    }
}

/// An entry that could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("encoding an entry: {0}")]
struct EncodeError(String);

/// How long a catch-up read may take.
const READ_LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads partition logs of peers through `RaftService.ReadLog`.
pub struct RemoteLog {
    connector: Arc<dyn Connector>,
    /// A channel per address, kept across the reads of a catch-up (one
    /// per 4 MiB) and dropped after a read that fails, as `Peer` does.
    channels: parking_lot::Mutex<HashMap<String, Channel>>,
}

impl RemoteLog {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self {
            connector,
            channels: parking_lot::Mutex::default(),
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = self
            .connector
            .channel(address)
            .map_err(|e| format!("{address}: {e}"))?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl LogSource for RemoteLog {
    fn read<'a>(
        &'a self,
        address: &'a str,
        group: &'a str,
        offset: i64,
        max_bytes: u32,
    ) -> LogRead<'a> {
        Box::pin(async move {
            let channel = self.channel(address)?;
            let call = peer_request(
                &*self.connector,
                ReadLogRequest {
                    group: group.to_owned(),
                    offset,
                    max_bytes,
                },
                READ_LOG_TIMEOUT,
            );
            let answer = crate::network::raft_client(channel)
                .read_log(call)
                .await
                .map_err(|status| {
                    self.channels.lock().remove(address);
                    format!("reading {group} at {offset} from {address}: {status}")
                })?;
            Ok(answer.into_inner().records)
        })
    }
}

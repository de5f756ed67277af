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

use super::gather::{Gathered, Gatherers};
use super::{append_payload, decode, encode};
use crate::partition::source::{LogRead, LogSource};
use crate::types::{BrokerNode, EntryFormat, LogId, NodeId};

/// Makes the channel to a peer's address.
pub trait Connector: Send + Sync + 'static {
    /// A channel to `address` (`HOST:PORT`), connecting when first used.
    fn channel(&self, address: &str) -> Result<Channel, ConnectError>;

    /// The `authorization` metadata every call to a peer carries, when
    /// the brokers authenticate each other with a token.
    fn authorization(&self) -> Option<AsciiMetadataValue> {
        None
    }

    /// Called after a call over a channel to `address` failed in
    /// transport: a connector that hands out the same channel again
    /// makes a new one next time. (Callers still holding the old channel
    /// keep it until their own calls fail.)
    fn forget(&self, _address: &str) {}

    /// Whether `channel` hands out the same channel to an address until it
    /// is forgotten (rather than a new one each time).
    fn shares_channels(&self) -> bool {
        false
    }

    /// Called, by a connector that shares its channels, when a call to
    /// `address` was given up unanswered at openraft's time limit.
    fn unanswered(&self, _address: &str) {}

    /// Called, by a connector that shares its channels, when a call to
    /// `address` ended otherwise (answered, or failed in transport).
    fn answered(&self, _address: &str) {}

    /// Sends `payload`, an AppendEntries without entries that carries
    /// nothing new (a heartbeat), together with other groups' to the same
    /// peer, when this connector gathers them; hands it back when it does
    /// not (the caller sends it alone). `timeout` bounds the call.
    fn gather(
        &self,
        _address: &str,
        payload: RaftPayload,
        _timeout: Duration,
    ) -> Result<Gathered, RaftPayload> {
        Err(payload)
    }
}

/// What a broker's Raft groups share to reach their peers: one channel
/// (one HTTP/2 connection) to each peer, over the channels `inner` makes,
/// and one task per peer that sends the groups' heartbeats together.
///
/// With a connection per group and peer, each group's AppendEntries went
/// out and came back as its own writes and reads, and a broker with many
/// partitions paid the system calls, wake-ups and keep-alive pings of each.
pub struct SharedChannels {
    channels: Arc<ChannelCache>,
    gatherers: Gatherers,
}

impl SharedChannels {
    pub fn new(inner: Arc<dyn Connector>) -> Self {
        Self {
            channels: Arc::new(ChannelCache {
                inner,
                open: parking_lot::Mutex::default(),
            }),
            gatherers: Gatherers::default(),
        }
    }
}

impl Connector for SharedChannels {
    fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        self.channels.channel(address)
    }

    fn authorization(&self) -> Option<AsciiMetadataValue> {
        self.channels.inner.authorization()
    }

    fn forget(&self, address: &str) {
        self.channels.forget(address);
    }

    fn shares_channels(&self) -> bool {
        true
    }

    fn unanswered(&self, address: &str) {
        self.channels.unanswered(address);
    }

    fn answered(&self, address: &str) {
        self.channels.answered(address);
    }

    fn gather(
        &self,
        address: &str,
        payload: RaftPayload,
        timeout: Duration,
    ) -> Result<Gathered, RaftPayload> {
        Ok(self
            .gatherers
            .call(&self.channels, address, payload, timeout))
    }
}

/// The one channel to each peer.
pub(crate) struct ChannelCache {
    inner: Arc<dyn Connector>,
    open: parking_lot::Mutex<HashMap<String, OpenChannel>>,
}

struct OpenChannel {
    channel: Channel,
    /// Calls over it in a row, by any group, given up unanswered.
    unanswered: u32,
}

impl ChannelCache {
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
        let mut open = self.open.lock();
        if let Some(open) = open.get(address) {
            return Ok(open.channel.clone());
        }
        let channel = self.inner.channel(address)?;
        open.insert(
            address.to_owned(),
            OpenChannel {
                channel: channel.clone(),
                unanswered: 0,
            },
        );
        Ok(channel)
    }

    fn forget(&self, address: &str) {
        self.open.lock().remove(address);
        self.inner.forget(address);
    }

    /// Counts a call given up unanswered, and forgets the channel after
    /// `UNANSWERED_BEFORE_RECONNECT` in a row: counted per peer, not per
    /// group, because openraft makes a new client for every round of votes,
    /// and a group without a leader sends nothing else. A connection whose
    /// peer went away without closing it swallowed every vote, and the group
    /// stayed without a leader for good.
    fn unanswered(&self, address: &str) {
        let stuck = {
            let mut open = self.open.lock();
            let Some(channel) = open.get_mut(address) else {
                return;
            };
            channel.unanswered += 1;
            channel.unanswered >= UNANSWERED_BEFORE_RECONNECT
        };
        if stuck {
            tracing::debug!(peer = %address, "calls in a row went unanswered: connecting again");
            self.forget(address);
        }
    }

    fn answered(&self, address: &str) {
        if let Some(channel) = self.open.lock().get_mut(address) {
            channel.unanswered = 0;
        }
    }

    /// The connector the channels come from (and calls' credentials).
    pub(crate) fn connector(&self) -> &dyn Connector {
        &*self.inner
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
            address: node.address.as_str().into(),
            group: self.group.clone(),
            connector: self.connector.clone(),
            client: None,
            last_commit_sent: None,
            calling: false,
            unanswered: 0,
            format: PhantomData,
        }
    }
}

/// The channel to one peer, for one group.
pub struct Peer<C> {
    target: NodeId,
    address: Arc<str>,
    group: String,
    connector: Arc<dyn Connector>,
    /// Made at the first call, and again after a call that failed in
    /// transport: a connection whose peer restarted can stay open on our
    /// side and swallow every request until it times out. (Not kept for a
    /// connector that shares its channels: taken from it at every call.)
    client: Option<RaftServiceClient<Channel>>,
    /// The `leader_commit` of the last AppendEntries sent: one without
    /// entries that carries the same is a heartbeat, which the connector
    /// may send together with other groups'. (One that moves it goes at
    /// once: the followers apply what it says is committed.)
    last_commit_sent: Option<LogId>,
    /// A call is under way; still set when the next call starts if
    /// openraft dropped it at its time limit. (A connector that shares
    /// its channels counts such calls per peer instead, across groups and
    /// clients.)
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

/// Tells a connector that shares its channels how a call ended: dropped
/// before it ended, it was given up at openraft's time limit.
struct CallWatch {
    connector: Arc<dyn Connector>,
    address: Arc<str>,
    ended: bool,
}

impl Drop for CallWatch {
    fn drop(&mut self) {
        if self.ended {
            self.connector.answered(&self.address);
        } else {
            self.connector.unanswered(&self.address);
        }
    }
}

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
        if self.connector.shares_channels() {
            let mut watch = CallWatch {
                connector: self.connector.clone(),
                address: self.address.clone(),
                ended: false,
            };
            let result = self.call_now(method, payload, option).await;
            watch.ended = true;
            return result;
        }
        if std::mem::replace(&mut self.calling, true) {
            self.unanswered += 1;
            if self.unanswered >= UNANSWERED_BEFORE_RECONNECT {
                self.unanswered = 0;
                self.client = None;
                self.connector.forget(&self.address);
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
                address: self.address.to_string(),
                reason,
            }))
        };
        let timeout = option.hard_ttl() + TRANSPORT_TIMEOUT_MARGIN;
        let payload = match method {
            Method::Heartbeat => self.connector.gather(&self.address, payload, timeout),
            _ => Err(payload),
        };
        let answer = match payload {
            Ok(gathered) => gathered.await,
            Err(payload) => {
                // A connector that shares its channels is asked for the
                // current one at every call, so that once a failed one is
                // forgotten every group moves to the next at once; and it
                // is not kept between calls, so that a forgotten one closes
                // once its calls are over (a group that only sends
                // heartbeats, which are gathered, would hold it for good).
                let shares = self.connector.shares_channels();
                let mut this_call = None;
                if shares || self.client.is_none() {
                    let channel = self
                        .connector
                        .channel(&self.address)
                        .map_err(|e| unreachable(format!("the address is not usable: {e}")))?;
                    let client = crate::network::raft_client(channel);
                    if shares {
                        this_call = Some(client);
                    } else {
                        self.client = Some(client);
                    }
                }
                let Some(client) = this_call.as_mut().or(self.client.as_mut()) else {
                    return Err(unreachable("no channel".to_owned()));
                };
                let call = peer_request(&*self.connector, payload, timeout);
                match method {
                    Method::AppendEntries | Method::Heartbeat => client.append_entries(call).await,
                    Method::Vote => client.vote(call).await,
                    Method::InstallSnapshot => client.install_snapshot(call).await,
                }
                .map(tonic::Response::into_inner)
            }
        };
        let payload = match answer {
            Ok(answer) => answer,
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
                    self.connector.forget(&self.address);
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
    /// An AppendEntries without entries that carries nothing new.
    Heartbeat,
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
        let commit = request.leader_commit;
        // The metadata group's heartbeats go alone: openraft times them,
        // not the partitions' clock, and none of the partitions' answers
        // should hold them up.
        let method = if request.entries.is_empty()
            && self.last_commit_sent == commit
            && !self.group.is_empty()
        {
            Method::Heartbeat
        } else {
            Method::AppendEntries
        };
        self.last_commit_sent = commit;
        self.call(method, payload, &option).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the channels it makes.
    #[derive(Default)]
    struct Counting {
        made: AtomicUsize,
    }

    impl Connector for Counting {
        fn channel(&self, address: &str) -> Result<Channel, ConnectError> {
            self.made.fetch_add(1, Ordering::Relaxed);
            Ok(Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| ConnectError(e.to_string()))?
                .connect_lazy())
        }
    }

    #[tokio::test]
    async fn groups_share_one_channel_per_peer_until_a_call_over_it_fails() {
        let counting = Arc::new(Counting::default());
        let shared = SharedChannels::new(counting.clone());
        for _ in 0..3 {
            shared.channel("127.0.0.1:1").expect("a channel");
            shared.channel("127.0.0.1:2").expect("a channel");
        }
        assert_eq!(counting.made.load(Ordering::Relaxed), 2, "one per peer");
        shared.forget("127.0.0.1:1");
        shared.channel("127.0.0.1:1").expect("a channel");
        shared.channel("127.0.0.1:2").expect("a channel");
        assert_eq!(
            counting.made.load(Ordering::Relaxed),
            3,
            "a new one for the forgotten peer only"
        );
    }

    #[tokio::test]
    async fn a_peer_whose_call_failed_in_transport_forgets_the_channel() {
        let counting = Arc::new(Counting::default());
        let shared: Arc<dyn Connector> = Arc::new(SharedChannels::new(counting.clone()));
        // Nothing listens on port 1: the call fails as unreachable.
        let mut network = Network::<crate::types::MetaRaftConfig>::new(shared, "");
        let mut peer = network
            .new_client(2, &BrokerNode::new("127.0.0.1:1".to_owned()))
            .await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let option = RPCOption::new(Duration::from_secs(1));
        for _ in 0..2 {
            let answer = peer.vote(vote.clone(), option.clone()).await;
            assert!(
                matches!(answer, Err(RPCError::Unreachable(_))),
                "{answer:?}"
            );
        }
        assert_eq!(
            counting.made.load(Ordering::Relaxed),
            2,
            "each failed call left a new channel to be made"
        );
    }

    #[tokio::test]
    async fn votes_given_up_unanswered_by_fresh_clients_forget_the_channel() {
        // A peer that accepts connections and never answers: a connection
        // whose other end is gone without closing it looks the same.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let address = silent.local_addr().expect("its address").to_string();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = silent.accept().await {
                connections.push(connection);
            }
        });
        let counting = Arc::new(Counting::default());
        let shared: Arc<dyn Connector> = Arc::new(SharedChannels::new(counting.clone()));
        let mut network = Network::<crate::types::MetaRaftConfig>::new(shared.clone(), "");
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let option = RPCOption::new(Duration::from_secs(1));
        // openraft makes a new client for every round of votes and drops
        // the call at its time limit.
        for _ in 0..UNANSWERED_BEFORE_RECONNECT {
            let mut peer = network
                .new_client(2, &BrokerNode::new(address.clone()))
                .await;
            let call = peer.vote(vote.clone(), option.clone());
            assert!(
                tokio::time::timeout(Duration::from_millis(50), call)
                    .await
                    .is_err(),
                "the silent peer answered"
            );
        }
        shared.channel(&address).expect("a channel");
        held.abort();
        assert_eq!(
            counting.made.load(Ordering::Relaxed),
            2,
            "the channel that swallowed the votes was replaced"
        );
    }

    #[tokio::test]
    async fn a_forgotten_channel_closes_although_a_peer_called_over_it() {
        use tokio::io::AsyncReadExt as _;
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let address = silent.local_addr().expect("its address").to_string();
        // Reads each connection to its end, and says when the first ends.
        let (closed, first_closed) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(async move {
            let (mut connection, _) = silent.accept().await.expect("a connection");
            let mut buffer = [0u8; 4096];
            while connection
                .read(&mut buffer)
                .await
                .is_ok_and(|read| read > 0)
            {}
            let _ = closed.send(());
        });
        let shared: Arc<dyn Connector> =
            Arc::new(SharedChannels::new(Arc::new(Counting::default())));
        let mut network = Network::<crate::types::MetaRaftConfig>::new(shared.clone(), "");
        let mut peer = network
            .new_client(2, &BrokerNode::new(address.clone()))
            .await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let call = peer.vote(vote, RPCOption::new(Duration::from_secs(1)));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), call)
                .await
                .is_err(),
            "the silent peer answered"
        );
        shared.forget(&address);
        // The peer stays, idle, as a replication stream's does between
        // calls: it must not keep the connection open.
        let outcome = tokio::time::timeout(Duration::from_secs(5), first_closed).await;
        drop(peer);
        reader.abort();
        assert!(
            matches!(outcome, Ok(Ok(()))),
            "the forgotten channel's connection stayed open"
        );
    }

    #[tokio::test]
    async fn an_answer_between_unanswered_calls_keeps_the_channel() {
        let counting = Arc::new(Counting::default());
        let shared = SharedChannels::new(counting.clone());
        let address = "127.0.0.1:1";
        shared.channel(address).expect("a channel");
        for _ in 0..3 {
            for _ in 1..UNANSWERED_BEFORE_RECONNECT {
                shared.unanswered(address);
            }
            shared.answered(address);
        }
        shared.channel(address).expect("a channel");
        assert_eq!(counting.made.load(Ordering::Relaxed), 1);
        for _ in 0..UNANSWERED_BEFORE_RECONNECT {
            shared.unanswered(address);
        }
        shared.channel(address).expect("a channel");
        assert_eq!(counting.made.load(Ordering::Relaxed), 2);
    }
}

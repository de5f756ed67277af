//! Every setting and limit of the broker, in one place, with the defaults
//! `brook serve` runs on.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use brook_record::RecordValidation;
use brook_storage::{LogConfig, LostData, OsStorage, Storage};

use crate::error::Invalid;

/// The default gRPC address of `brook serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9420";
/// The default HTTP address (health and readiness) of `brook serve`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9421";
/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "brook-data";

/// When a produce is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Acknowledge only after the batch is fsynced (group commit shares
    /// fsyncs between concurrent producers). Nothing acknowledged is lost.
    #[default]
    Always,
    /// Acknowledge once written to the OS; fsync every interval. A crash can
    /// lose up to an interval of acknowledged records.
    Interval(Duration),
    /// Acknowledge once written to the OS; never fsync (the OS flushes when
    /// it likes). A crash can lose any amount of acknowledged records.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!(
                            "must be `always`, `never` or `interval:<ms>` with ms > 0, not `{s}`"
                        )
                    })?;
                Ok(Self::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// A partition named as `TOPIC/PARTITION`, as `accept_data_loss` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PartitionName {
    pub topic: String,
    pub partition: u32,
}

impl PartitionName {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl FromStr for PartitionName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (topic, partition) = s
            .rsplit_once('/')
            .filter(|(topic, _)| !topic.is_empty())
            .ok_or_else(|| format!("must be `TOPIC/PARTITION`, not `{s}`"))?;
        let partition = partition
            .parse()
            .map_err(|e| format!("`{s}`: the partition must be a number: {e}"))?;
        Ok(Self::new(topic, partition))
    }
}

impl fmt::Display for PartitionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A topic's effective settings; the broker's `topic_defaults` are what a topic gets unless it overrides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: u32,
    /// How much of a produced batch's records is checked before it is
    /// appended: `Full` decompresses compressed batches to check every
    /// record; `Framing` leaves compressed sections unread (cheaper, but a
    /// compressed batch with malformed records can then be appended).
    pub validate_records: RecordValidation,
}

impl Default for TopicSettings {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            max_message_bytes: 8 * 1024 * 1024,
            validate_records: RecordValidation::Full,
        }
    }
}

/// Bounds on what a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    pub partitions_per_topic_max: u32,
    /// Largest batch any topic may accept; caps `max_message_bytes`.
    pub message_bytes_max: u32,
    /// Largest fetch response.
    pub fetch_bytes_max: u32,
    /// Longest long-poll wait.
    pub fetch_wait_ms_max: u32,
    /// Partitions in one fetch request.
    pub fetch_partitions_max: usize,
    /// Batches in one produce request.
    pub produce_batches_max: usize,
    /// Producer ids the broker remembers: handing out one more forgets
    /// the id used least recently.
    pub producer_ids_max: usize,
    /// Produce requests in flight on one produce stream.
    pub produce_stream_in_flight_max: usize,
    /// Bytes of record batches queued to partitions and not yet
    /// acknowledged, across all producers: beyond it, produces wait.
    pub produce_bytes_in_flight_max: usize,
    /// Concurrent streams per client connection (HTTP/2 streams).
    pub streams_per_connection_max: u32,
    /// Largest gRPC message the broker decodes.
    pub grpc_message_bytes_max: usize,
    /// Open gRPC connections; beyond it new ones are closed as soon as
    /// they are accepted. `None`: half the process's descriptor limit, at
    /// most [`CONNECTIONS_MAX_DEFAULT_CAP`], so the rest is left for the
    /// broker's own files (segments, indexes, metadata).
    pub connections_max: Option<usize>,
    /// Open HTTP (health, readiness, metrics) connections; beyond it new
    /// ones wait to be accepted.
    pub http_connections_max: usize,
    /// Bytes of gRPC messages partly received, across all connections: a
    /// message whose declared length does not fit in what is left is
    /// refused with RESOURCE_EXHAUSTED.
    pub receive_buffer_bytes_max: usize,
    /// Longest time one gRPC message may take to arrive once its length
    /// prefix did; a slower one is refused, so a slow sender cannot hold
    /// its share of `receive_buffer_bytes_max` for long.
    pub message_receive_timeout: Duration,
}

/// The most gRPC connections the broker allows by default, however high
/// the descriptor limit.
pub const CONNECTIONS_MAX_DEFAULT_CAP: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            partitions_per_topic_max: 10_000,
            message_bytes_max: 64 * 1024 * 1024,
            fetch_bytes_max: 64 * 1024 * 1024,
            fetch_wait_ms_max: 60_000,
            fetch_partitions_max: 10_000,
            produce_batches_max: brook_record::protocol::PRODUCE_BATCHES_MAX_DEFAULT,
            producer_ids_max: 100_000,
            produce_stream_in_flight_max: 256,
            produce_bytes_in_flight_max: 512 * 1024 * 1024,
            streams_per_connection_max: 1024,
            grpc_message_bytes_max: brook_record::protocol::GRPC_MESSAGE_BYTES_MAX_DEFAULT,
            connections_max: None,
            http_connections_max: 64,
            receive_buffer_bytes_max: 256 * 1024 * 1024,
            message_receive_timeout: Duration::from_secs(60),
        }
    }
}

/// Consumer group sessions and their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSettings {
    /// Session timeout of a member that asks for none; members are told to
    /// heartbeat every third of their session timeout.
    pub session_timeout: Duration,
    /// Shortest session timeout a member may ask for.
    pub session_timeout_min: Duration,
    /// Longest session timeout a member may ask for.
    pub session_timeout_max: Duration,
    /// Members in one group.
    pub members_max: usize,
    /// Topics one member subscribes to.
    pub topics_per_member_max: usize,
    /// Events (assignments) queued to one member; a member that lets them
    /// pile up to this is removed.
    pub member_queue_max: usize,
    /// How often a group notices partitions added to, or topics deleted
    /// from, its subscriptions.
    pub topology_check_interval: Duration,
    /// How long a group without members keeps its committed offsets after
    /// it was last active (its last commit, or its last member leaving);
    /// `None` keeps them until the group is deleted.
    pub offsets_retention: Option<Duration>,
    /// After the broker starts, how long groups are not expired, so members
    /// that were connected before the restart can come back first.
    pub expiry_grace: Duration,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(10),
            session_timeout_min: Duration::from_millis(100),
            session_timeout_max: Duration::from_secs(300),
            members_max: 1000,
            topics_per_member_max: 1000,
            member_queue_max: 64,
            topology_check_interval: Duration::from_secs(1),
            offsets_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            expiry_grace: Duration::from_secs(300),
        }
    }
}

impl GroupSettings {
    /// Checks the relations between the settings.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.session_timeout_min.is_zero()
            || self.session_timeout_min > self.session_timeout
            || self.session_timeout > self.session_timeout_max
        {
            return Err(Invalid::new(
                "groups.session_timeout",
                format!(
                    "must satisfy 0 < session_timeout_min ({} ms) <= session_timeout ({} ms) <= session_timeout_max ({} ms)",
                    self.session_timeout_min.as_millis(),
                    self.session_timeout.as_millis(),
                    self.session_timeout_max.as_millis()
                ),
            ));
        }
        if self.members_max == 0 || self.topics_per_member_max == 0 {
            return Err(Invalid::new(
                "groups.members_max",
                "members_max and topics_per_member_max must be at least 1",
            ));
        }
        // `Joined` and the first assignment, plus the slot kept for `Removed`.
        if self.member_queue_max < 3 {
            return Err(Invalid::new(
                "groups.member_queue_max",
                format!("must be at least 3, got {}", self.member_queue_max),
            ));
        }
        if self.topology_check_interval.is_zero() {
            return Err(Invalid::new(
                "groups.topology_check_interval",
                "must be longer than 0",
            ));
        }
        Ok(())
    }
}

/// Where topics' metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MetaBackend {
    /// On disk, in `<data_dir>/meta`.
    #[default]
    Disk,
    /// In memory, gone with the process (tests).
    Memory,
}

#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub fsync: FsyncPolicy,
    pub topic_defaults: TopicSettings,
    pub limits: Limits,
    /// How often retention is checked (it is also applied on every roll).
    pub retention_check_interval: Duration,
    /// How long a graceful shutdown waits for in-flight requests and open
    /// streams before it closes them (every partition is fsynced either way).
    pub shutdown_grace: Duration,
    /// Bytes of log between two offset index entries.
    pub index_interval_bytes: u64,
    /// Sealed segments, across all partitions, whose log file stays open
    /// for reads; a read of another one reopens it and closes the least
    /// recently read. Active segments (three files each) are not counted.
    pub open_segments_max: usize,
    /// File system of the log (swap in a fault-injecting one in tests).
    pub storage: Arc<dyn Storage>,
    pub meta: MetaBackend,
    /// Consumer group sessions.
    pub groups: GroupSettings,
    /// Partitions whose missing acknowledged data an operator accepted:
    /// at open, a log that ends before its clean-shutdown mark or recovery
    /// point is cut and served from its end (and a missing partition
    /// directory starts empty) instead of refusing reads and writes.
    pub accept_data_loss: Vec<PartitionName>,
    /// A gRPC connection with no open stream and no request for this long
    /// is closed.
    pub connection_idle_timeout: Duration,
    /// An HTTP connection with no bytes from its client for this long is
    /// closed.
    pub http_idle_timeout: Duration,
    /// Longest time a client may take to send an HTTP request's headers.
    pub http_header_read_timeout: Duration,
    /// TLS on the gRPC port; `None` serves plaintext.
    pub tls: Option<TlsConfig>,
    /// How gRPC clients prove who they are.
    pub auth: Authentication,
    /// Whether requests are checked against ACLs.
    pub authorizer: AuthorizerMode,
    /// Principals that may do everything when ACLs are checked (and take
    /// over any producer id).
    pub super_users: Vec<String>,
    /// The cluster this broker belongs to; `None` runs it alone.
    pub cluster: Option<ClusterConfig>,
}

/// The largest broker id: a broker's producer ids carry its id in their
/// high bits (`PRODUCER_ID_NODE_SHIFT`), so that brokers hand out distinct
/// ids without asking each other.
pub const NODE_ID_MAX: u64 = (1 << 20) - 1;
/// Where a broker's id sits in the producer ids it hands out in a cluster.
pub const PRODUCER_ID_NODE_SHIFT: u32 = 40;

/// A broker's place in a cluster: its id and every voter of the metadata
/// group (itself included), each at its gRPC address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    pub node_id: u64,
    pub peers: std::collections::BTreeMap<u64, String>,
    /// With TLS: the CAs the peers' certificates chain to (the broker
    /// calls them over TLS, presenting its own certificate). `None`: the
    /// client CA of `TlsConfig`.
    pub peer_ca: Option<PathBuf>,
    /// With token authentication: a file holding the bearer token this
    /// broker sends to its peers (its principal must be a super user).
    pub peer_token_file: Option<PathBuf>,
    /// The broker joins a running cluster (added by `AddBroker`) instead of
    /// forming the metadata group with its peers; its peers are then the
    /// brokers it first asks about the cluster.
    pub join: bool,
    /// The brokers that formed the cluster (`None`: every peer). A broker
    /// not among them joins: on its first start (its metadata directory
    /// empty) it asks its peers to add it, and waits until one has.
    pub founders: Option<std::collections::BTreeSet<u64>>,
}

impl ClusterConfig {
    /// Checks that the broker is one of its peers and that every id is
    /// positive.
    pub fn new(
        node_id: u64,
        peers: std::collections::BTreeMap<u64, String>,
    ) -> Result<Self, Invalid> {
        if node_id == 0 || node_id > NODE_ID_MAX {
            return Err(Invalid::new(
                "node_id",
                format!("must be 1 to {NODE_ID_MAX}"),
            ));
        }
        if peers.keys().any(|id| *id == 0 || *id > NODE_ID_MAX) {
            return Err(Invalid::new(
                "peers",
                format!("ids must be 1 to {NODE_ID_MAX}"),
            ));
        }
        if !peers.contains_key(&node_id) {
            return Err(Invalid::new(
                "peers",
                format!("must include this broker, node_id {node_id}"),
            ));
        }
        Ok(Self {
            node_id,
            peers,
            peer_ca: None,
            peer_token_file: None,
            join: false,
            founders: None,
        })
    }

    /// Only `founders` form the cluster; every other broker asks to be
    /// added on its first start (see `founders`). Each must be a peer.
    pub fn with_founders(
        mut self,
        founders: std::collections::BTreeSet<u64>,
    ) -> Result<Self, Invalid> {
        if founders.is_empty() {
            return Err(Invalid::new("founders", "must name at least one broker"));
        }
        if let Some(unknown) = founders.iter().find(|id| !self.peers.contains_key(id)) {
            return Err(Invalid::new(
                "founders",
                format!("broker {unknown} is not in peers"),
            ));
        }
        self.founders = Some(founders);
        Ok(self)
    }

    /// Whether this broker forms the cluster with the other founders
    /// (rather than joining it).
    pub fn forms(&self) -> bool {
        !self.join
            && self
                .founders
                .as_ref()
                .is_none_or(|founders| founders.contains(&self.node_id))
    }

    /// Whether this broker asks its peers to add it: it is not a founder
    /// and was not told to wait for an operator (`join`).
    pub fn asks_to_join(&self) -> bool {
        !self.join && !self.forms()
    }

    /// The voters the founders form the metadata group with.
    pub fn founding_voters(&self) -> std::collections::BTreeMap<u64, String> {
        self.peers
            .iter()
            .filter(|(id, _)| {
                self.founders
                    .as_ref()
                    .is_none_or(|founders| founders.contains(id))
            })
            .map(|(id, address)| (*id, address.clone()))
            .collect()
    }

    /// Joins a running cluster instead of forming one (see `join`).
    #[must_use]
    pub fn joining(mut self, join: bool) -> Self {
        self.join = join;
        self
    }

    /// Verifies the peers' certificates against `ca` (see `peer_ca`).
    #[must_use]
    pub fn with_peer_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.peer_ca = Some(ca.into());
        self
    }

    /// Sends the token in `file` to the peers (see `peer_token_file`).
    #[must_use]
    pub fn with_peer_token_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.peer_token_file = Some(file.into());
        self
    }
}

/// Whether the broker checks requests against its ACLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizerMode {
    /// Every request is allowed (the default).
    #[default]
    None,
    /// Deny by default: a request needs an ACL that allows it (or a
    /// superuser), and no ACL that denies it.
    Acl,
}

impl FromStr for AuthorizerMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "acl" => Ok(Self::Acl),
            other => Err(format!("`{other}` is not an authorizer: use none or acl")),
        }
    }
}

impl fmt::Display for AuthorizerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Acl => "acl",
        })
    }
}

/// TLS for the gRPC port: the broker's certificate and key, and whether
/// clients must present certificates of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM certificate chain, the broker's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to; required
    /// unless `client_auth` is `None`.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes; changed files are
    /// loaded for new connections, and open ones are kept.
    pub reload_interval: Duration,
    /// Serve the HTTP port (`/health`, `/live`, `/ready`, `/metrics`) over
    /// TLS too, with the same certificate; probes and scrapers then need
    /// HTTPS. Client certificates are not asked for there.
    pub http: bool,
    /// What of a client certificate names its principal (with
    /// `Authentication::Mtls`).
    pub client_principal: CertificatePrincipal,
}

impl TlsConfig {
    /// Server TLS from a certificate chain and key, without client
    /// certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth: ClientAuth::None,
            reload_interval: Duration::from_secs(10),
            http: false,
            client_principal: CertificatePrincipal::default(),
        }
    }
}

/// What of a verified client certificate is its principal's name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificatePrincipal {
    /// The subject's common name, else the first DNS subject alternative
    /// name (service certificates often carry only that).
    #[default]
    CommonName,
    /// The first DNS subject alternative name.
    DnsName,
    /// The first URI subject alternative name, such as a SPIFFE id
    /// (`spiffe://cluster.local/ns/shop/sa/orders`).
    Uri,
    /// The whole subject as an RFC 4514 string (`CN=alice,O=Shop`), as
    /// Kafka and most LDAP tools print it.
    Subject,
}

impl std::str::FromStr for CertificatePrincipal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "common-name" => Ok(Self::CommonName),
            "dns-name" => Ok(Self::DnsName),
            "uri" => Ok(Self::Uri),
            "subject" => Ok(Self::Subject),
            other => Err(format!(
                "`{other}` is not a certificate principal: use common-name, dns-name, uri or subject"
            )),
        }
    }
}

impl std::fmt::Display for CertificatePrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CommonName => "common-name",
            Self::DnsName => "dns-name",
            Self::Uri => "uri",
            Self::Subject => "subject",
        })
    }
}

/// Whether clients present certificates (mutual TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients are not asked for certificates.
    #[default]
    None,
    /// A client may present a certificate, which must then chain to
    /// `client_ca`; one without is still served.
    Optional,
    /// Every client must present a certificate chaining to `client_ca`.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!(
                "`{other}` is not a client authentication mode: use none, optional or required"
            )),
        }
    }
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        })
    }
}

/// How gRPC clients of the Brook services authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// Every client is served, unnamed.
    #[default]
    None,
    /// The client certificate names the client, as `TlsConfig::client_principal`
    /// says (by default its subject's common name, else its first DNS
    /// subject alternative name). Needs TLS with `client_auth` `Required`.
    Mtls,
    /// A bearer token in the `authorization` metadata names the client: a
    /// static token from a file, or a JWT checked against a JWKS.
    Token(TokenAuth),
}

impl Authentication {
    /// The mode's name, as the `auth` setting spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mtls => "mtls",
            Self::Token(_) => "token",
        }
    }
}

/// Bearer tokens: static ones stored hashed in a file, JWTs checked
/// against a JWKS, or both (a token shaped like a JWT is checked as one
/// when `jwt` is set). At least one of `file` and `jwt` must be set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenAuth {
    /// Lines `NAME sha256:HEX`: a client's name and the SHA-256 of its token.
    pub file: Option<PathBuf>,
    /// JWTs, such as Kubernetes ServiceAccount tokens.
    pub jwt: Option<JwtAuth>,
    /// How often the token file and the JWKS file are checked for changes;
    /// a changed file applies to the requests that follow.
    pub reload_interval: Duration,
}

impl TokenAuth {
    /// Static tokens from `file`, checked for changes every 10 s.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(file.into()),
            jwt: None,
            reload_interval: Duration::from_secs(10),
        }
    }

    /// JWTs only, their keys checked for changes every 10 s.
    pub fn jwt(jwt: JwtAuth) -> Self {
        Self {
            file: None,
            jwt: Some(jwt),
            reload_interval: Duration::from_secs(10),
        }
    }

    /// Also takes JWTs.
    #[must_use]
    pub fn with_jwt(mut self, jwt: JwtAuth) -> Self {
        self.jwt = Some(jwt);
        self
    }
}

/// JWTs as bearer tokens: signed by a key of a JWKS file, issued by
/// `issuer` for `audience`; the `sub` claim names the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwtAuth {
    /// A JSON Web Key Set (RFC 7517), such as a Kubernetes cluster's
    /// `/openid/v1/jwks`.
    pub jwks_file: PathBuf,
    /// The `iss` claim a token must carry.
    pub issuer: String,
    /// A value the token's `aud` claim (a string or a list) must hold.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl JwtAuth {
    /// Tokens of `issuer` for `audience`, with 30 s of leeway.
    pub fn new(
        jwks_file: impl Into<PathBuf>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            jwks_file: jwks_file.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_JWT_LEEWAY,
        }
    }
}

/// Clock skew allowed on a JWT's `exp` and `nbf` unless configured.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);

impl BrokerConfig {
    /// Checks the topic defaults by the rules of a topic's own settings
    /// (the error names the setting without its `default_` prefix).
    pub fn check_topic_defaults(&self) -> Result<(), Invalid> {
        crate::broker::resolve_topic_settings(
            &self.topic_defaults,
            &crate::meta::TopicOverrides::default(),
            &self.limits,
        )
        .map(|_| ())
    }

    /// What opening does with missing acknowledged data in this partition.
    pub fn lost_data(&self, topic: &str, partition: u32) -> LostData {
        let accepted = self
            .accept_data_loss
            .iter()
            .any(|p| p.topic == topic && p.partition == partition);
        if accepted {
            LostData::Accept
        } else {
            LostData::Refuse
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            http_listen: DEFAULT_HTTP_LISTEN.parse().expect("constant address"),
            fsync: FsyncPolicy::Always,
            topic_defaults: TopicSettings::default(),
            limits: Limits::default(),
            retention_check_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            index_interval_bytes: brook_storage::DEFAULT_INDEX_INTERVAL_BYTES,
            open_segments_max: brook_storage::DEFAULT_OPEN_SEGMENTS_MAX,
            storage: Arc::new(OsStorage),
            meta: MetaBackend::Disk,
            groups: GroupSettings::default(),
            accept_data_loss: Vec::new(),
            connection_idle_timeout: Duration::from_secs(600),
            http_idle_timeout: Duration::from_secs(60),
            http_header_read_timeout: Duration::from_secs(10),
            tls: None,
            auth: Authentication::None,
            authorizer: AuthorizerMode::None,
            super_users: Vec::new(),
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_parse() {
        assert_eq!("a.b/3".parse(), Ok(PartitionName::new("a.b", 3)));
        assert!("t".parse::<PartitionName>().is_err());
        assert!("/1".parse::<PartitionName>().is_err());
        assert!("t/x".parse::<PartitionName>().is_err());
        assert_eq!(PartitionName::new("t", 0).to_string(), "t/0");
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval:50".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(50)))
        );
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        assert_eq!(
            FsyncPolicy::Interval(Duration::from_millis(7)).to_string(),
            "interval:7"
        );
    }
}

//! The settings of `brook serve`, from flags, `BROOK_*` environment
//! variables and a TOML file, in that order of precedence, over the
//! defaults. Every key has all three forms: `shutdown_grace_ms` in the file,
//! `--shutdown-grace-ms` on the command line, `BROOK_SHUTDOWN_GRACE_MS` in
//! the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use brook_broker::config::{
    Authentication, CertificatePrincipal, DEFAULT_DATA_DIR, DEFAULT_HTTP_LISTEN,
    DEFAULT_JWT_LEEWAY, DEFAULT_LISTEN, GroupSettings, JwtAuth, Limits, TokenAuth, TopicSettings,
};
use brook_broker::{
    BrokerConfig, ClientAuth, FsyncPolicy, PartitionName, RecordValidation, TlsConfig,
};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::LogFormat;

mod cluster;

/// Longest clock skew `jwt_leeway_s` may allow: beyond a few minutes an
/// expired token would stay usable long after it ran out.
const JWT_LEEWAY_S_MAX: u64 = 300;

/// Declares the settings once: each becomes an optional flag with its
/// environment variable and an optional key of the file; `merge` lets the
/// first source that sets a key win.
macro_rules! settings {
    ($( $(#[$meta:meta])* $name:ident : $ty:ty = $env:literal, )*) => {
        #[derive(Debug, Default, Clone, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[$meta])*
                #[arg(long, env = $env)]
                pub $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// `self` where it sets a key, else `lower`.
            #[must_use]
            pub fn merge(self, lower: Settings) -> Settings {
                Settings { $( $name: self.$name.or(lower.$name), )* }
            }
        }
    };
}

settings! {
    /// Where topics, segments and metadata are kept [default: ./brook-data].
    data_dir: PathBuf = "BROOK_DATA_DIR",
    /// The gRPC address; port 0 picks a free port [default: 127.0.0.1:9420].
    listen: String = "BROOK_LISTEN",
    /// The HTTP address of /health, /ready and /metrics [default: 127.0.0.1:9421].
    http_listen: String = "BROOK_HTTP_LISTEN",
    /// When a produce is acknowledged: `always` (after fsync), `never`, or
    /// `interval:<ms>`; the last two can lose acknowledged records in a crash [default: always].
    fsync: String = "BROOK_FSYNC",
    /// Log lines as `text` or `json` objects, to stderr [default: text].
    log_format: String = "BROOK_LOG_FORMAT",
    /// Which logs to write, as a RUST_LOG filter such as `info` or
    /// `brook_broker=debug` [default: RUST_LOG, else info].
    log: String = "BROOK_LOG",
    /// How long a shutdown waits for in-flight work and open streams [default: 30000].
    shutdown_grace_ms: u64 = "BROOK_SHUTDOWN_GRACE_MS",
    /// How often retention is applied, besides on every segment roll [default: 60000].
    retention_check_interval_ms: u64 = "BROOK_RETENTION_CHECK_INTERVAL_MS",
    /// Bytes of log between two offset index entries [default: 4096].
    index_interval_bytes: u64 = "BROOK_INDEX_INTERVAL_BYTES",
    /// Sealed segments, across all partitions, whose log file stays open
    /// for reads (one descriptor each); others are reopened when read [default: 256].
    open_segments_max: usize = "BROOK_OPEN_SEGMENTS_MAX",
    /// Topics' retention by time unless they set their own; -1 keeps forever [default: 604800000].
    default_retention_ms: i64 = "BROOK_DEFAULT_RETENTION_MS",
    /// Topics' retention by size per partition; -1 keeps everything [default: -1].
    default_retention_bytes: i64 = "BROOK_DEFAULT_RETENTION_BYTES",
    /// Topics' segment size [default: 268435456].
    default_segment_bytes: u64 = "BROOK_DEFAULT_SEGMENT_BYTES",
    /// Topics' segment age before a roll [default: 604800000].
    default_segment_ms: i64 = "BROOK_DEFAULT_SEGMENT_MS",
    /// Topics' largest record batch [default: 8388608].
    default_max_message_bytes: u32 = "BROOK_DEFAULT_MAX_MESSAGE_BYTES",
    /// How much of produced batches' records topics check: `full`, or
    /// `framing`, which does not decompress compressed batches and can let
    /// one with malformed records in [default: full].
    default_validate_records: String = "BROOK_DEFAULT_VALIDATE_RECORDS",
    /// Most partitions a topic may have [default: 10000].
    max_partitions_per_topic: u32 = "BROOK_MAX_PARTITIONS_PER_TOPIC",
    /// Largest record batch any topic may allow [default: 67108864].
    max_message_bytes: u32 = "BROOK_MAX_MESSAGE_BYTES",
    /// Largest fetch response [default: 67108864].
    max_fetch_bytes: u32 = "BROOK_MAX_FETCH_BYTES",
    /// Longest long-poll wait [default: 60000].
    max_fetch_wait_ms: u32 = "BROOK_MAX_FETCH_WAIT_MS",
    /// Produce requests in flight on one produce stream [default: 256].
    max_produce_stream_in_flight: usize = "BROOK_MAX_PRODUCE_STREAM_IN_FLIGHT",
    /// Bytes of record batches queued and not yet acknowledged, across all
    /// producers; beyond it produces wait [default: 536870912].
    max_produce_bytes_in_flight: usize = "BROOK_MAX_PRODUCE_BYTES_IN_FLIGHT",
    /// Session timeout of a group member that asks for none [default: 10000].
    group_session_timeout_ms: u64 = "BROOK_GROUP_SESSION_TIMEOUT_MS",
    /// Longest session timeout a group member may ask for [default: 300000].
    max_group_session_timeout_ms: u64 = "BROOK_MAX_GROUP_SESSION_TIMEOUT_MS",
    /// Members in one consumer group [default: 1000].
    max_group_members: usize = "BROOK_MAX_GROUP_MEMBERS",
    /// How long a group without members keeps its committed offsets after its
    /// last commit or its last member leaving; -1 keeps them [default: 604800000].
    group_offsets_retention_ms: i64 = "BROOK_GROUP_OFFSETS_RETENTION_MS",
    /// Idempotent producer ids remembered; one more forgets the least
    /// recently used [default: 100000].
    max_producer_ids: usize = "BROOK_MAX_PRODUCER_IDS",
    /// Concurrent gRPC streams per connection [default: 1024].
    max_streams_per_connection: u32 = "BROOK_MAX_STREAMS_PER_CONNECTION",
    /// Largest gRPC message [default: 134217728].
    max_grpc_message_bytes: usize = "BROOK_MAX_GRPC_MESSAGE_BYTES",
    /// A partition, as `TOPIC/PARTITION`, whose missing acknowledged records
    /// the operator accepts: it is cut back to what is on disk and serves
    /// from there instead of refusing reads and writes. Repeatable; in the
    /// environment, comma-separated. Remove it once the broker started
    /// [default: none].
    #[arg(value_name = "TOPIC/PARTITION", value_delimiter = ',')]
    accept_data_loss: Vec<String> = "BROOK_ACCEPT_DATA_LOSS",
    /// PEM certificate chain of the broker: with `tls_key`, the gRPC port
    /// speaks TLS only [default: none, plaintext].
    tls_cert: PathBuf = "BROOK_TLS_CERT",
    /// PEM private key of `tls_cert` [default: none].
    tls_key: PathBuf = "BROOK_TLS_KEY",
    /// PEM bundle of the CAs client certificates must chain to [default: none].
    tls_client_ca: PathBuf = "BROOK_TLS_CLIENT_CA",
    /// Client certificates: none, optional or required (these two need
    /// `tls_client_ca`) [default: none].
    tls_client_auth: String = "BROOK_TLS_CLIENT_AUTH",
    /// How often the TLS files are checked for changes; new connections
    /// get changed ones [default: 10000].
    tls_reload_interval_ms: u64 = "BROOK_TLS_RELOAD_INTERVAL_MS",
    /// Serve the HTTP port over TLS too, with the same certificate (probes
    /// and scrapers then need HTTPS) [default: false].
    tls_http: bool = "BROOK_TLS_HTTP",
    /// How gRPC clients authenticate: none, mtls (the client certificate
    /// names the client, see `mtls_principal`; needs `tls_client_auth =
    /// required`) or token (a bearer token from `token_file`, or a JWT
    /// checked against `jwks_file`) [default: none].
    auth: String = "BROOK_AUTH",
    /// With `auth = mtls`: what of the client certificate is the principal:
    /// common-name (else the first DNS name), dns-name (the first DNS
    /// name), uri (the first URI name, e.g. a SPIFFE id) or subject (the
    /// whole subject, RFC 4514) [default: common-name].
    mtls_principal: String = "BROOK_MTLS_PRINCIPAL",
    /// With `auth = token`: lines `NAME sha256:HEX`, HEX the SHA-256 of
    /// NAME's token; checked for changes every 10 s [default: none].
    token_file: PathBuf = "BROOK_TOKEN_FILE",
    /// With `auth = token`: a JWKS (JSON Web Key Set, e.g. a Kubernetes
    /// cluster's /openid/v1/jwks); bearer tokens shaped like JWTs are checked
    /// against its keys, and their `sub` is the principal. Needs `jwt_issuer`
    /// and `jwt_audience`; checked for changes every 10 s [default: none].
    jwks_file: PathBuf = "BROOK_JWKS_FILE",
    /// With `jwks_file`: the `iss` claim a JWT must carry [default: none].
    jwt_issuer: String = "BROOK_JWT_ISSUER",
    /// With `jwks_file`: a value the JWT's `aud` claim must hold [default: none].
    jwt_audience: String = "BROOK_JWT_AUDIENCE",
    /// With `jwks_file`: clock skew allowed on a JWT's `exp` and `nbf`, in
    /// seconds, at most 300 [default: 30].
    jwt_leeway_s: u64 = "BROOK_JWT_LEEWAY_S",
    /// Open gRPC connections; more are closed as soon as accepted. Must
    /// leave 256 file descriptors for the broker's files [default: half of
    /// the descriptor limit left after HTTP's and 256, at most 10000].
    max_connections: usize = "BROOK_MAX_CONNECTIONS",
    /// A gRPC connection with no open stream and no request for this long
    /// is closed [default: 600000].
    connection_idle_timeout_ms: u64 = "BROOK_CONNECTION_IDLE_TIMEOUT_MS",
    /// Bytes of gRPC messages partly received, across all connections; a
    /// message that does not fit is refused with RESOURCE_EXHAUSTED [default: 268435456].
    max_receive_buffer_bytes: usize = "BROOK_MAX_RECEIVE_BUFFER_BYTES",
    /// Longest time one gRPC message may take to arrive; a slower one is
    /// refused with RESOURCE_EXHAUSTED [default: 60000].
    message_receive_timeout_ms: u64 = "BROOK_MESSAGE_RECEIVE_TIMEOUT_MS",
    /// Open HTTP connections; more wait to be accepted [default: 64].
    max_http_connections: usize = "BROOK_MAX_HTTP_CONNECTIONS",
    /// An HTTP connection that sends nothing for this long is closed [default: 60000].
    http_idle_timeout_ms: u64 = "BROOK_HTTP_IDLE_TIMEOUT_MS",
    /// Longest time to send an HTTP request's headers [default: 10000].
    http_header_read_timeout_ms: u64 = "BROOK_HTTP_HEADER_READ_TIMEOUT_MS",
    /// Whether requests are checked against ACLs: none (everything is
    /// allowed) or acl (deny by default; `brook acl add` grants)
    /// [default: none].
    authorizer: String = "BROOK_AUTHORIZER",
    /// With `authorizer = acl`: principals that may do everything.
    /// Repeatable; in the environment, comma-separated [default: none].
    #[arg(value_name = "PRINCIPAL", value_delimiter = ',')]
    super_users: Vec<String> = "BROOK_SUPER_USERS",
    /// This broker's id in its cluster, with `peers` [default: none, the
    /// broker runs alone].
    node_id: u64 = "BROOK_NODE_ID",
    /// Take this broker's id from the hostname instead of `node_id`: a
    /// StatefulSet pod's name ends in its ordinal, and `brook-2` is broker 3
    /// [default: false].
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    node_id_from_hostname: bool = "BROOK_NODE_ID_FROM_HOSTNAME",
    /// Every broker of the cluster (this one included) as `ID=HOST:PORT`,
    /// each at its gRPC address: the voters of the metadata group.
    /// Repeatable or comma-separated [default: none].
    #[arg(value_name = "ID=HOST:PORT", value_delimiter = ',')]
    peers: Vec<String> = "BROOK_PEERS",
    /// With TLS in a cluster: PEM bundle of the CAs the peers' certificates
    /// chain to (this broker calls them over TLS, presenting `tls_cert`)
    /// [default: `tls_client_ca`].
    peer_ca: PathBuf = "BROOK_PEER_CA",
    /// With `auth = token` in a cluster: a file holding the token this
    /// broker presents to its peers; its principal must be one of
    /// `super_users` [default: none].
    peer_token_file: PathBuf = "BROOK_PEER_TOKEN_FILE",
    /// Join a running cluster instead of forming one with `peers`: the
    /// broker waits until `brook cluster add-broker` adds it [default:
    /// false].
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    join: bool = "BROOK_JOIN",
    /// The ids of the brokers (among `peers`) that form the cluster when it
    /// first starts. Any other broker of `peers` joins it: on its first
    /// start it asks the others to add it (as `brook cluster add-broker`
    /// does). Repeatable or comma-separated [default: every broker in
    /// `peers`].
    #[arg(value_name = "ID", value_delimiter = ',')]
    founders: Vec<u64> = "BROOK_FOUNDERS",
}

/// The settings with every default filled in and every value checked.
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    pub data_dir: PathBuf,
    pub listen: String,
    pub http_listen: String,
    pub fsync: String,
    pub log_format: String,
    pub log: String,
    pub shutdown_grace_ms: u64,
    pub retention_check_interval_ms: u64,
    pub index_interval_bytes: u64,
    pub open_segments_max: usize,
    pub default_retention_ms: i64,
    pub default_retention_bytes: i64,
    pub default_segment_bytes: u64,
    pub default_segment_ms: i64,
    pub default_max_message_bytes: u32,
    pub default_validate_records: String,
    pub max_partitions_per_topic: u32,
    pub max_message_bytes: u32,
    pub max_fetch_bytes: u32,
    pub max_fetch_wait_ms: u32,
    pub max_produce_stream_in_flight: usize,
    pub max_produce_bytes_in_flight: usize,
    pub group_session_timeout_ms: u64,
    pub max_group_session_timeout_ms: u64,
    pub max_group_members: usize,
    pub group_offsets_retention_ms: i64,
    pub max_producer_ids: usize,
    pub max_streams_per_connection: u32,
    pub max_grpc_message_bytes: usize,
    pub accept_data_loss: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_auth: String,
    pub tls_reload_interval_ms: u64,
    pub tls_http: bool,
    pub auth: String,
    pub mtls_principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    pub jwt_leeway_s: u64,
    /// Unset: chosen from the descriptor limit at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    pub connection_idle_timeout_ms: u64,
    pub max_receive_buffer_bytes: usize,
    pub message_receive_timeout_ms: u64,
    pub max_http_connections: usize,
    pub http_idle_timeout_ms: u64,
    pub http_header_read_timeout_ms: u64,
    pub authorizer: String,
    pub super_users: Vec<String>,
    /// With `node_id_from_hostname`, the id the hostname gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    pub peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_token_file: Option<PathBuf>,
    pub join: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub founders: Vec<u64>,
}

/// Reads a settings file; unknown keys and values of the wrong type are
/// errors that name the key.
pub fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses settings, naming the key in any error about a value.
fn parse_file(text: &str) -> anyhow::Result<Settings> {
    let deserializer = toml::Deserializer::parse(text)?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        if key == "." {
            anyhow::Error::new(inner)
        } else {
            anyhow::anyhow!("{key}: {}", inner.message())
        }
    })
}

impl Settings {
    /// Fills in the defaults and checks every value.
    pub fn resolve(self) -> anyhow::Result<Effective> {
        let topic = TopicSettings::default();
        let limits = Limits::default();
        let broker = BrokerConfig::default();
        let groups = broker.groups;
        let node_id = self.node_id_resolved()?;
        let effective = Effective {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            http_listen: self
                .http_listen
                .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned()),
            fsync: self
                .fsync
                .unwrap_or_else(|| FsyncPolicy::Always.to_string()),
            log_format: self.log_format.unwrap_or_else(|| "text".to_owned()),
            log: self
                .log
                .or_else(|| std::env::var("RUST_LOG").ok())
                .unwrap_or_else(|| "info".to_owned()),
            shutdown_grace_ms: self
                .shutdown_grace_ms
                .unwrap_or(millis(broker.shutdown_grace)),
            retention_check_interval_ms: self
                .retention_check_interval_ms
                .unwrap_or(millis(broker.retention_check_interval)),
            index_interval_bytes: self
                .index_interval_bytes
                .unwrap_or(broker.index_interval_bytes),
            open_segments_max: self.open_segments_max.unwrap_or(broker.open_segments_max),
            default_retention_ms: self.default_retention_ms.unwrap_or(topic.retention_ms),
            default_retention_bytes: self
                .default_retention_bytes
                .unwrap_or(topic.retention_bytes),
            default_segment_bytes: self.default_segment_bytes.unwrap_or(topic.segment_bytes),
            default_segment_ms: self.default_segment_ms.unwrap_or(topic.segment_ms),
            default_max_message_bytes: self
                .default_max_message_bytes
                .unwrap_or(topic.max_message_bytes),
            default_validate_records: self
                .default_validate_records
                .unwrap_or_else(|| topic.validate_records.to_string()),
            max_partitions_per_topic: self
                .max_partitions_per_topic
                .unwrap_or(limits.partitions_per_topic_max),
            max_message_bytes: self.max_message_bytes.unwrap_or(limits.message_bytes_max),
            max_fetch_bytes: self.max_fetch_bytes.unwrap_or(limits.fetch_bytes_max),
            max_fetch_wait_ms: self.max_fetch_wait_ms.unwrap_or(limits.fetch_wait_ms_max),
            max_produce_stream_in_flight: self
                .max_produce_stream_in_flight
                .unwrap_or(limits.produce_stream_in_flight_max),
            max_produce_bytes_in_flight: self
                .max_produce_bytes_in_flight
                .unwrap_or(limits.produce_bytes_in_flight_max),
            group_session_timeout_ms: self
                .group_session_timeout_ms
                .unwrap_or(millis(groups.session_timeout)),
            max_group_session_timeout_ms: self
                .max_group_session_timeout_ms
                .unwrap_or(millis(groups.session_timeout_max)),
            max_group_members: self.max_group_members.unwrap_or(groups.members_max),
            group_offsets_retention_ms: self.group_offsets_retention_ms.unwrap_or_else(|| {
                groups.offsets_retention.map_or(-1, |retention| {
                    i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)
                })
            }),
            max_producer_ids: self.max_producer_ids.unwrap_or(limits.producer_ids_max),
            max_streams_per_connection: self
                .max_streams_per_connection
                .unwrap_or(limits.streams_per_connection_max),
            max_grpc_message_bytes: self
                .max_grpc_message_bytes
                .unwrap_or(limits.grpc_message_bytes_max),
            accept_data_loss: self.accept_data_loss.unwrap_or_default(),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            tls_client_auth: self
                .tls_client_auth
                .unwrap_or_else(|| ClientAuth::None.to_string()),
            tls_reload_interval_ms: self.tls_reload_interval_ms.unwrap_or(10_000),
            tls_http: self.tls_http.unwrap_or(false),
            auth: self.auth.unwrap_or_else(|| broker.auth.mode().to_owned()),
            mtls_principal: self
                .mtls_principal
                .unwrap_or_else(|| CertificatePrincipal::default().to_string()),
            token_file: self.token_file,
            jwks_file: self.jwks_file,
            jwt_issuer: self.jwt_issuer,
            jwt_audience: self.jwt_audience,
            jwt_leeway_s: self.jwt_leeway_s.unwrap_or(DEFAULT_JWT_LEEWAY.as_secs()),
            max_connections: self.max_connections.or(limits.connections_max),
            connection_idle_timeout_ms: self
                .connection_idle_timeout_ms
                .unwrap_or(millis(broker.connection_idle_timeout)),
            max_receive_buffer_bytes: self
                .max_receive_buffer_bytes
                .unwrap_or(limits.receive_buffer_bytes_max),
            message_receive_timeout_ms: self
                .message_receive_timeout_ms
                .unwrap_or(millis(limits.message_receive_timeout)),
            max_http_connections: self
                .max_http_connections
                .unwrap_or(limits.http_connections_max),
            http_idle_timeout_ms: self
                .http_idle_timeout_ms
                .unwrap_or(millis(broker.http_idle_timeout)),
            http_header_read_timeout_ms: self
                .http_header_read_timeout_ms
                .unwrap_or(millis(broker.http_header_read_timeout)),
            authorizer: self
                .authorizer
                .unwrap_or_else(|| broker.authorizer.to_string()),
            super_users: self.super_users.unwrap_or_default(),
            node_id,
            peers: self.peers.unwrap_or_default(),
            peer_ca: self.peer_ca,
            peer_token_file: self.peer_token_file,
            join: self.join.unwrap_or(false),
            founders: self.founders.unwrap_or_default(),
        };
        effective.check()?;
        Ok(effective)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Effective {
    fn check(&self) -> anyhow::Result<()> {
        self.fsync_policy()?;
        self.validate_records()?;
        self.log_format()?;
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| anyhow::anyhow!("log: `{}` is not a log filter: {e}", self.log))?;
        positive("shutdown_grace_ms", self.shutdown_grace_ms)?;
        positive(
            "retention_check_interval_ms",
            self.retention_check_interval_ms,
        )?;
        positive("index_interval_bytes", self.index_interval_bytes)?;
        positive("open_segments_max", self.open_segments_max as u64)?;
        positive(
            "max_partitions_per_topic",
            u64::from(self.max_partitions_per_topic),
        )?;
        positive("max_fetch_bytes", u64::from(self.max_fetch_bytes))?;
        positive("max_group_members", self.max_group_members as u64)?;
        positive("max_producer_ids", self.max_producer_ids as u64)?;
        if self.group_offsets_retention_ms < -1 || self.group_offsets_retention_ms == 0 {
            bail!(
                "group_offsets_retention_ms: must be -1 (keep) or at least 1, got {}",
                self.group_offsets_retention_ms
            );
        }
        let session_min = millis(GroupSettings::default().session_timeout_min);
        if !(session_min..=self.max_group_session_timeout_ms)
            .contains(&self.group_session_timeout_ms)
        {
            bail!(
                "group_session_timeout_ms: must be between {session_min} and max_group_session_timeout_ms ({}), got {}",
                self.max_group_session_timeout_ms,
                self.group_session_timeout_ms
            );
        }
        positive(
            "max_produce_bytes_in_flight",
            self.max_produce_bytes_in_flight as u64,
        )?;
        positive(
            "max_produce_stream_in_flight",
            self.max_produce_stream_in_flight as u64,
        )?;
        positive(
            "max_streams_per_connection",
            u64::from(self.max_streams_per_connection),
        )?;
        if let Some(max) = self.max_connections {
            positive("max_connections", max as u64)?;
        }
        positive(
            "connection_idle_timeout_ms",
            self.connection_idle_timeout_ms,
        )?;
        positive(
            "message_receive_timeout_ms",
            self.message_receive_timeout_ms,
        )?;
        positive("max_http_connections", self.max_http_connections as u64)?;
        positive("http_idle_timeout_ms", self.http_idle_timeout_ms)?;
        positive(
            "http_header_read_timeout_ms",
            self.http_header_read_timeout_ms,
        )?;
        if self.max_receive_buffer_bytes < self.max_message_bytes as usize {
            bail!(
                "max_receive_buffer_bytes: must be at least max_message_bytes ({}), got {}",
                self.max_message_bytes,
                self.max_receive_buffer_bytes
            );
        }
        let header = brook_record::HEADER_LEN as u32;
        if self.max_message_bytes < header {
            bail!(
                "max_message_bytes: must be at least {header}, got {}",
                self.max_message_bytes
            );
        }
        // The topic defaults obey the rules of a topic's own settings.
        let config = self.broker_config()?;
        if let Err(e) = config.check_topic_defaults() {
            bail!("default_{}: {}", e.field, e.reason);
        }
        if self.max_grpc_message_bytes < self.max_message_bytes as usize {
            bail!(
                "max_grpc_message_bytes: must be at least max_message_bytes ({}), got {}",
                self.max_message_bytes,
                self.max_grpc_message_bytes
            );
        }
        Ok(())
    }

    pub fn fsync_policy(&self) -> anyhow::Result<FsyncPolicy> {
        self.fsync
            .parse()
            .map_err(|e| anyhow::anyhow!("fsync: {e}"))
    }

    pub fn validate_records(&self) -> anyhow::Result<RecordValidation> {
        self.default_validate_records
            .parse()
            .map_err(|e| anyhow::anyhow!("default_validate_records: {e}"))
    }

    pub fn log_format(&self) -> anyhow::Result<LogFormat> {
        match self.log_format.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("log_format: must be `text` or `json`, not `{other}`"),
        }
    }

    /// The broker's configuration (listen addresses are set once bound).
    pub fn broker_config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::default();
        config.data_dir.clone_from(&self.data_dir);
        config.fsync = self.fsync_policy()?;
        let topics = &mut config.topic_defaults;
        topics.retention_ms = self.default_retention_ms;
        topics.retention_bytes = self.default_retention_bytes;
        topics.segment_bytes = self.default_segment_bytes;
        topics.segment_ms = self.default_segment_ms;
        topics.max_message_bytes = self.default_max_message_bytes;
        topics.validate_records = self.validate_records()?;
        let limits = &mut config.limits;
        limits.partitions_per_topic_max = self.max_partitions_per_topic;
        limits.message_bytes_max = self.max_message_bytes;
        limits.fetch_bytes_max = self.max_fetch_bytes;
        limits.fetch_wait_ms_max = self.max_fetch_wait_ms;
        limits.produce_stream_in_flight_max = self.max_produce_stream_in_flight;
        limits.produce_bytes_in_flight_max = self.max_produce_bytes_in_flight;
        limits.streams_per_connection_max = self.max_streams_per_connection;
        limits.grpc_message_bytes_max = self.max_grpc_message_bytes;
        limits.connections_max = self.max_connections;
        limits.receive_buffer_bytes_max = self.max_receive_buffer_bytes;
        limits.message_receive_timeout = Duration::from_millis(self.message_receive_timeout_ms);
        limits.http_connections_max = self.max_http_connections;
        config.connection_idle_timeout = Duration::from_millis(self.connection_idle_timeout_ms);
        config.http_idle_timeout = Duration::from_millis(self.http_idle_timeout_ms);
        config.http_header_read_timeout = Duration::from_millis(self.http_header_read_timeout_ms);
        config.retention_check_interval = Duration::from_millis(self.retention_check_interval_ms);
        config.shutdown_grace = Duration::from_millis(self.shutdown_grace_ms);
        let groups = &mut config.groups;
        groups.session_timeout = Duration::from_millis(self.group_session_timeout_ms);
        groups.session_timeout_max = Duration::from_millis(self.max_group_session_timeout_ms);
        groups.members_max = self.max_group_members;
        groups.offsets_retention = u64::try_from(self.group_offsets_retention_ms)
            .ok()
            .map(Duration::from_millis);
        config.limits.producer_ids_max = self.max_producer_ids;
        config.index_interval_bytes = self.index_interval_bytes;
        config.accept_data_loss = self.accepted_data_loss()?;
        config.tls = self.tls()?;
        config.auth = self.authentication(config.tls.as_ref())?;
        config.open_segments_max = self.open_segments_max;
        config.authorizer = self
            .authorizer
            .parse()
            .map_err(|e| anyhow::anyhow!("authorizer: {e}"))?;
        if self.super_users.iter().any(|user| user.trim().is_empty()) {
            bail!("super_users: a principal's name must not be empty");
        }
        config.super_users.clone_from(&self.super_users);
        config.cluster = self.cluster()?;
        Ok(config)
    }

    fn accepted_data_loss(&self) -> anyhow::Result<Vec<PartitionName>> {
        self.accept_data_loss
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e| anyhow::anyhow!("accept_data_loss: {e}"))
            })
            .collect()
    }

    /// The gRPC port's TLS: none without a certificate; a certificate
    /// needs its key, and client authentication needs a client CA.
    fn tls(&self) -> anyhow::Result<Option<TlsConfig>> {
        let client_auth: ClientAuth = self
            .tls_client_auth
            .parse()
            .map_err(|e| anyhow::anyhow!("tls_client_auth: {e}"))?;
        positive("tls_reload_interval_ms", self.tls_reload_interval_ms)?;
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                if self.tls_client_ca.is_some() || client_auth != ClientAuth::None || self.tls_http
                {
                    bail!("tls_client_ca, tls_client_auth and tls_http need tls_cert and tls_key");
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => bail!("tls_key: needed with tls_cert"),
            (None, Some(_)) => bail!("tls_cert: needed with tls_key"),
        };
        if client_auth != ClientAuth::None && self.tls_client_ca.is_none() {
            bail!("tls_client_ca: needed with tls_client_auth = {client_auth}");
        }
        let mut tls = TlsConfig::new(cert, key);
        tls.client_ca.clone_from(&self.tls_client_ca);
        tls.client_auth = client_auth;
        tls.reload_interval = Duration::from_millis(self.tls_reload_interval_ms);
        tls.http = self.tls_http;
        tls.client_principal = self.certificate_principal()?;
        Ok(Some(tls))
    }

    fn certificate_principal(&self) -> anyhow::Result<CertificatePrincipal> {
        self.mtls_principal
            .parse()
            .map_err(|e| anyhow::anyhow!("mtls_principal: {e}"))
    }

    /// How clients authenticate: `token` needs a token file, a JWKS file or
    /// both (and only it takes them), a JWKS file its issuer and audience;
    /// `mtls` needs required client certificates (and only it takes a
    /// certificate mapping).
    fn authentication(&self, tls: Option<&TlsConfig>) -> anyhow::Result<Authentication> {
        let auth = match self.auth.as_str() {
            "none" => Authentication::None,
            "mtls" => {
                if tls.map(|tls| tls.client_auth) != Some(ClientAuth::Required) {
                    bail!(
                        "auth: mtls needs tls_cert, tls_key, tls_client_ca and tls_client_auth = required"
                    );
                }
                Authentication::Mtls
            }
            "token" => Authentication::Token(self.token_auth()?),
            other => bail!("auth: must be none, mtls or token, not `{other}`"),
        };
        let token = matches!(auth, Authentication::Token(_));
        for (key, set) in [
            ("token_file", self.token_file.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
        ] {
            if set && !token {
                bail!("{key}: only used with auth = token");
            }
        }
        for (key, set) in [
            ("jwt_issuer", self.jwt_issuer.is_some()),
            ("jwt_audience", self.jwt_audience.is_some()),
        ] {
            if set && self.jwks_file.is_none() {
                bail!("{key}: only used with jwks_file");
            }
        }
        if self.jwt_leeway_s > JWT_LEEWAY_S_MAX {
            bail!(
                "jwt_leeway_s: at most {JWT_LEEWAY_S_MAX} (a longer one lets expired tokens in), got {}",
                self.jwt_leeway_s
            );
        }
        if self.certificate_principal()? != CertificatePrincipal::default()
            && auth != Authentication::Mtls
        {
            bail!("mtls_principal: only used with auth = mtls");
        }
        Ok(auth)
    }

    /// The bearer tokens of `auth = token`.
    fn token_auth(&self) -> anyhow::Result<TokenAuth> {
        let jwt = match &self.jwks_file {
            Some(jwks) => {
                let needed = |key: &str, value: &Option<String>| match value {
                    Some(value) if !value.is_empty() => Ok(value.clone()),
                    _ => Err(anyhow::anyhow!("{key}: needed with jwks_file")),
                };
                let issuer = needed("jwt_issuer", &self.jwt_issuer)?;
                let audience = needed("jwt_audience", &self.jwt_audience)?;
                let mut jwt = JwtAuth::new(jwks, issuer, audience);
                jwt.leeway = Duration::from_secs(self.jwt_leeway_s);
                Some(jwt)
            }
            None => None,
        };
        match (&self.token_file, jwt) {
            (Some(file), jwt) => {
                let tokens = TokenAuth::new(file);
                Ok(match jwt {
                    Some(jwt) => tokens.with_jwt(jwt),
                    None => tokens,
                })
            }
            (None, Some(jwt)) => Ok(TokenAuth::jwt(jwt)),
            (None, None) => {
                bail!("token_file or jwks_file: auth = token needs one of them or both")
            }
        }
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("render the configuration")
    }
}

fn positive(key: &str, value: u64) -> anyhow::Result<()> {
    if value == 0 {
        bail!("{key}: must be at least 1, got 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

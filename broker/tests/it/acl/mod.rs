//! Authorization: with `authorizer = acl`, every Brook call needs an ACL
//! that allows its principal the operation on the resource (or a
//! superuser), and none that denies it; a refused call gets
//! PERMISSION_DENIED naming the operation and the resource, and changes
//! nothing. Principals come from bearer tokens here.

mod operations;
mod patterns;

use crate::common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use brook_broker::config::{Authentication, TokenAuth};
use brook_broker::{AuthorizerMode, BrokerConfig, EmbeddedBroker};
use brook_proto::acl_service_client::AclServiceClient;
use brook_proto::admin_service_client::AdminServiceClient;
use brook_proto::fetch_service_client::FetchServiceClient;
use brook_proto::group_service_client::GroupServiceClient;
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_proto::quota_service_client::QuotaServiceClient;
use brook_proto::{
    AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, CreateAclRequest,
    CreateTopicRequest, DescribeTopicRequest, FetchPartition, FetchRequest, TopicConfig,
    TopicDescription,
};
use common::{WAIT, batch, partition_batch, produce_request, within};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The superuser of every test broker.
const ADMIN: &str = "admin";
const PRINCIPALS: [&str; 4] = [ADMIN, "alice", "bob", "carol"];

fn token_of(principal: &str) -> String {
    format!("{principal}-token-5d0c9a")
}

/// Adds a principal's bearer token to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        request.set_timeout(WAIT);
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// The stubs of every service, calling as one principal.
struct As {
    admin: AdminServiceClient<Authed>,
    produce: ProduceServiceClient<Authed>,
    fetch: FetchServiceClient<Authed>,
    groups: GroupServiceClient<Authed>,
    acls: AclServiceClient<Authed>,
    quotas: QuotaServiceClient<Authed>,
}

impl As {
    async fn connect(broker: &EmbeddedBroker, principal: &str) -> anyhow::Result<Self> {
        let channel = within(
            "connecting",
            Channel::from_shared(broker.endpoint())?
                .connect_timeout(WAIT)
                .connect(),
        )
        .await??;
        let bearer = Bearer(format!("Bearer {}", token_of(principal)).parse()?);
        Ok(Self {
            admin: AdminServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            produce: ProduceServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            fetch: FetchServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            groups: GroupServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            acls: AclServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            quotas: QuotaServiceClient::with_interceptor(channel, bearer),
        })
    }

    async fn create_topic(&mut self, name: &str) -> Result<(), Status> {
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions: 1,
            config: Some(TopicConfig::default()),
            replication_factor: None,
        };
        self.admin.create_topic(request).await.map(|_| ())
    }

    async fn describe(&mut self, name: &str) -> Result<TopicDescription, Status> {
        let request = DescribeTopicRequest {
            name: name.to_owned(),
        };
        let response = self.admin.describe_topic(request).await?.into_inner();
        response
            .topic
            .ok_or_else(|| Status::internal("no topic described"))
    }

    async fn end_offset(&mut self, topic: &str) -> anyhow::Result<i64> {
        let description = self.describe(topic).await?;
        Ok(description
            .partitions
            .first()
            .map_or(-1, |partition| partition.end_offset))
    }

    /// One batch of one record to partition 0; a per-batch error is the
    /// call's.
    async fn produce(&mut self, topic: &str) -> Result<i64, Status> {
        let batch = batch("acl", 1).map_err(|e| Status::internal(e.to_string()))?;
        let request = produce_request(0, vec![partition_batch(topic, 0, batch)]);
        let response = self.produce.produce(request).await?.into_inner();
        match response.results.first() {
            Some(result) => match &result.error {
                Some(error) => Err(Status::new(Code::from(error.code), error.message.clone())),
                None => Ok(result.base_offset),
            },
            None => Err(Status::internal("no batch result")),
        }
    }

    async fn fetch(&mut self, topic: &str) -> Result<usize, Status> {
        let request = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.to_owned(),
                partition: 0,
                offset: 0,
                max_bytes: 0,
            }],
            max_wait_ms: 0,
            max_bytes: 0,
            max_message_bytes: 0,
        };
        let response = self.fetch.fetch(request).await?.into_inner();
        Ok(response
            .partitions
            .first()
            .map_or(0, |partition| partition.records.len()))
    }

    async fn grant(&mut self, acl: AclBinding) -> anyhow::Result<()> {
        within(
            "create acl",
            self.acls.create_acl(CreateAclRequest { acl: Some(acl) }),
        )
        .await??;
        Ok(())
    }
}

/// An ACL allowing `principal` `operation` on the topic or group `name`
/// (`prefix`: every one starting with it), or the cluster.
fn acl(
    principal: &str,
    operation: AclOperation,
    resource_type: AclResourceType,
    name: &str,
) -> AclBinding {
    AclBinding {
        principal: principal.to_owned(),
        operation: operation.into(),
        resource_type: resource_type.into(),
        resource_name: name.to_owned(),
        pattern_type: AclPatternType::Literal.into(),
        permission: AclPermission::Allow.into(),
    }
}

fn prefixed(mut acl: AclBinding) -> AclBinding {
    acl.pattern_type = AclPatternType::Prefix.into();
    acl
}

fn denying(mut acl: AclBinding) -> AclBinding {
    acl.permission = AclPermission::Deny.into();
    acl
}

/// A broker authenticating `PRINCIPALS` by token and authorizing by ACL,
/// with `admin` a superuser; its data in `dir`.
async fn start(dir: &Path) -> anyhow::Result<EmbeddedBroker> {
    let file = dir.join("tokens");
    if !file.exists() {
        let mut text = String::new();
        for principal in PRINCIPALS {
            let digest =
                ring::digest::digest(&ring::digest::SHA256, token_of(principal).as_bytes());
            let _ = write!(text, "{principal} sha256:");
            for byte in digest.as_ref() {
                let _ = write!(text, "{byte:02x}");
            }
            text.push('\n');
        }
        std::fs::write(&file, text)?;
    }
    let mut tokens = TokenAuth::new(&file);
    tokens.reload_interval = Duration::from_secs(1);
    let mut config = BrokerConfig::default();
    config.auth = Authentication::Token(tokens);
    config.authorizer = AuthorizerMode::Acl;
    config.super_users = vec![ADMIN.to_owned()];
    Ok(EmbeddedBroker::builder()
        .config(config)
        .data_dir(dir.join("data"))
        .start()
        .await?)
}

/// `result` is PERMISSION_DENIED, and its message names the operation and
/// the resource.
fn ensure_denied<T: std::fmt::Debug>(
    result: Result<T, Status>,
    operation: &str,
    resource: &str,
) -> anyhow::Result<()> {
    let status = match result {
        Ok(value) => anyhow::bail!("{operation} {resource} was allowed: {value:?}"),
        Err(status) => status,
    };
    ensure!(
        status.code() == Code::PermissionDenied,
        "{operation} {resource}: {status:?}"
    );
    let message = status.message();
    ensure!(
        message.contains(operation) && message.contains(resource),
        "the refusal does not name `{operation}` and `{resource}`: {message}"
    );
    Ok(())
}

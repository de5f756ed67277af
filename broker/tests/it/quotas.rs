//! Client quotas: a principal that produces or fetches flat out is held to
//! its quota (within 10 % over a few seconds), without an error, and its
//! answers say they were held back; a principal without a quota is not
//! slowed; removing the quota lifts it at once; without authentication
//! every request is the principal `anonymous`; setting and removing quotas
//! is audited.

use crate::auth::{CapturedLogs, channel, start_with_tokens, with_token, write_token_file};
use crate::common::{WAIT, partition_batch, produce_request, sized_batch, within};

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use brook_broker::EmbeddedBroker;
use brook_proto::admin_service_client::AdminServiceClient;
use brook_proto::fetch_service_client::FetchServiceClient;
use brook_proto::produce_service_client::ProduceServiceClient;
use brook_proto::quota_service_client::QuotaServiceClient;
use brook_proto::{
    CreateTopicRequest, FetchPartition, FetchRequest, ListQuotasRequest, Quota, RemoveQuotaRequest,
    SetQuotaRequest, SubscribeRequest, TopicConfig,
};
use brook_record::BatchHeader;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ALICE_TOKEN: &str = "alice-quota-token-5e1a";
const BOB_TOKEN: &str = "bob-quota-token-0c7d";
/// 10 MB/s.
const QUOTA: u64 = 10_000_000;
/// How far the measured rate of a throttled principal may be from its quota.
const TOLERANCE: f64 = 0.10;
/// How long a throttled principal runs flat out.
const RUN: Duration = Duration::from_millis(2_500);
/// Bytes of one record value: a 64 KiB batch.
const VALUE_BYTES: usize = 64 * 1024;

/// Sends `authorization: Bearer <token>` with every call, streams included.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authorized = InterceptedService<Channel, Bearer>;

/// The services as one principal calls them.
struct Client {
    admin: AdminServiceClient<Authorized>,
    produce: ProduceServiceClient<Authorized>,
    fetch: FetchServiceClient<Authorized>,
    quotas: QuotaServiceClient<Authorized>,
}

impl Client {
    fn new(channel: &Channel, token: &str) -> anyhow::Result<Self> {
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        Ok(Self {
            admin: AdminServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            produce: ProduceServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            fetch: FetchServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            quotas: QuotaServiceClient::with_interceptor(channel.clone(), bearer),
        })
    }

    async fn set_quota(
        &mut self,
        principal: &str,
        produce: Option<u64>,
        fetch: Option<u64>,
    ) -> Result<(), tonic::Status> {
        let quota = Quota {
            principal: principal.to_owned(),
            default: false,
            produce_bytes_per_second: produce,
            fetch_bytes_per_second: fetch,
        };
        self.quotas
            .set_quota(SetQuotaRequest { quota: Some(quota) })
            .await?;
        Ok(())
    }

    async fn remove_quota(&mut self, principal: &str) -> Result<(), tonic::Status> {
        let request = RemoveQuotaRequest {
            principal: principal.to_owned(),
            default: false,
        };
        self.quotas.remove_quota(request).await?;
        Ok(())
    }
}

/// What a flat-out run measured.
#[derive(Debug, Default)]
struct Run {
    /// Bytes acknowledged (or fetched) within the run.
    bytes: u64,
    /// From the start to the last answer counted.
    elapsed: Duration,
    /// Answers with a `throttle_time_ms` above 0, and the largest.
    throttled: usize,
    throttle_ms_max: u32,
    answers: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64()
    }

    fn answered(&mut self, started: Instant, run: Duration, bytes: usize, throttle_ms: u32) {
        if started.elapsed() <= run {
            self.bytes += bytes as u64;
            self.elapsed = started.elapsed();
        }
        self.answers += 1;
        self.throttled += usize::from(throttle_ms > 0);
        self.throttle_ms_max = self.throttle_ms_max.max(throttle_ms);
    }

    /// Within `TOLERANCE` of the quota.
    fn ensure_at_quota(&self, what: &str) -> anyhow::Result<()> {
        let ratio = self.rate() / QUOTA as f64;
        ensure!(
            (1.0 - TOLERANCE..=1.0 + TOLERANCE).contains(&ratio),
            "{what} ran at {:.0} B/s, {ratio:.3} of its quota: {self:?}",
            self.rate()
        );
        ensure!(
            self.throttled > 0,
            "{what} was never told it was throttled: {self:?}"
        );
        Ok(())
    }

    /// Never held back, and faster than the quota it does not have.
    fn ensure_unthrottled(&self, what: &str) -> anyhow::Result<()> {
        ensure!(self.throttled == 0, "{what} was held back: {self:?}");
        ensure!(
            self.rate() > QUOTA as f64 * (1.0 + 2.0 * TOLERANCE),
            "{what} ran at only {:.0} B/s without a quota: {self:?}",
            self.rate()
        );
        Ok(())
    }
}

/// Produces one 64 KiB batch per request over a produce stream, keeping
/// `window` requests in flight and sending the next as each is
/// acknowledged, for `run` or until `requests_max` were sent; then closes
/// the stream and reads the rest. Any error in an acknowledgement fails.
async fn produce_flat_out(
    client: &mut ProduceServiceClient<Authorized>,
    topic: &str,
    window: usize,
    run: Duration,
    requests_max: u64,
) -> anyhow::Result<Run> {
    let batch = sized_batch(VALUE_BYTES, crate::common::now_ms())?;
    let request = |id: u64| produce_request(id, vec![partition_batch(topic, 0, batch.clone())]);
    let (sender, requests) = mpsc::channel(window);
    for id in 0..window as u64 {
        sender.send(request(id)).await?;
    }
    let started = Instant::now();
    let mut sending = Some(sender);
    let mut next = window as u64;
    let mut acks = within(
        "open the produce stream",
        client.produce_stream(ReceiverStream::new(requests)),
    )
    .await??
    .into_inner();
    let mut measured = Run::default();
    while let Some(ack) = within("an acknowledgement", acks.message()).await?? {
        if let Some(error) = &ack.error {
            bail!("request {} refused: {error:?}", ack.correlation_id);
        }
        if let Some(error) = ack.results.iter().find_map(|r| r.error.as_ref()) {
            bail!("request {} failed: {error:?}", ack.correlation_id);
        }
        measured.answered(started, run, batch.len(), ack.throttle_time_ms);
        if started.elapsed() < run && next < requests_max {
            if let Some(sender) = &sending {
                sender.send(request(next)).await?;
                next += 1;
            }
        } else {
            // Closing the request side: the broker answers what it read, then ends OK.
            sending = None;
        }
    }
    ensure!(
        measured.answers as u64 == next,
        "{} of {next} requests were acknowledged",
        measured.answers
    );
    Ok(measured)
}

/// The offset after the last record of `records` (whole batches).
fn next_offset(records: &Bytes) -> anyhow::Result<Option<i64>> {
    let mut next = None;
    for batch in brook_record::split_batches(records.clone()) {
        next = Some(BatchHeader::parse(&batch?)?.last_offset() + 1);
    }
    Ok(next)
}

/// Fetches the partition from offset 0 as fast as answers come, 1 MiB a
/// fetch, for `run` or to the end of the partition.
async fn fetch_flat_out(
    client: &mut FetchServiceClient<Authorized>,
    topic: &str,
    run: Duration,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut measured = Run::default();
    let mut offset = 0;
    while started.elapsed() < run {
        let request = FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.to_owned(),
                partition: 0,
                offset,
                max_bytes: 0,
            }],
            max_wait_ms: 0,
            max_bytes: 1024 * 1024,
            max_message_bytes: 0,
        };
        let response = within("fetch", client.fetch(request)).await??.into_inner();
        let records = response
            .partitions
            .first()
            .map(|p| p.records.clone())
            .unwrap_or_default();
        measured.answered(started, run, records.len(), response.throttle_time_ms);
        match next_offset(&records)? {
            Some(next) => offset = next,
            None => break,
        }
    }
    Ok(measured)
}

/// Subscribes to the partition from offset 0, 256 KiB a push, and reads
/// pushes for `run`.
async fn subscribe_flat_out(
    client: &mut FetchServiceClient<Authorized>,
    topic: &str,
    run: Duration,
) -> anyhow::Result<Run> {
    let request = SubscribeRequest {
        topic: topic.to_owned(),
        partition: 0,
        offset: 0,
        max_bytes: 256 * 1024,
    };
    let started = Instant::now();
    let mut pushes = within("subscribe", client.subscribe(request))
        .await??
        .into_inner();
    let mut measured = Run::default();
    while started.elapsed() < run {
        let push = within("a push", pushes.message())
            .await??
            .context("the subscription ended")?;
        measured.answered(started, run, push.records.len(), push.throttle_time_ms);
    }
    Ok(measured)
}

async fn start() -> anyhow::Result<(tempfile::TempDir, EmbeddedBroker)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens");
    write_token_file(&file, &[("alice", ALICE_TOKEN), ("bob", BOB_TOKEN)])?;
    let broker = start_with_tokens(&file).await?;
    Ok((dir, broker))
}

async fn create_topic(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let request = CreateTopicRequest {
        name: name.to_owned(),
        partitions: 1,
        config: Some(TopicConfig::default()),
        replication_factor: None,
    };
    within("create topic", client.admin.create_topic(request)).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_over_its_quota_is_held_to_it_and_others_are_not() -> anyhow::Result<()> {
    let (_dir, broker) = start().await?;
    let channel = channel(&broker).await?;
    let mut alice = Client::new(&channel, ALICE_TOKEN)?;
    let mut bob = Client::new(&channel, BOB_TOKEN)?;
    create_topic(&mut alice, "metered").await?;
    alice.set_quota("alice", Some(QUOTA), None).await?;

    let throttled = produce_flat_out(&mut alice.produce, "metered", 32, RUN, u64::MAX).await?;
    throttled.ensure_at_quota("alice's producer")?;
    let free = produce_flat_out(&mut bob.produce, "metered", 32, RUN / 4, u64::MAX).await?;
    free.ensure_unthrottled("bob's producer")?;

    alice.remove_quota("alice").await?;
    let lifted = produce_flat_out(&mut alice.produce, "metered", 32, RUN / 4, u64::MAX).await?;
    lifted.ensure_unthrottled("alice's producer once her quota was removed")?;
    eprintln!(
        "produce: alice {throttled:?} at {:.0} B/s; bob at {:.0} B/s; alice lifted at {:.0} B/s",
        throttled.rate(),
        free.rate(),
        lifted.rate()
    );
    broker.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_over_its_quota_is_held_to_it_and_others_are_not() -> anyhow::Result<()> {
    let (_dir, broker) = start().await?;
    let channel = channel(&broker).await?;
    let mut alice = Client::new(&channel, ALICE_TOKEN)?;
    let mut bob = Client::new(&channel, BOB_TOKEN)?;
    create_topic(&mut bob, "metered").await?;
    // 40 MiB: more than a run at the quota reads.
    produce_flat_out(&mut bob.produce, "metered", 32, WAIT, 640).await?;
    alice.set_quota("alice", None, Some(QUOTA)).await?;

    let throttled = fetch_flat_out(&mut alice.fetch, "metered", RUN).await?;
    throttled.ensure_at_quota("alice's fetches")?;
    let pushed = subscribe_flat_out(&mut alice.fetch, "metered", RUN).await?;
    pushed.ensure_at_quota("alice's subscription")?;
    let free = fetch_flat_out(&mut bob.fetch, "metered", RUN / 4).await?;
    free.ensure_unthrottled("bob's fetches")?;

    alice.remove_quota("alice").await?;
    let lifted = fetch_flat_out(&mut alice.fetch, "metered", RUN / 4).await?;
    lifted.ensure_unthrottled("alice's fetches once her quota was removed")?;
    eprintln!(
        "fetch: alice {throttled:?} at {:.0} B/s; subscribed {pushed:?} at {:.0} B/s; bob at {:.0} B/s; alice lifted at {:.0} B/s",
        throttled.rate(),
        pushed.rate(),
        free.rate(),
        lifted.rate()
    );
    broker.shutdown().await?;
    Ok(())
}

/// Quota changes are checked (a rate of 0 names its field; a quota names
/// exactly one of a principal and the default), listed default first, and
/// every change or refused attempt is one audit line.
#[tokio::test]
async fn quota_changes_are_checked_listed_and_audited() -> anyhow::Result<()> {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let (_dir, broker) = start().await?;
    let channel = channel(&broker).await?;
    let mut alice = Client::new(&channel, ALICE_TOKEN)?;

    let zero = alice.set_quota("bob", Some(0), Some(5)).await.err();
    let zero = zero.context("a rate of 0 was taken")?;
    ensure!(zero.code() == Code::InvalidArgument, "{zero:?}");
    ensure!(
        zero.message().contains("produce_bytes_per_second"),
        "{zero:?}"
    );
    let both = Quota {
        principal: "bob".into(),
        default: true,
        produce_bytes_per_second: Some(1),
        fetch_bytes_per_second: None,
    };
    let both = within(
        "set both",
        alice
            .quotas
            .set_quota(SetQuotaRequest { quota: Some(both) }),
    )
    .await?
    .err()
    .context("a quota naming a principal and the default was taken")?;
    ensure!(both.code() == Code::InvalidArgument, "{both:?}");
    let default = Quota {
        principal: String::new(),
        default: true,
        produce_bytes_per_second: None,
        fetch_bytes_per_second: Some(2_000),
    };
    within(
        "set the default",
        alice.quotas.set_quota(SetQuotaRequest {
            quota: Some(default.clone()),
        }),
    )
    .await??;
    alice.set_quota("bob", Some(1_000), None).await?;
    let listed = within("list", alice.quotas.list_quotas(ListQuotasRequest {}))
        .await??
        .into_inner()
        .quotas;
    ensure!(listed.len() == 2 && listed[0] == default, "{listed:?}");
    ensure!(
        listed[1].principal == "bob" && listed[1].produce_bytes_per_second == Some(1_000),
        "{listed:?}"
    );
    let missing = alice.remove_quota("carol").await.err();
    let missing = missing.context("removing a quota never set succeeded")?;
    ensure!(missing.code() == Code::NotFound, "{missing:?}");
    alice.remove_quota("bob").await?;

    let logged = logs.text();
    let audit: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("brook_broker::audit"))
        .collect();
    let expect = [
        ("set_quota", "quota:principal:bob", "result=InvalidArgument"),
        ("set_quota", "quota:principal:bob", "result=InvalidArgument"),
        ("set_quota", "quota:default", "result=\"ok\""),
        ("set_quota", "quota:principal:bob", "result=\"ok\""),
        ("remove_quota", "quota:principal:carol", "result=NotFound"),
        ("remove_quota", "quota:principal:bob", "result=\"ok\""),
    ];
    ensure!(
        audit.len() == expect.len(),
        "audit lines:\n{}",
        audit.join("\n")
    );
    for (line, (operation, resource, result)) in audit.iter().zip(expect) {
        for needle in [
            "principal=alice",
            &format!("operation=\"{operation}\""),
            &format!("resource=\"{resource}\""),
            result,
        ] {
            ensure!(line.contains(needle), "{needle} not in {line}");
        }
    }
    ensure!(
        audit[3].contains("produce_bytes_per_second=Some(1000)"),
        "{}",
        audit[3]
    );
    ensure!(!logged.contains(ALICE_TOKEN), "a token reached the log");
    broker.shutdown().await?;
    Ok(())
}

/// Without authentication every request is the principal `anonymous`,
/// which a quota can name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_requests_count_as_anonymous() -> anyhow::Result<()> {
    let broker = EmbeddedBroker::start().await?;
    let channel = channel(&broker).await?;
    let mut quotas = QuotaServiceClient::new(channel.clone());
    let quota = Quota {
        principal: "anonymous".into(),
        default: false,
        produce_bytes_per_second: Some(100_000),
        fetch_bytes_per_second: None,
    };
    within(
        "set",
        quotas.set_quota(SetQuotaRequest { quota: Some(quota) }),
    )
    .await??;
    let mut admin = AdminServiceClient::new(channel.clone());
    let request = CreateTopicRequest {
        name: "open".into(),
        partitions: 1,
        config: Some(TopicConfig::default()),
        replication_factor: None,
    };
    within("create topic", admin.create_topic(request)).await??;
    let mut produce = ProduceServiceClient::new(channel.clone());
    // 10 KB of burst, then 200 KB: two seconds' worth.
    let batch = sized_batch(200_000, crate::common::now_ms())?;
    let started = Instant::now();
    let response = within(
        "produce",
        produce.produce(with_token(
            produce_request(1, vec![partition_batch("open", 0, batch)]),
            None,
        )?),
    )
    .await??
    .into_inner();
    let held = started.elapsed();
    ensure!(
        response.results.iter().all(|r| r.error.is_none()),
        "{response:?}"
    );
    ensure!(
        (1_800..=2_100).contains(&response.throttle_time_ms),
        "{response:?}"
    );
    ensure!(
        held >= Duration::from_millis(1_800),
        "answered after {held:?}"
    );
    broker.shutdown().await?;
    Ok(())
}

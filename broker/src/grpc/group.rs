//! `brook.v1.GroupService`: member sessions, fenced commits, group admin.
//!
//! A session's response stream is the member's event queue (bounded,
//! filled by the group under its lock) turned into protobuf; the request
//! side is read by one task per session that ends the member when the
//! stream ends, breaks, breaks the protocol, or the broker stops.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::group_request::Kind;
use brook_proto::group_service_server::GroupService;
use brook_proto::reset_offsets_request::To;
use brook_proto::{
    CommitOffsetsRequest, CommitOffsetsResponse, DeleteGroupRequest, DeleteGroupResponse,
    DescribeGroupRequest, DescribeGroupResponse, FetchOffsetsRequest, FetchOffsetsResponse,
    GroupRequest, GroupResponse, GroupSummary, JoinGroup, ListGroupsRequest, ListGroupsResponse,
    MemberDescription, PartitionLag, PartitionOffset, ResetOffsetsRequest, ResetOffsetsResponse,
    group_response,
};
use futures::{Stream, StreamExt};
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::audit::Audit;
use super::authorize::{Caller, check_topics};
use super::status::{status, to_status};
use crate::replicas::{Replicas, lease_in};
use brook_engine::Broker;
use brook_engine::acl::{Operation, Resource};
use brook_engine::group::{
    JoinSpec, MemberEvent, MemberSession, RemovalReason, ResetTo, TopicPartition,
};
use brook_engine::{GroupError, Invalid, NotFound};

#[derive(Debug)]
pub struct GroupHandler {
    broker: Arc<Broker>,
    /// In a cluster: each broker coordinates the groups of the slots it
    /// was given, and refuses calls for the others naming their
    /// coordinator.
    replicas: Option<Arc<Replicas>>,
}

impl GroupHandler {
    pub fn new(broker: Arc<Broker>, replicas: Option<Arc<Replicas>>) -> Self {
        Self { broker, replicas }
    }

    /// Refuses a call for `group` on a broker of a cluster that does not
    /// coordinate it now (UNAVAILABLE, naming the one that does).
    fn coordinator_here(&self, group: &str) -> Result<(), Status> {
        coordinator_here(self.replicas.as_ref(), group).map(|_| ())
    }
}

/// In a cluster: the epoch under which this broker coordinates `group`,
/// or the refusal naming the broker that does.
fn coordinator_here(replicas: Option<&Arc<Replicas>>, group: &str) -> Result<Option<u64>, Status> {
    let Some(replicas) = replicas else {
        return Ok(None);
    };
    match replicas.lease(group) {
        Some(epoch) => Ok(Some(epoch)),
        None => Err(Status::unavailable(replicas.not_coordinator(group))),
    }
}

/// Resolves once this broker no longer coordinates `group` under `epoch`
/// (never for a broker alone).
async fn coordination_lost(
    replicas: Option<&Arc<Replicas>>,
    group: &str,
    epoch: Option<u64>,
) -> String {
    let Some(replicas) = replicas else {
        return std::future::pending().await;
    };
    let mut coordinating = replicas.coordinating();
    let _ = coordinating
        .wait_for(|held| lease_in(held, group) != epoch)
        .await;
    replicas.not_coordinator(group)
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<GroupResponse, Status>> + Send>>;

fn tp_from_proto(tp: brook_proto::TopicPartition) -> TopicPartition {
    TopicPartition::new(tp.topic, tp.partition)
}

fn tp_to_proto(tp: TopicPartition) -> brook_proto::TopicPartition {
    brook_proto::TopicPartition {
        topic: tp.topic,
        partition: tp.partition,
    }
}

fn offset_to_proto((tp, offset): (TopicPartition, i64)) -> PartitionOffset {
    PartitionOffset {
        topic: tp.topic,
        partition: tp.partition,
        offset,
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Join(_) => "join",
        Kind::Heartbeat(_) => "heartbeat",
        Kind::Revoked(_) => "revoked",
        Kind::Leave(_) => "leave",
    }
}

/// A member event as the session sends it; `None` for a removal that ends
/// the stream normally (leave, stream end).
fn event_to_proto(
    group: &str,
    member_id: &str,
    event: MemberEvent,
) -> Option<Result<GroupResponse, Status>> {
    let kind = match event {
        MemberEvent::Joined {
            member_id,
            generation,
            heartbeat_interval,
            session_timeout,
        } => group_response::Kind::Joined(brook_proto::Joined {
            member_id,
            generation,
            heartbeat_interval_ms: millis(heartbeat_interval),
            session_timeout_ms: millis(session_timeout),
        }),
        MemberEvent::Assignment(a) => group_response::Kind::Assignment(brook_proto::Assignment {
            generation: a.generation,
            assigned: a.assigned.into_iter().map(tp_to_proto).collect(),
            revoke: a.revoke.into_iter().map(tp_to_proto).collect(),
        }),
        MemberEvent::Removed(reason) => {
            return reason.error(group, member_id).map(|e| Err(to_status(&e)));
        }
    };
    Some(Ok(GroupResponse { kind: Some(kind) }))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn join_spec(join: JoinGroup) -> JoinSpec {
    JoinSpec {
        group: join.group,
        topics: join.topics,
        session_timeout: (join.session_timeout_ms > 0)
            .then(|| Duration::from_millis(u64::from(join.session_timeout_ms))),
        client_id: join.client_id,
    }
}

/// Whether the caller may join a group: consume on the group and on each
/// topic it subscribes to.
fn join_permission(caller: &Caller, broker: &Broker, join: &JoinGroup) -> Result<(), Status> {
    if !broker.authorizer().is_enabled() {
        return Ok(());
    }
    caller.check(broker, Operation::Consume, Resource::Group(&join.group))?;
    check_topics(
        caller,
        broker,
        Operation::Consume,
        join.topics.iter().map(String::as_str),
    )
}

/// Waits for the session's first message, which must be `join`.
async fn first_join(
    broker: &Broker,
    inbound: &mut Streaming<GroupRequest>,
) -> Result<Option<JoinGroup>, GroupError> {
    let wait = broker.config().groups.session_timeout;
    let first = tokio::select! {
        first = tokio::time::timeout(wait, inbound.message()) => first,
        () = broker.stopping() => return Err(GroupError::ShuttingDown),
    };
    match first {
        Err(_elapsed) => Err(GroupError::JoinTimeout {
            waited_ms: wait.as_millis() as u64,
        }),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(status)) => Err(Invalid::new(
            "session",
            format!("cannot read the first request: {}", status.message()),
        )
        .into()),
        Ok(Ok(Some(GroupRequest {
            kind: Some(Kind::Join(join)),
        }))) => Ok(Some(join)),
        Ok(Ok(Some(GroupRequest { kind: Some(other) }))) => Err(Invalid::new(
            "session",
            format!(
                "the first message of a group session must be `join`, got `{}`",
                kind_name(&other)
            ),
        )
        .into()),
        Ok(Ok(Some(GroupRequest { kind: None }))) => Err(Invalid::new(
            "session",
            "the first message of a group session must be `join`, got an empty request",
        )
        .into()),
    }
}

/// Reads a member's requests until the member is removed; ends the member
/// when the stream ends, breaks or breaks the protocol, or the broker stops.
async fn serve_member(
    broker: &Broker,
    (replicas, epoch): (Option<&Arc<Replicas>>, Option<u64>),
    session: &MemberSession,
    inbound: &mut Streaming<GroupRequest>,
) {
    let lost = coordination_lost(replicas, session.group(), epoch);
    tokio::pin!(lost);
    loop {
        let message = tokio::select! {
            () = session.removed() => return,
            reason = &mut lost => {
                session.leave(RemovalReason::CoordinatorMoved(reason));
                return;
            }
            () = broker.stopping() => {
                session.leave(RemovalReason::ShuttingDown);
                return;
            }
            message = inbound.message() => message,
        };
        let kind = match message {
            Ok(Some(GroupRequest { kind: Some(kind) })) => kind,
            Ok(Some(GroupRequest { kind: None })) => {
                session.leave(RemovalReason::Protocol(
                    "a request must set one of join, heartbeat, revoked or leave".to_owned(),
                ));
                return;
            }
            Ok(None) => {
                session.leave(RemovalReason::StreamEnded);
                return;
            }
            Err(status) => {
                tracing::debug!(group = session.group(), member_id = session.member_id(), %status, "group session broken");
                session.leave(RemovalReason::Protocol(format!(
                    "cannot read the session's requests: {}",
                    status.message()
                )));
                return;
            }
        };
        let present = match kind {
            Kind::Heartbeat(_) => session.heartbeat(),
            Kind::Revoked(done) => {
                let partitions: Vec<TopicPartition> =
                    done.partitions.into_iter().map(tp_from_proto).collect();
                session.revocation_done(done.generation, &partitions)
            }
            Kind::Leave(_) => {
                session.leave(RemovalReason::Left);
                return;
            }
            Kind::Join(_) => {
                session.leave(RemovalReason::Protocol(
                    "a session joins once; open a new session to join again".to_owned(),
                ));
                return;
            }
        };
        if !present {
            return;
        }
    }
}

#[tonic::async_trait]
impl GroupService for GroupHandler {
    type SessionStream = ResponseStream;

    async fn session(
        &self,
        request: Request<Streaming<GroupRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = Caller::of(&request);
        let mut inbound = request.into_inner();
        let broker = self.broker.clone();
        let replicas = self.replicas.clone();
        // The member's event queue once it joined, or why it could not.
        let (started, start) =
            oneshot::channel::<Result<(String, String, ReceiverStream<MemberEvent>), Status>>();
        let open = self.broker.metrics().open_stream("group");
        tokio::spawn(async move {
            let _open = open;
            let joined = match first_join(&broker, &mut inbound).await {
                Ok(Some(join)) => join_permission(&caller, &broker, &join).and_then(|()| {
                    let epoch = coordinator_here(replicas.as_ref(), &join.group)?;
                    broker
                        .join_group(join_spec(join))
                        .map(|session| (session, epoch))
                        .map_err(|e| to_status(&e))
                }),
                Ok(None) => return,
                Err(e) => Err(to_status(&e)),
            };
            let (mut session, epoch) = match joined {
                Ok(joined) => joined,
                Err(status) => {
                    let _ = started.send(Err(status));
                    return;
                }
            };
            let events = session.take_events().expect("a new session has its events");
            let ids = (session.group().to_owned(), session.member_id().to_owned());
            if started
                .send(Ok((ids.0, ids.1, ReceiverStream::new(events))))
                .is_err()
            {
                return;
            }
            serve_member(&broker, (replicas.as_ref(), epoch), &session, &mut inbound).await;
        });
        let stream = futures::stream::once(start).flat_map(|started| match started {
            Ok(Ok((group, member_id, events))) => events
                .filter_map(move |event| {
                    std::future::ready(event_to_proto(&group, &member_id, event))
                })
                .boxed(),
            Ok(Err(status)) => futures::stream::iter([Err(status)]).boxed(),
            Err(_) => futures::stream::empty().boxed(),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group, member_id = %request.get_ref().member_id))]
    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("CommitOffsets");
        let caller = Caller::of(&request);
        let request = request.into_inner();
        self.coordinator_here(&request.group)?;
        caller.check(
            &self.broker,
            Operation::Commit,
            Resource::Group(&request.group),
        )?;
        let offsets = request
            .offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect();
        self.broker
            .commit_offsets(
                &request.group,
                &request.member_id,
                request.generation,
                offsets,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("FetchOffsets");
        let caller = Caller::of(&request);
        let request = request.into_inner();
        self.coordinator_here(&request.group)?;
        caller.check(
            &self.broker,
            Operation::Describe,
            Resource::Group(&request.group),
        )?;
        let partitions: Vec<TopicPartition> =
            request.partitions.into_iter().map(tp_from_proto).collect();
        let offsets = self
            .broker
            .fetch_offsets(&request.group, &partitions)
            .map_err(status)?;
        Ok(Response::new(FetchOffsetsResponse {
            offsets: offsets.into_iter().map(offset_to_proto).collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ListGroups");
        let caller = Caller::of(&request);
        // In a cluster: the groups this broker coordinates.
        let coordinated = |group: &str| {
            self.replicas
                .as_ref()
                .is_none_or(|replicas| replicas.lease(group).is_some())
        };
        Ok(Response::new(ListGroupsResponse {
            groups: self
                .broker
                .list_groups()
                .into_iter()
                .filter(|g| coordinated(&g.name))
                .filter(|g| caller.may(&self.broker, Operation::Describe, Resource::Group(&g.name)))
                .map(|g| GroupSummary {
                    group: g.name,
                    state: g.state.as_str().to_owned(),
                    members: g.members as u32,
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DescribeGroup");
        let caller = Caller::of(&request);
        let name = request.into_inner().group;
        self.coordinator_here(&name)?;
        caller.check(&self.broker, Operation::Describe, Resource::Group(&name))?;
        brook_engine::group::validate_group_name(&name).map_err(status)?;
        let info = self
            .broker
            .describe_group(&name)
            .ok_or(NotFound::Group(name))
            .map_err(status)?;
        Ok(Response::new(DescribeGroupResponse {
            group: info.name,
            state: info.state.as_str().to_owned(),
            generation: info.generation,
            members: info
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                    assigned: m.assigned.into_iter().map(tp_to_proto).collect(),
                    revoking: m.revoking.into_iter().map(tp_to_proto).collect(),
                })
                .collect(),
            partitions: info
                .partitions
                .into_iter()
                .map(|p| PartitionLag {
                    topic: p.partition.topic,
                    partition: p.partition.partition,
                    committed_offset: p.committed_offset.unwrap_or(-1),
                    end_offset: p.end_offset,
                    lag: p.lag,
                    owner: p.owner.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let _timer = self.broker.metrics().time_request("DeleteGroup");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let group = request.into_inner().group;
        self.coordinator_here(&group)?;
        let result = async {
            caller.check(&self.broker, Operation::Delete, Resource::Group(&group))?;
            self.broker
                .delete_group(&group)
                .await
                .map(|()| Response::new(DeleteGroupResponse {}))
                .map_err(status)
        }
        .await;
        audit.record("delete_group", &format!("group:{group}"), "", &result);
        result
    }

    async fn reset_offsets(
        &self,
        request: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let _timer = self.broker.metrics().time_request("ResetOffsets");
        let audit = Audit::of(&request);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        self.coordinator_here(&request.group)?;
        let details = format!(
            "topic={} partitions={:?} to={:?}",
            request.topic, request.partitions, request.to
        );
        let result = async {
            caller.check(
                &self.broker,
                Operation::Alter,
                Resource::Group(&request.group),
            )?;
            let to = match request.to {
                Some(To::Earliest(_)) => ResetTo::Earliest,
                Some(To::Latest(_)) => ResetTo::Latest,
                Some(To::TimestampMs(ts)) => ResetTo::Timestamp(ts),
                Some(To::Offset(offset)) => ResetTo::Offset(offset),
                None => {
                    return Err(status(Invalid::new(
                        "to",
                        "one of earliest, latest, timestamp_ms or offset must be set",
                    )));
                }
            };
            let offsets = self
                .broker
                .reset_group_offsets(&request.group, &request.topic, &request.partitions, to)
                .await
                .map_err(status)?;
            Ok(Response::new(ResetOffsetsResponse {
                offsets: offsets.into_iter().map(offset_to_proto).collect(),
            }))
        }
        .await;
        audit.record(
            "reset_offsets",
            &format!("group:{}", request.group),
            &details,
            &result,
        );
        result
    }
}

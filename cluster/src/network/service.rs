//! Answering peers' Raft requests: `brook.cluster.v1.RaftService` in front
//! of the local metadata Raft and the partition groups this broker runs.

use brook_proto::cluster::raft_service_server::{RaftService, RaftServiceServer};
use std::sync::Arc;

use brook_proto::cluster::{
    CoordinationRequest, CoordinationResponse, PingRequest, PingResponse, RaftAnswer, RaftAnswers,
    RaftPayload, RaftPayloads, ReadLogRequest, ReadLogResponse,
};
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{append_request, decode, encode};
use crate::command::MetaCommand;
use crate::coordinators::LeaseBoard;
use crate::node::{MembershipChange, MembershipLock, change_members};
use crate::partition::{PartitionGroups, PartitionRaft};
use crate::types::{MetaRaft, NodeId};
use openraft::error::RaftError;

/// The service; the Raft handles are cheap to clone.
#[derive(Clone)]
pub struct RaftServer {
    /// Absent on a server that only carries partition groups (tests).
    meta: Option<MetaRaft>,
    partitions: PartitionGroups,
    /// What this broker coordinates, told to the metadata leader.
    leases: Arc<LeaseBoard>,
    /// The metadata node's: one change of voters at a time.
    membership_lock: MembershipLock,
}

/// The group a request addresses.
enum Group {
    Meta(MetaRaft),
    Partition(PartitionRaft),
}

impl RaftServer {
    /// The gRPC service, taking messages up to [`super::MESSAGE_BYTES_MAX`].
    pub fn into_service(self) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(super::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(super::MESSAGE_BYTES_MAX)
    }

    pub fn new(meta: Option<MetaRaft>, partitions: PartitionGroups) -> Self {
        Self {
            meta,
            partitions,
            leases: Arc::default(),
            membership_lock: MembershipLock::default(),
        }
    }

    /// Makes the changes of voters it takes wait for those of `lock`.
    #[must_use]
    pub fn with_membership_lock(mut self, lock: MembershipLock) -> Self {
        self.membership_lock = lock;
        self
    }

    /// Answers the metadata leader's `Coordination` from `leases`.
    #[must_use]
    pub fn with_leases(mut self, leases: Arc<LeaseBoard>) -> Self {
        self.leases = leases;
        self
    }

    fn group(&self, name: &str) -> Result<Group, Status> {
        if name.is_empty() {
            return self
                .meta
                .clone()
                .map(Group::Meta)
                .ok_or_else(|| Status::not_found("this broker runs no metadata group"));
        }
        self.partitions
            .get(name)
            .map(|replica| Group::Partition(replica.raft().clone()))
            .ok_or_else(|| {
                Status::not_found(format!("group: this broker has no replica of {name}"))
            })
    }

    /// One AppendEntries, to the group it names.
    async fn append_one(&self, payload: RaftPayload) -> Result<Response<RaftPayload>, Status> {
        match self.group(&payload.group)? {
            Group::Meta(raft) => {
                let request = append_request(&payload).map_err(|e| not_a_request(&e))?;
                answer_raft(&raft.append_entries(request).await)
            }
            Group::Partition(raft) => {
                let request = append_request(&payload).map_err(|e| not_a_request(&e))?;
                answer_raft(&raft.append_entries(request).await)
            }
        }
    }

    fn meta(&self) -> Result<&MetaRaft, Status> {
        self.meta
            .as_ref()
            .ok_or_else(|| Status::not_found("this broker runs no metadata group"))
    }
}

fn answer<T: Serialize>(result: &T) -> Result<Response<RaftPayload>, Status> {
    let json = encode(result).map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
    Ok(Response::new(RaftPayload {
        json: json.into(),
        ..RaftPayload::default()
    }))
}

/// openraft's answer for the peer; a Raft that stopped here is not an
/// answer but an unavailable peer, so the sender backs off and connects
/// anew (to this broker's next run).
fn answer_raft<T: Serialize, E: Serialize>(
    result: &Result<T, RaftError<NodeId, E>>,
) -> Result<Response<RaftPayload>, Status> {
    if let Err(RaftError::Fatal(fatal)) = result {
        return Err(Status::unavailable(format!(
            "the group's Raft on this broker stopped: {fatal}"
        )));
    }
    answer(result)
}

fn json<T: serde::de::DeserializeOwned>(payload: &RaftPayload) -> Result<T, Status> {
    decode(&payload.json).map_err(|e| {
        Status::invalid_argument(format!("json: not a Raft request of this release: {e}"))
    })
}

fn not_a_request(e: &str) -> Status {
    Status::invalid_argument(format!("entries: not a Raft request of this release: {e}"))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        call: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.append_one(call.into_inner()).await
    }

    async fn append_entries_batch(
        &self,
        call: Request<RaftPayloads>,
    ) -> Result<Response<RaftAnswers>, Status> {
        let payloads = call.into_inner().payloads;
        // At once: the groups are independent, and each waits on its own
        // Raft.
        let answers =
            futures::future::join_all(payloads.into_iter().map(|payload| self.append_one(payload)))
                .await
                .into_iter()
                .map(|answered| match answered {
                    Ok(payload) => RaftAnswer {
                        code: 0,
                        message: String::new(),
                        payload: Some(payload.into_inner()),
                    },
                    Err(status) => RaftAnswer {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                        payload: None,
                    },
                })
                .collect();
        Ok(Response::new(RaftAnswers { answers }))
    }

    async fn vote(&self, call: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let payload = call.into_inner();
        match self.group(&payload.group)? {
            Group::Meta(raft) => answer_raft(&raft.vote(json(&payload)?).await),
            Group::Partition(raft) => answer_raft(&raft.vote(json(&payload)?).await),
        }
    }

    async fn install_snapshot(
        &self,
        call: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let payload = call.into_inner();
        match self.group(&payload.group)? {
            Group::Meta(raft) => answer_raft(&raft.install_snapshot(json(&payload)?).await),
            Group::Partition(raft) => answer_raft(&raft.install_snapshot(json(&payload)?).await),
        }
    }

    async fn propose(&self, call: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let command: MetaCommand = json(&call.into_inner())?;
        // Only as the leader: a forwarded change is never forwarded again,
        // so two brokers with stale ideas of the leader cannot bounce it.
        let result = self
            .meta()?
            .client_write(command)
            .await
            .map(|written| written.data)
            .map_err(|e| e.to_string());
        answer(&result)
    }

    async fn change_membership(
        &self,
        call: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let change: MembershipChange = json(&call.into_inner())?;
        // Only as the leader, like `propose`.
        let result = change_members(self.meta()?, &self.membership_lock, &change)
            .await
            .map_err(|e| e.to_string());
        answer(&result)
    }

    async fn elect(&self, call: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let group = call.into_inner().group;
        let Group::Partition(raft) = self.group(&group)? else {
            return Err(Status::invalid_argument(
                "group: only a partition group's leadership is handed over",
            ));
        };
        raft.trigger().elect().await.map_err(|e| {
            Status::unavailable(format!("the group's Raft on this broker stopped: {e}"))
        })?;
        Ok(Response::new(RaftPayload::default()))
    }

    async fn ping(&self, _call: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(ping_answer(self.meta()?, &self.partitions)))
    }

    async fn coordination(
        &self,
        call: Request<CoordinationRequest>,
    ) -> Result<Response<CoordinationResponse>, Status> {
        let request = call.into_inner();
        // A leader deposed without knowing it yet is still behind the term
        // this broker has seen, and confirms nothing.
        if request.term >= self.meta()?.metrics().borrow().current_term {
            self.leases
                .confirm(request.term, request.applied, request.answered);
        }
        Ok(Response::new(CoordinationResponse {
            held: self.leases.held().into_iter().collect(),
            answer: self.leases.answer(),
        }))
    }

    async fn read_log(
        &self,
        call: Request<ReadLogRequest>,
    ) -> Result<Response<ReadLogResponse>, Status> {
        let request = call.into_inner();
        let replica = self.partitions.get(&request.group).ok_or_else(|| {
            Status::not_found(format!(
                "group: this broker has no replica of {}",
                request.group
            ))
        })?;
        // From the log start when asked for less: the reader learns that
        // retention removed what it misses (the first batch starts later).
        let log = replica.log();
        let read = log
            .read(
                request.offset.max(log.start_offset()),
                request.max_bytes as usize,
            )
            .map_err(|e| Status::out_of_range(format!("offset: {e}")))?;
        Ok(Response::new(ReadLogResponse {
            records: read.records,
        }))
    }
}

/// What a broker answers a `Ping` with: how it sees the metadata group, and
/// every partition group it holds a replica of.
pub(crate) fn ping_answer(meta: &MetaRaft, partitions: &PartitionGroups) -> PingResponse {
    let metrics = meta.metrics().borrow().clone();
    PingResponse {
        node_id: metrics.id,
        term: metrics.current_term,
        leader: metrics.current_leader,
        high_watermarks: partitions.high_watermarks(),
        partition_leaders: partitions.leaders(),
    }
}

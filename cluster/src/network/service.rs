//! Answering peers' Raft requests: `brook.cluster.v1.RaftService` in front
//! of the local metadata Raft.

use brook_proto::cluster::raft_service_server::RaftService;
use brook_proto::cluster::{PingRequest, PingResponse, RaftPayload};
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{decode, encode};
use crate::command::MetaCommand;
use crate::types::MetaRaft;

/// The service; the Raft handle is cheap to clone.
#[derive(Clone)]
pub struct RaftServer {
    raft: MetaRaft,
}

impl RaftServer {
    pub fn new(raft: MetaRaft) -> Self {
        Self { raft }
    }
}

fn answer<T: Serialize>(result: &T) -> Result<Response<RaftPayload>, Status> {
    let json = encode(result).map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
    Ok(Response::new(RaftPayload { json: json.into() }))
}

fn request<T: serde::de::DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    decode(&request.into_inner().json).map_err(|e| {
        Status::invalid_argument(format!("json: not a Raft request of this release: {e}"))
    })
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        call: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.append_entries(request(call)?).await;
        answer(&result)
    }

    async fn vote(&self, call: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.vote(request(call)?).await;
        answer(&result)
    }

    async fn install_snapshot(
        &self,
        call: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.install_snapshot(request(call)?).await;
        answer(&result)
    }

    async fn propose(&self, call: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let command: MetaCommand = request(call)?;
        // Only as the leader: a forwarded change is never forwarded again,
        // so two brokers with stale ideas of the leader cannot bounce it.
        let result = self
            .raft
            .client_write(command)
            .await
            .map(|written| written.data)
            .map_err(|e| e.to_string());
        answer(&result)
    }

    async fn ping(&self, _call: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        Ok(Response::new(PingResponse {
            node_id: metrics.id,
            term: metrics.current_term,
            leader: metrics.current_leader,
        }))
    }
}

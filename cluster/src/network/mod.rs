//! The Raft groups' messages between brokers, over gRPC
//! (`brook.cluster.v1.RaftService`): [`client`] sends openraft's requests
//! to a peer, [`service`] answers them. Both carry openraft's types as
//! JSON, except AppendEntries' entries, which travel in their group's entry
//! format (a partition's batches as they are).

pub mod client;
pub mod service;

use brook_proto::cluster::RaftPayload;
use openraft::raft::AppendEntriesRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{EntryFormat, LogId, Vote};

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(json)
}

/// AppendEntries without its entries.
#[derive(Debug, Serialize, Deserialize)]
struct AppendHeader {
    vote: Vote,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
}

fn append_payload<C: EntryFormat>(
    group: &str,
    request: &AppendEntriesRequest<C>,
) -> Result<RaftPayload, String> {
    let header = AppendHeader {
        vote: request.vote,
        prev_log_id: request.prev_log_id,
        leader_commit: request.leader_commit,
    };
    let mut entries = Vec::with_capacity(request.entries.len());
    for entry in &request.entries {
        let mut bytes = Vec::new();
        C::encode_entry(entry, &mut bytes).map_err(|e| e.to_string())?;
        entries.push(bytes.into());
    }
    Ok(RaftPayload {
        json: encode(&header).map_err(|e| e.to_string())?.into(),
        group: group.to_owned(),
        entries,
    })
}

fn append_request<C: EntryFormat>(
    payload: &RaftPayload,
) -> Result<AppendEntriesRequest<C>, String> {
    let header: AppendHeader = decode(&payload.json).map_err(|e| e.to_string())?;
    let entries = payload
        .entries
        .iter()
        .map(|bytes| C::decode_entry(bytes).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        entries,
        leader_commit: header.leader_commit,
    })
}

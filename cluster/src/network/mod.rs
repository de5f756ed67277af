//! The Raft groups' messages between brokers, over gRPC
//! (`brook.cluster.v1.RaftService`): [`client`] sends openraft's requests
//! to a peer, [`service`] answers them. Both carry openraft's types as
//! JSON, except AppendEntries' entries, which travel in their group's entry
//! format (a partition's batches as they are). [`gather`] sends the
//! heartbeats of a broker's groups to a peer together.

pub mod client;
mod gather;
pub mod service;

use brook_proto::cluster::RaftPayload;
use brook_proto::cluster::raft_service_client::RaftServiceClient;
use openraft::raft::AppendEntriesRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::types::{EntryFormat, LogId, Vote};

/// The largest message brokers send each other: AppendEntries carries
/// whole entries (a partition's up to about 1 MiB each, and up to
/// `PARTITION_ENTRIES_PER_APPEND` of them).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Entries one AppendEntries of a partition group carries at most: openraft
/// gives an AppendEntries one heartbeat interval to be sent, written and
/// fsynced by the follower, and one that times out holds the follower's
/// replication back for up to 800 ms; 32 entries of up to 1 MiB timed out
/// on a loaded machine and made catch-up crawl.
pub const PARTITION_ENTRIES_PER_APPEND: u64 = 4;

/// A client of a peer's Raft service that takes and sends messages up to
/// [`MESSAGE_BYTES_MAX`].
pub fn raft_client(channel: Channel) -> RaftServiceClient<Channel> {
    RaftServiceClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

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

/// Whether a request's entries follow its `prev_log_id`, as AppendEntries
/// requires. A replication task of a leadership that ended can read log
/// entries that were purged meanwhile and get the ones after them: such a
/// request must not leave the sender, nor be taken by the receiver, or a
/// follower would append entries after the wrong one.
fn entries_follow_prev<C: EntryFormat>(request: &AppendEntriesRequest<C>) -> Result<(), String> {
    let expected = request.prev_log_id.map_or(0, |prev| prev.index + 1);
    match request.entries.first() {
        Some(first) if first.log_id.index != expected => Err(format!(
            "entries start at index {}, not {expected} after prev_log_id",
            first.log_id.index
        )),
        _ => Ok(()),
    }
}

fn append_payload<C: EntryFormat>(
    group: &str,
    request: &AppendEntriesRequest<C>,
) -> Result<RaftPayload, String> {
    entries_follow_prev(request)?;
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
    let request = AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        entries,
        leader_commit: header.leader_commit,
    };
    entries_follow_prev(&request)?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;
    use crate::partition::{PartitionRaftConfig, ProduceCommand};

    fn request(prev: Option<u64>, first: u64) -> AppendEntriesRequest<PartitionRaftConfig> {
        let log_id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: prev.map(log_id),
            entries: (first..first + 2)
                .map(|index| Entry {
                    log_id: log_id(index),
                    payload: EntryPayload::Normal(ProduceCommand {
                        batches: vec![Bytes::from_static(b"batch")],
                        now_ms: 1,
                    }),
                })
                .collect(),
            leader_commit: None,
        }
    }

    #[test]
    fn append_entries_round_trip_with_their_entries_apart() {
        let sent = request(Some(6), 7);
        let payload = append_payload("events/0", &sent).unwrap();
        assert_eq!(payload.group, "events/0");
        assert_eq!(payload.entries.len(), 2);
        let received = append_request::<PartitionRaftConfig>(&payload).unwrap();
        assert_eq!(received.prev_log_id, sent.prev_log_id);
        assert_eq!(received.entries, sent.entries);
        assert!(append_payload("events/0", &request(None, 0)).is_ok());
    }

    #[test]
    fn entries_that_do_not_follow_prev_log_id_are_neither_sent_nor_taken() {
        let gapped = request(Some(6), 9);
        let refused = append_payload("events/0", &gapped).unwrap_err();
        assert!(
            refused.contains("entries start at index 9, not 7"),
            "{refused}"
        );
        // A sender of another release that did send it.
        let mut payload = append_payload("events/0", &request(Some(8), 9)).unwrap();
        payload.json = encode(&AppendHeader {
            vote: gapped.vote,
            prev_log_id: gapped.prev_log_id,
            leader_commit: None,
        })
        .unwrap()
        .into();
        assert!(append_request::<PartitionRaftConfig>(&payload).is_err());
    }
}

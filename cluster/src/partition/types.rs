//! The openraft types of a partition group: an entry is a produce of
//! record batches, and what applying it answers is where each batch went.

use std::io::{self, Cursor};

use bytes::Bytes;
use openraft::{Entry, EntryPayload};
use serde::{Deserialize, Serialize};

use crate::types::{BrokerNode, EntryFormat, LogId, Membership, NodeId};

/// Batches the leader proposes together, in the order they are appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceCommand {
    /// Validated record batches, as producers sent them.
    pub batches: Vec<Bytes>,
    /// The leader's clock when it proposed them: every replica appends with
    /// this time, so segments roll and records are stamped alike.
    pub now_ms: i64,
}

/// What became of one batch, decided by applying the entry: the same on
/// every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppliedBatch {
    /// Appended at this base offset.
    Appended { base_offset: i64 },
    /// An idempotent producer's retry of a batch appended at this offset.
    Duplicate { base_offset: i64 },
    /// Refused by its producer's sequence.
    Sequence(brook_storage::SequenceError),
    /// Not appended for another reason: a header that does not parse (the
    /// leader validated it, so never in practice), or, applied again after
    /// a restart, a batch that was not appended the first time.
    Refused { reason: String },
}

/// The answer to a produce entry; empty for blank and membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceApplied {
    pub batches: Vec<AppliedBatch>,
}

openraft::declare_raft_types!(
    /// A partition group's Raft: entries are [`ProduceCommand`]s.
    pub PartitionRaftConfig:
        D = ProduceCommand,
        R = ProduceApplied,
        NodeId = NodeId,
        Node = BrokerNode,
        Entry = openraft::Entry<PartitionRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type PartitionRaft = openraft::Raft<PartitionRaftConfig>;
pub type PartitionEntry = openraft::Entry<PartitionRaftConfig>;

const BLANK: u8 = 0;
const PRODUCE: u8 = 1;
const MEMBERSHIP: u8 = 2;

/// An entry's bytes: a kind, the log id (JSON, short), then for a produce
/// the leader's clock and each batch behind its length; for a membership
/// change its JSON. Batches are written as they are, not as JSON.
impl EntryFormat for PartitionRaftConfig {
    fn encode_entry(entry: &PartitionEntry, out: &mut Vec<u8>) -> io::Result<()> {
        let kind = match &entry.payload {
            EntryPayload::Blank => BLANK,
            EntryPayload::Normal(_) => PRODUCE,
            EntryPayload::Membership(_) => MEMBERSHIP,
        };
        out.push(kind);
        let log_id = serde_json::to_vec(&entry.log_id).map_err(io::Error::other)?;
        put_length(out, log_id.len())?;
        out.extend_from_slice(&log_id);
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(command) => {
                out.extend_from_slice(&command.now_ms.to_le_bytes());
                put_length(out, command.batches.len())?;
                for batch in &command.batches {
                    put_length(out, batch.len())?;
                    out.extend_from_slice(batch);
                }
            }
            EntryPayload::Membership(membership) => {
                serde_json::to_writer(out, membership).map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    fn decode_entry(bytes: &[u8]) -> io::Result<PartitionEntry> {
        let mut reader = Reader(bytes);
        let kind = reader.take::<1>()?[0];
        let log_id_length = reader.length()?;
        let log_id: LogId = serde_json::from_slice(reader.bytes(log_id_length)?)
            .map_err(|e| invalid(format!("log id: {e}")))?;
        let payload = match kind {
            BLANK => EntryPayload::Blank,
            PRODUCE => {
                let now_ms = i64::from_le_bytes(reader.take::<8>()?);
                let count = reader.length()?;
                // Each batch takes at least its length field: a damaged
                // count cannot make us reserve more than the bytes allow.
                let mut batches = Vec::with_capacity(count.min(reader.0.len() / 4));
                for _ in 0..count {
                    let length = reader.length()?;
                    batches.push(Bytes::copy_from_slice(reader.bytes(length)?));
                }
                EntryPayload::Normal(ProduceCommand { batches, now_ms })
            }
            MEMBERSHIP => {
                let membership: Membership = serde_json::from_slice(reader.0)
                    .map_err(|e| invalid(format!("membership: {e}")))?;
                reader.0 = &[];
                EntryPayload::Membership(membership)
            }
            other => return Err(invalid(format!("unknown entry kind {other}"))),
        };
        if !reader.0.is_empty() {
            return Err(invalid(format!("{} bytes after the entry", reader.0.len())));
        }
        Ok(Entry { log_id, payload })
    }
}

fn put_length(out: &mut Vec<u8>, length: usize) -> io::Result<()> {
    let length = u32::try_from(length)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "over 4 GiB in one field"))?;
    out.extend_from_slice(&length.to_le_bytes());
    Ok(())
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Takes fields off the front of an entry's bytes, failing (never
/// panicking) when they run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let (field, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| invalid(format!("entry cut short: {N} bytes wanted")))?;
        self.0 = rest;
        Ok(*field)
    }

    fn length(&mut self) -> io::Result<usize> {
        Ok(u32::from_le_bytes(self.take::<4>()?) as usize)
    }

    fn bytes(&mut self, length: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < length {
            return Err(invalid(format!(
                "entry cut short: {length} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (field, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(field)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::CommittedLeaderId;
    use proptest::prelude::*;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn round_trip(entry: &PartitionEntry) -> PartitionEntry {
        let mut bytes = Vec::new();
        PartitionRaftConfig::encode_entry(entry, &mut bytes).unwrap();
        PartitionRaftConfig::decode_entry(&bytes).unwrap()
    }

    proptest! {
        #[test]
        fn produce_entries_come_back_as_written(
            term in 0u64..1000,
            index in 0u64..u64::MAX,
            now_ms in any::<i64>(),
            batches in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
        ) {
            let entry = Entry {
                log_id: log_id(term, index),
                payload: EntryPayload::Normal(ProduceCommand {
                    batches: batches.into_iter().map(Bytes::from).collect(),
                    now_ms,
                }),
            };
            prop_assert_eq!(round_trip(&entry), entry);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = PartitionRaftConfig::decode_entry(&bytes);
        }

        #[test]
        fn a_cut_entry_is_refused(cut in 1usize..40) {
            let entry = Entry {
                log_id: log_id(3, 9),
                payload: EntryPayload::Normal(ProduceCommand {
                    batches: vec![Bytes::from_static(b"0123456789")],
                    now_ms: 5,
                }),
            };
            let mut bytes = Vec::new();
            PartitionRaftConfig::encode_entry(&entry, &mut bytes).unwrap();
            let cut = cut.min(bytes.len());
            prop_assert!(PartitionRaftConfig::decode_entry(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    #[test]
    fn blank_and_membership_entries_come_back_as_written() {
        let blank = Entry {
            log_id: log_id(2, 1),
            payload: EntryPayload::Blank,
        };
        assert_eq!(round_trip(&blank), blank);
        let members = [(1, BrokerNode::new("a:1")), (2, BrokerNode::new("b:2"))];
        let membership = Entry {
            log_id: log_id(2, 2),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2])],
                members
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
        };
        assert_eq!(round_trip(&membership), membership);
    }
}

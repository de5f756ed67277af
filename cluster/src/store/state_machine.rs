//! The metadata group's state machine: the [`ClusterState`] the committed
//! commands build, and its snapshot.
//!
//! The state lives in memory; a snapshot (the state as JSON, with the log
//! id it reflects) is written atomically to `snapshot` whenever openraft
//! builds or installs one. A restarted broker starts from its snapshot and
//! openraft applies the log entries after it again, so applying need not
//! be durable by itself.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::files::{read_json, replace_json};
use super::snapshot_meta;
use crate::command::MetaResponse;
use crate::state::ClusterState;
use crate::types::{
    LogId, MetaEntry, MetaRaftConfig, SnapshotMeta, StorageError, StoredMembership,
};

const SNAPSHOT: &str = "snapshot";

/// The state machine; clones share it (the snapshot builder is a clone).
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<RwLock<Applied>>,
    /// The last log id the snapshot on disk covers. Held while a snapshot
    /// is written: one built from an older state (openraft builds in a
    /// task of its own) must not replace one installed meanwhile.
    durable: Arc<Mutex<Option<LogId>>>,
    dir: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(clippy::struct_field_names)] // `last_applied` is openraft's word
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The JSON of the state.
    data: Vec<u8>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, at its last snapshot if any.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stored = read_json::<StoredSnapshot>(dir, SNAPSHOT)?;
        let durable = stored.as_ref().and_then(|s| s.meta.last_log_id);
        let applied = match stored {
            Some(snapshot) => Applied {
                last_applied: snapshot.meta.last_log_id,
                membership: snapshot.meta.last_membership.clone(),
                state: serde_json::from_slice(&snapshot.data)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            },
            None => Applied::default(),
        };
        Ok(Self {
            inner: Arc::new(RwLock::new(applied)),
            durable: Arc::new(Mutex::new(durable)),
            dir: dir.to_owned(),
        })
    }

    /// The state as applied so far (not necessarily all that is committed).
    pub fn state(&self) -> ClusterState {
        self.inner.read().state.clone()
    }

    /// What `read` makes of the state, without copying it.
    pub fn read_state<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> T {
        read(&self.inner.read().state)
    }

    /// The log id of the last command applied.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.read().last_applied
    }

    /// The last log id the snapshot on disk covers: the log is never
    /// purged beyond it.
    pub fn durable_applied(&self) -> Option<LogId> {
        *self.durable.lock()
    }

    fn current_snapshot(&self) -> io::Result<Option<StoredSnapshot>> {
        read_json(&self.dir, SNAPSHOT)
    }
}

impl RaftSnapshotBuilder<MetaRaftConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaRaftConfig>, StorageError> {
        let (meta, data) = {
            let applied = self.inner.read();
            let data = serde_json::to_vec(&applied.state)
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
            let meta = snapshot_meta(applied.last_applied, &applied.membership);
            (meta, data)
        };
        let mut durable = self.durable.lock();
        if *durable > meta.last_log_id {
            // A later snapshot was installed meanwhile: it stands.
            let stored = self
                .current_snapshot()
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?
                .ok_or_else(|| {
                    StorageIOError::read_snapshot(None, &io::Error::other("the snapshot is gone"))
                })?;
            return Ok(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(Cursor::new(stored.data)),
            });
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        replace_json(&self.dir, SNAPSHOT, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *durable = meta.last_log_id;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MetaRaftConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.inner.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError>
    where
        I: IntoIterator<Item = MetaEntry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut applied = self.inner.write();
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetaResponse::Done,
                EntryPayload::Normal(command) => applied.state.apply(&command),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    MetaResponse::Done
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let mut durable = self.durable.lock();
        replace_json(&self.dir, SNAPSHOT, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *durable = meta.last_log_id;
        *self.inner.write() = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MetaRaftConfig>>, StorageError> {
        let stored = self
            .current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

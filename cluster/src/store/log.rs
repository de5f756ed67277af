//! A Raft group's log on disk: append-only chunk files of framed entries,
//! and small files for the vote, the committed log id and the purge point,
//! each replaced atomically. The metadata group and every partition group
//! use it; an [`EntryFormat`] says how a group's entries are written.
//!
//! An append is acknowledged to openraft (`LogFlushed`) only after an
//! `fdatasync` (by a flusher thread, so that appends arriving during one
//! fsync share the next), and the vote is fsynced before `save_vote`
//! returns: what a broker promised survives a power loss. The committed
//! log id is written unsynced (it is a hint; see `save_committed`). A torn
//! last entry (a crash during an append, never acknowledged) is cut off at
//! open. Only where each entry lies is kept in memory; entries are read
//! back from the files (the page cache, for the recent ones replication
//! reads).
//!
//! The entries go into chunks of about `CHUNK_BYTES`: `log`, then `log.1`,
//! `log.2`, and so on, the last one taking appends. A purge deletes the
//! chunks that hold only purged entries; nothing is ever copied. (One file
//! rewritten without its purged entries copied every entry kept behind a
//! snapshot, tens of megabytes under load, while appends waited: a stall
//! of a fifth of a second every few snapshots.)
//!
//! A purged chunk is kept as a spare (`spare.<n>`, up to `SPARES_MAX`) and
//! taken as the next new chunk: appends then overwrite blocks the file
//! already has, so an `fdatasync` writes the data alone, not the file's
//! size and block map as well, and the pages are ones the page cache
//! already holds. A chunk begins with a header naming its number, and each
//! of its entries' CRCs covers that number: what an earlier use of a
//! recycled file left after the last entry is never taken for entries. (A
//! chunk without a header, as written before, is read as it was.)

use std::collections::{BTreeMap, btree_map};
use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Read};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogId, RaftLogReader, StorageIOError};
use parking_lot::Mutex;

use super::files::{
    FRAME_LEN, Records, open_positioned, read_json, read_records, replace_json,
    replace_json_unsynced, seal_frame, sync_dir,
};
use crate::types::{EntryFormat, LogId, StorageError, Vote};

/// The first chunk's name, and the prefix of the others' (`log.<n>`).
const LOG: &str = "log";
/// Chunk size after which appends go to a new chunk.
const CHUNK_BYTES: u64 = 16 * 1024 * 1024;
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
/// How often the committed mark is written at most.
const COMMITTED_SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
const PURGED: &str = "purged";
/// The prefix of a spare's name (`spare.<n>`, n its number as a chunk).
const SPARE: &str = "spare";
/// Purged chunks kept to be taken as new ones: up to 64 MiB per log.
const SPARES_MAX: usize = 4;
/// What a chunk begins with, followed by its number (little-endian).
const CHUNK_MAGIC: [u8; 8] = *b"BRKRLOG1";
const CHUNK_HEADER_LEN: u64 = 16;

/// The header of chunk `number`.
fn chunk_header(number: u64) -> [u8; CHUNK_HEADER_LEN as usize] {
    let mut header = [0; CHUNK_HEADER_LEN as usize];
    header[..8].copy_from_slice(&CHUNK_MAGIC);
    header[8..].copy_from_slice(&number.to_le_bytes());
    header
}

/// The number a chunk's header names, if `bytes` begin with one. (A chunk
/// without one begins with an entry's frame, whose length field could not
/// hold the magic's first four bytes: over 1 GiB.)
fn header_number(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..CHUNK_HEADER_LEN as usize)?;
    if header[..8] != CHUNK_MAGIC {
        return None;
    }
    let mut number = [0; 8];
    number.copy_from_slice(&header[8..]);
    Some(u64::from_le_bytes(number))
}

fn spare_name(number: u64) -> String {
    format!("{SPARE}.{number}")
}

fn spare_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SPARE)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of chunk `number`.
fn chunk_name(number: u64) -> String {
    if number == 0 {
        LOG.to_owned()
    } else {
        format!("{LOG}.{number}")
    }
}

/// The number of the chunk a file name names, if it names one.
fn chunk_number(name: &str) -> Option<u64> {
    if name == LOG {
        return Some(0);
    }
    let digits = name.strip_prefix(LOG)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log store of a group whose entries are `C::Entry`; clones share it
/// (openraft's reader is a clone).
pub struct LogStore<C: EntryFormat> {
    inner: Arc<Mutex<LogFile>>,
    /// How far the state machine's durable snapshot reaches: the log is
    /// never purged beyond it.
    purge_limit: Option<PurgeLimit>,
    /// Appends written and waiting for their fsync.
    flushes: mpsc::Sender<Flush<C>>,
    format: std::marker::PhantomData<fn() -> C>,
}

/// An append written to `file` whose `callback` tells openraft once it is
/// synced.
struct Flush<C: EntryFormat> {
    file: Arc<File>,
    callback: LogFlushed<C>,
}

/// Syncs appends in the order they were written, each fsync covering every
/// append written before it started: appends that arrive while one fsync
/// runs share the next (group commit). Runs until every clone of the store
/// is gone. After a failed fsync it fails every later append: what the
/// file holds is no longer known.
fn flush<C: EntryFormat>(flushes: &mpsc::Receiver<Flush<C>>) {
    let mut failed: Option<(io::ErrorKind, String)> = None;
    while let Ok(first) = flushes.recv() {
        let mut round = vec![first];
        round.extend(flushes.try_iter());
        let mut synced: Vec<Arc<File>> = Vec::new();
        for flush in &round {
            if failed.is_some() || synced.iter().any(|f| Arc::ptr_eq(f, &flush.file)) {
                continue;
            }
            match flush.file.sync_data() {
                Ok(()) => synced.push(flush.file.clone()),
                Err(e) => {
                    tracing::error!(error = %e, "a Raft log's fsync failed; its later appends fail too");
                    failed = Some((e.kind(), e.to_string()));
                }
            }
        }
        for flush in round {
            let result = match &failed {
                None => Ok(()),
                Some((kind, reason)) => Err(io::Error::new(*kind, reason.clone())),
            };
            flush.callback.log_io_completed(result);
        }
    }
}

/// The last log id a state machine's snapshot on disk covers.
pub type PurgeLimit = Arc<dyn Fn() -> Option<LogId> + Send + Sync>;

impl<C: EntryFormat> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            purge_limit: self.purge_limit.clone(),
            flushes: self.flushes.clone(),
            format: std::marker::PhantomData,
        }
    }
}

impl<C: EntryFormat> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.inner.lock().dir)
            .finish_non_exhaustive()
    }
}

/// The chunk taking appends, as [`LogFile::active`] found it.
struct Active {
    number: u64,
    has_entries: bool,
    end: u64,
    seed: Option<u64>,
    file: Arc<File>,
}

/// Where one entry lies.
#[derive(Debug, Clone, Copy)]
struct Placed {
    log_id: LogId,
    /// The number of its chunk.
    chunk: u64,
    /// Where its frame starts in the chunk.
    offset: u64,
    /// Its payload's length.
    length: usize,
}

/// One chunk file.
#[derive(Debug)]
struct Chunk {
    /// Open while the chunk takes appends (shared with the flusher, which
    /// syncs it); the others are opened when read, so that a log of many
    /// chunks holds one descriptor.
    file: Option<Arc<File>>,
    /// Where its entries end.
    end: u64,
    /// What its entries' CRCs cover besides their payload: its number,
    /// when it has a header (`None`: a chunk written before headers).
    seed: Option<u64>,
}

impl Chunk {
    /// Where its entries start.
    fn start(&self) -> u64 {
        if self.seed.is_some() {
            CHUNK_HEADER_LEN
        } else {
            0
        }
    }
}

#[derive(Debug)]
struct LogFile {
    dir: PathBuf,
    /// The chunks by number; the last one takes appends. Entries lie in
    /// them in index order: a later chunk holds only later entries.
    chunks: BTreeMap<u64, Chunk>,
    /// Chunk size after which appends go to a new chunk.
    chunk_bytes: u64,
    /// The numbers of the spares, taken last first.
    spares: Vec<u64>,
    /// Every entry after the purge point, by index.
    entries: BTreeMap<u64, Placed>,
    /// A purge openraft asked for that the state machine's snapshot on
    /// disk does not cover yet (openraft purges as it installs a
    /// snapshot, not after): done as far as the snapshot reaches, and the
    /// rest once it reaches further.
    pending_purge: Option<LogId>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// When the committed mark was last written.
    committed_saved_at: Option<std::time::Instant>,
}

impl<C: EntryFormat> LogStore<C> {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with_chunks_of(dir, CHUNK_BYTES)
    }

    /// Opens (or creates) the log in `dir`, starting a new chunk after
    /// `chunk_bytes`.
    pub(crate) fn open_with_chunks_of(dir: &Path, chunk_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let last_purged: Option<LogId> = read_json(dir, PURGED)?;
        let vote: Option<Vote> = read_json(dir, VOTE)?;
        let committed: Option<LogId> = read_json(dir, COMMITTED).unwrap_or_else(|e| {
            tracing::warn!(dir = %dir.display(), error = %e, "the Raft log's committed mark is unreadable; learning it again from the leader");
            None
        });
        let mut numbers = Vec::new();
        let mut spares = Vec::new();
        for found in std::fs::read_dir(dir)? {
            let found = found?;
            let Some(name) = found.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(number) = chunk_number(&name) {
                numbers.push(number);
            } else if let Some(number) = spare_number(&name) {
                if spares.len() < SPARES_MAX {
                    spares.push(number);
                } else {
                    std::fs::remove_file(found.path())?;
                }
            }
        }
        numbers.sort_unstable();
        let last_number = numbers.last().copied();
        let mut chunks = BTreeMap::new();
        let mut entries = BTreeMap::new();
        let mut torn = false;
        for number in numbers {
            let path = dir.join(chunk_name(number));
            if torn {
                // After a torn chunk: written in the same unsynced round
                // as its tail, never acknowledged.
                tracing::warn!(path = %path.display(), "removing a Raft log chunk written after a torn one");
                std::fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            }
            let file = open_positioned(&path)?;
            let mut bytes = Vec::new();
            (&file).read_to_end(&mut bytes)?;
            let seed = match header_number(&bytes) {
                Some(named) if named != number => {
                    // A spare taken as this chunk, whose new header never
                    // reached the disk: nothing in it belongs here.
                    file.write_all_at(&chunk_header(number), 0)?;
                    Some(number)
                }
                Some(_) => Some(number),
                None => None,
            };
            let from = if seed.is_some() { CHUNK_HEADER_LEN } else { 0 };
            let Records { records, intact } = read_records(&bytes, from as usize, seed);
            let length = bytes.len() as u64;
            if intact < length {
                if seed.is_some() && Some(number) == last_number {
                    // Usually what a recycled file held after the last
                    // entry; or a torn append, never acknowledged.
                    tracing::debug!(path = %path.display(), cut_bytes = length - intact, "cutting what follows the Raft log's last entry");
                } else {
                    tracing::warn!(
                        path = %path.display(),
                        cut_bytes = length - intact,
                        "a Raft log ends in a torn entry (a crash during an append); cutting it off"
                    );
                }
                file.set_len(intact.max(from))?;
                file.sync_all()?;
                torn = true;
            }
            for (offset, payload) in records {
                let entry = C::decode_entry(&payload).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} at byte {offset}: {e}", path.display()),
                    )
                })?;
                let log_id = *entry.get_log_id();
                let index = log_id.index;
                if last_purged.is_some_and(|purged| index <= purged.index) {
                    continue;
                }
                // A truncation cuts the tail, so a later entry of the same
                // index (written by a log of before chunks) replaces an
                // earlier one.
                entries.split_off(&index);
                entries.insert(
                    index,
                    Placed {
                        log_id,
                        chunk: number,
                        offset,
                        length: payload.len(),
                    },
                );
            }
            chunks.insert(
                number,
                Chunk {
                    file: Some(Arc::new(file)),
                    end: intact.max(from),
                    seed,
                },
            );
        }
        for (_, chunk) in chunks.iter_mut().rev().skip(1) {
            chunk.file = None;
        }
        let committed = committed.filter(|committed| {
            let known = last_purged.is_some_and(|purged| committed.index <= purged.index)
                || entries
                    .get(&committed.index)
                    .is_some_and(|placed| placed.log_id == *committed);
            if !known {
                tracing::warn!(dir = %dir.display(), committed = %committed, "the Raft log's committed mark names an entry the log does not hold (lost with a power failure); learning it again from the leader");
            }
            known
        });
        let (flushes, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-flush".to_owned())
            .spawn(move || flush::<C>(&queue))?;
        let mut log = LogFile {
            dir: dir.to_owned(),
            chunks,
            chunk_bytes,
            spares,
            entries,
            pending_purge: None,
            last_purged,
            vote,
            committed,
            committed_saved_at: None,
        };
        if log.chunks.is_empty() {
            // No directory fsync for a new log's first chunk: a group's
            // log is opened on the task that starts the group, and the
            // directory is synced anyway when the vote is saved, before
            // the first entry anyone waits for (a leader's election, a
            // follower's first vote from a leader).
            log.start_chunk(0, false)?;
        }
        // Chunks a purge left (it retires them after the purge point is
        // written) hold nothing needed.
        log.remove_purged_chunks()?;
        Ok(Self {
            flushes,
            inner: Arc::new(Mutex::new(log)),
            purge_limit: None,
            format: std::marker::PhantomData,
        })
    }

    /// The log, never purged beyond what `limit` says the state machine's
    /// snapshot on disk covers. Without it, a crash between openraft's
    /// purge and the snapshot's write would leave committed entries in
    /// neither.
    #[must_use]
    pub fn with_purge_limit(mut self, limit: PurgeLimit) -> Self {
        self.purge_limit = Some(limit);
        self
    }

    /// Purges what openraft asked for, as far as the limit allows.
    fn purge_allowed(&self, inner: &mut LogFile) -> io::Result<()> {
        let Some(wanted) = inner.pending_purge else {
            return Ok(());
        };
        let target = match &self.purge_limit {
            None => wanted,
            Some(limit) => match limit() {
                Some(limit) if limit.index < wanted.index => limit,
                Some(_) => wanted,
                None => return Ok(()),
            },
        };
        if target == wanted {
            inner.pending_purge = None;
        }
        if inner.last_purged.is_some_and(|p| p.index >= target.index) {
            return Ok(());
        }
        inner.purge(target)
    }

    /// Appends durably, without openraft's callback: written and synced
    /// before it returns.
    pub fn append_now(&self, entries: &[C::Entry]) -> io::Result<()> {
        self.write(entries)?.sync_data()
    }

    /// Writes entries to the file (not yet durable); returns the file to
    /// sync.
    fn write(&self, entries: &[C::Entry]) -> io::Result<Arc<File>> {
        // Each entry encoded straight into its frame, the frames one
        // buffer: a record's bytes are copied once here, once by the
        // kernel (the write is most of a replica's work at 1 KiB).
        // Sealed for the chunk taking appends now; sealed again, under the
        // lock, in the rare case they go to a new one.
        let seed = self.inner.lock().active()?.seed;
        let mut framed = Framed {
            seed,
            ..Framed::default()
        };
        for entry in entries {
            let start = framed.bytes.len();
            framed.bytes.extend_from_slice(&[0; FRAME_LEN]);
            C::encode_entry(entry, &mut framed.bytes)?;
            seal_frame(&mut framed.bytes[start..], seed)?;
            framed.placed.push(Placed {
                log_id: *entry.get_log_id(),
                // Set where the chunk is chosen.
                chunk: 0,
                offset: start as u64,
                length: framed.bytes.len() - start - FRAME_LEN,
            });
        }
        let mut inner = self.inner.lock();
        // Before the new entries, so the log never holds a purge point
        // after entries that follow it.
        self.purge_allowed(&mut inner)?;
        inner.append(framed)
    }

    /// The entries in `range`, read back from the file.
    fn read(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<C::Entry>> {
        let inner = self.inner.lock();
        let mut entries = Vec::new();
        // Earlier chunks, opened for this read.
        let mut opened: BTreeMap<u64, File> = BTreeMap::new();
        for placed in inner.entries.range(range).map(|(_, placed)| *placed) {
            let mut payload = vec![0; placed.length];
            let at = placed.offset + FRAME_LEN as u64;
            if let Some(file) = &inner.chunk(placed.chunk)?.file {
                file.read_exact_at(&mut payload, at)?;
            } else {
                let file = match opened.entry(placed.chunk) {
                    btree_map::Entry::Occupied(open) => open.into_mut(),
                    btree_map::Entry::Vacant(closed) => {
                        closed.insert(File::open(inner.dir.join(chunk_name(placed.chunk)))?)
                    }
                };
                file.read_exact_at(&mut payload, at)?;
            }
            entries.push(C::decode_entry(&payload)?);
        }
        Ok(entries)
    }
}

/// Entries framed one after the other, each placed relative to the start
/// of `bytes`.
#[derive(Default)]
struct Framed {
    bytes: Vec<u8>,
    placed: Vec<Placed>,
    /// The seed the frames were sealed with.
    seed: Option<u64>,
}

impl Framed {
    /// Seals every frame again with `seed`.
    fn reseal(&mut self, seed: Option<u64>) -> io::Result<()> {
        for placed in &self.placed {
            let start = placed.offset as usize;
            seal_frame(
                &mut self.bytes[start..start + FRAME_LEN + placed.length],
                seed,
            )?;
        }
        self.seed = seed;
        Ok(())
    }
}

impl LogFile {
    fn chunk(&self, number: u64) -> io::Result<&Chunk> {
        self.chunks.get(&number).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: chunk {number} of the Raft log is gone",
                    self.dir.display()
                ),
            )
        })
    }

    /// The chunk that takes appends.
    fn active(&self) -> io::Result<Active> {
        match self.chunks.last_key_value() {
            Some((
                number,
                chunk @ Chunk {
                    file: Some(file), ..
                },
            )) => Ok(Active {
                number: *number,
                has_entries: chunk.end > chunk.start(),
                end: chunk.end,
                seed: chunk.seed,
                file: file.clone(),
            }),
            _ => Err(io::Error::other(
                "a Raft log without a chunk open for appends",
            )),
        }
    }

    /// Starts chunk `number`, on a spare when there is one, and makes it
    /// the one taking appends; returns its file. With `sync_name`, its
    /// name is durable before this returns.
    fn start_chunk(&mut self, number: u64, sync_name: bool) -> io::Result<Arc<File>> {
        let path = self.dir.join(chunk_name(number));
        let recycled = match self.spares.pop() {
            Some(spare) => match std::fs::rename(self.dir.join(spare_name(spare)), &path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            },
            None => false,
        };
        let file = open_positioned(&path)?;
        if !recycled {
            // A file of that name a truncation or a crash left holds
            // nothing needed.
            file.set_len(0)?;
        }
        // Durable with the first entries' fsync; until then, an old header
        // (or none) says that the chunk holds nothing.
        file.write_all_at(&chunk_header(number), 0)?;
        if sync_name {
            sync_dir(&self.dir)?;
        }
        let file = Arc::new(file);
        self.chunks.insert(
            number,
            Chunk {
                file: Some(file.clone()),
                end: CHUNK_HEADER_LEN,
                seed: Some(number),
            },
        );
        Ok(file)
    }

    /// Writes `framed` to the active chunk, after starting a new one if
    /// the active one is full; returns the file to sync.
    fn append(&mut self, mut framed: Framed) -> io::Result<Arc<File>> {
        let active = self.active()?;
        let (mut number, mut file) = (active.number, active.file);
        if active.has_entries && active.end + framed.bytes.len() as u64 > self.chunk_bytes {
            // Synced first, so that no chunk but the last ever ends in
            // an unsynced write, and cut where its entries end (a
            // recycled file may hold more): a chunk before the last that
            // ends in anything but entries is taken for torn at open. The
            // new file's name is made durable before anything written to
            // it is acknowledged.
            file.sync_data()?;
            if file.metadata()?.len() > active.end {
                file.set_len(active.end)?;
                file.sync_all()?;
            }
            if let Some(full) = self.chunks.get_mut(&number) {
                full.file = None;
            }
            number += 1;
            file = self.start_chunk(number, true)?;
        }
        let chunk = self
            .chunks
            .get_mut(&number)
            .ok_or_else(|| io::Error::other("the active chunk is gone"))?;
        if framed.seed != chunk.seed {
            framed.reseal(chunk.seed)?;
        }
        file.write_all_at(&framed.bytes, chunk.end)?;
        for placed in framed.placed {
            self.entries.insert(
                placed.log_id.index,
                Placed {
                    chunk: number,
                    offset: chunk.end + placed.offset,
                    ..placed
                },
            );
        }
        chunk.end += framed.bytes.len() as u64;
        Ok(file)
    }

    /// Removes the entries from `index` on, from memory and the files:
    /// the chunks after the one that holds `index`, then that one's tail.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let removed = self.entries.split_off(&index);
        let Some((_, first)) = removed.first_key_value() else {
            return Ok(());
        };
        let later: Vec<u64> = self
            .chunks
            .range(first.chunk + 1..)
            .map(|(number, _)| *number)
            .collect();
        // Last first: a crash part way leaves a log without a gap.
        for number in later.iter().rev() {
            self.delete_chunk(*number)?;
        }
        if !later.is_empty() {
            sync_dir(&self.dir)?;
        }
        let path = self.dir.join(chunk_name(first.chunk));
        let chunk = self
            .chunks
            .get_mut(&first.chunk)
            .ok_or_else(|| io::Error::other("a truncated chunk is gone"))?;
        // It takes the appends again.
        let file = match &chunk.file {
            Some(file) => file.clone(),
            None => Arc::new(open_positioned(&path)?),
        };
        file.set_len(first.offset)?;
        file.sync_data()?;
        chunk.file = Some(file);
        chunk.end = first.offset;
        Ok(())
    }

    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        replace_json(&self.dir, PURGED, &log_id)?;
        let kept = self.entries.split_off(&(log_id.index + 1));
        self.entries = kept;
        self.last_purged = Some(log_id);
        self.remove_purged_chunks()
    }

    /// Retires the chunks before the first that holds an entry after the
    /// purge point (the active one stays). Unsynced: a chunk a power
    /// failure brings back holds only purged entries, skipped at open and
    /// retired again.
    fn remove_purged_chunks(&mut self) -> io::Result<()> {
        let active = self.active()?.number;
        let first_needed = self
            .entries
            .first_key_value()
            .map_or(active, |(_, placed)| placed.chunk);
        let purged: Vec<u64> = self
            .chunks
            .range(..first_needed)
            .map(|(number, _)| *number)
            .collect();
        for number in purged {
            self.retire_chunk(number)?;
        }
        Ok(())
    }

    /// Keeps purged chunk `number` as a spare, or deletes it when there
    /// are enough (and a chunk without a header, whose entries would read
    /// as valid wherever it is taken).
    fn retire_chunk(&mut self, number: u64) -> io::Result<()> {
        let Some(chunk) = self.chunks.remove(&number) else {
            return Ok(());
        };
        let path = self.dir.join(chunk_name(number));
        if chunk.seed.is_some() && self.spares.len() < SPARES_MAX {
            std::fs::rename(path, self.dir.join(spare_name(number)))?;
            self.spares.push(number);
            Ok(())
        } else {
            std::fs::remove_file(path)
        }
    }

    /// Forgets chunk `number` and deletes its file (the directory is not
    /// synced).
    fn delete_chunk(&mut self, number: u64) -> io::Result<()> {
        self.chunks.remove(&number);
        std::fs::remove_file(self.dir.join(chunk_name(number)))
    }
}

impl<C: EntryFormat> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError> {
        self.read(range)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl<C: EntryFormat> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, placed)| placed.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        replace_json(&inner.dir, VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        // Not needed for safety (the committed index is learned again from
        // the leader); it lets a restarted broker apply what it knew was
        // committed before hearing from anyone. openraft saves it on every
        // commit, in its core loop and before applying: it is not synced,
        // which cost two fsyncs per commit on every replica. What a power
        // failure leaves of it is checked against the log at open.
        // Nor is every commit written: a rename per commit in openraft's
        // core loop held back everything else the group does. A mark older
        // than the last commit only means less is applied before the
        // leader is heard from.
        let due = inner
            .committed_saved_at
            .is_none_or(|at| at.elapsed() >= COMMITTED_SAVE_EVERY);
        if due {
            replace_json_unsynced(&inner.dir, COMMITTED, &committed)
                .map_err(|e| StorageIOError::write(&e))?;
            inner.committed_saved_at = Some(std::time::Instant::now());
        }
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        match self.write(&entries) {
            // Reported durable by the flusher, after the fsync.
            Ok(file) => self
                .flushes
                .send(Flush { file, callback })
                .map_err(|unsent| {
                    let e = io::Error::other("the Raft log's flusher stopped");
                    let error = StorageIOError::write_logs(&e);
                    unsent.0.callback.log_io_completed(Err(e));
                    error.into()
                }),
            Err(e) => {
                let error = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(error.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner
            .lock()
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        if inner
            .pending_purge
            .is_none_or(|pending| pending.index < log_id.index)
        {
            inner.pending_purge = Some(log_id);
        }
        self.purge_allowed(&mut inner)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::store::tests::{TINY_CHUNKS, entry, log_of_chunks};
    use crate::types::MetaRaftConfig;

    fn open_files(log: &LogStore<MetaRaftConfig>) -> usize {
        let inner = log.inner.lock();
        inner.chunks.values().filter(|c| c.file.is_some()).count()
    }

    #[tokio::test]
    async fn a_log_of_many_chunks_keeps_one_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of_chunks(dir.path(), 8);
        assert_eq!(log.inner.lock().chunks.len(), 8);
        assert_eq!(open_files(&log), 1, "the chunk taking appends");
        // Earlier chunks are read all the same.
        let read = log.try_get_log_entries(2..=7).await.unwrap();
        assert_eq!(read.len(), 6);
        // A truncation into an earlier chunk makes it the one open.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .unwrap();
        assert_eq!(open_files(&log), 1);
        log.append_now(&[entry(1, 4, "a")]).unwrap();
        drop(log);
        let mut log =
            LogStore::<MetaRaftConfig>::open_with_chunks_of(dir.path(), TINY_CHUNKS).unwrap();
        assert_eq!(open_files(&log), 1);
        let read = log.try_get_log_entries(..).await.unwrap();
        let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, [1, 2, 3, 4]);
    }

    /// The log in `dir` with chunks of two entries like `entry(1, i, "a")`.
    fn log_of_pairs(dir: &Path) -> LogStore<MetaRaftConfig> {
        let mut encoded = Vec::new();
        MetaRaftConfig::encode_entry(&entry(1, 1, "a"), &mut encoded).unwrap();
        let frame = (FRAME_LEN + encoded.len()) as u64;
        LogStore::<MetaRaftConfig>::open_with_chunks_of(dir, CHUNK_HEADER_LEN + 2 * frame).unwrap()
    }

    async fn indexes(log: &mut LogStore<MetaRaftConfig>) -> Vec<u64> {
        let read = log.try_get_log_entries(..).await.unwrap();
        read.iter().map(|e| e.log_id.index).collect()
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    /// A purged chunk becomes the next one (the same file), and what it
    /// held is not read back: its old second entry lies right where a
    /// second new one starts.
    #[tokio::test]
    async fn a_purged_chunk_is_taken_as_a_new_one_without_its_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of_pairs(dir.path());
        for index in 1..=4 {
            log.append_now(&[entry(1, index, "a")]).unwrap();
        }
        let first = inode(&dir.path().join("log"));
        assert!(dir.path().join("log.1").exists(), "two entries per chunk");
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        assert!(!dir.path().join("log").exists());
        log.append_now(&[entry(1, 5, "a")]).unwrap();
        assert_eq!(inode(&dir.path().join("log.2")), first, "the spare taken");
        drop(log);
        let mut log = log_of_pairs(dir.path());
        assert_eq!(indexes(&mut log).await, [3, 4, 5]);
        log.append_now(&[entry(1, 6, "a")]).unwrap();
        drop(log);
        let mut log = log_of_pairs(dir.path());
        assert_eq!(indexes(&mut log).await, [3, 4, 5, 6]);
    }

    /// A spare renamed into place whose new header never reached the disk
    /// (a crash in between) holds nothing of the log.
    #[tokio::test]
    async fn a_spare_taken_without_its_new_header_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_of_pairs(dir.path());
        for index in 1..=4 {
            log.append_now(&[entry(1, index, "a")]).unwrap();
        }
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        drop(log);
        std::fs::rename(dir.path().join("spare.0"), dir.path().join("log.2")).unwrap();
        let mut log = log_of_pairs(dir.path());
        assert_eq!(indexes(&mut log).await, [3, 4]);
        log.append_now(&[entry(1, 5, "a")]).unwrap();
        drop(log);
        let mut log = log_of_pairs(dir.path());
        assert_eq!(indexes(&mut log).await, [3, 4, 5]);
    }

    /// A log written before chunks had headers opens, takes appends, and
    /// its chunks are deleted, not recycled, once purged.
    #[tokio::test]
    async fn a_log_of_chunks_without_headers_opens_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut legacy = Vec::new();
        for index in 1..=2 {
            let mut encoded = Vec::new();
            MetaRaftConfig::encode_entry(&entry(1, index, "a"), &mut encoded).unwrap();
            legacy.extend_from_slice(&crate::store::files::frame(&encoded).unwrap());
        }
        std::fs::write(dir.path().join("log"), &legacy).unwrap();
        let mut log = log_of_pairs(dir.path());
        assert_eq!(indexes(&mut log).await, [1, 2]);
        for index in 3..=4 {
            log.append_now(&[entry(1, index, "a")]).unwrap();
        }
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        assert!(!dir.path().join("spare.0").exists());
        drop(log);
        let mut log = log_of_pairs(dir.path());
        assert_eq!(indexes(&mut log).await, [3, 4]);
    }
}

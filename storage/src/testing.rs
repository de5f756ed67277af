//! File systems for fault tests: `MemStorage` keeps files in memory and can
//! produce the image a crash would leave (only what was synced survives);
//! `FailingStorage` wraps another storage and fails every write, sync and
//! truncate after a budget of successful ones.
//!
//! Public so that integration tests and embedders can inject faults through
//! `BrokerConfig::storage`; nothing in the broker's normal path uses them.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use brook_record::{BatchHeader, BatchOptions, NewRecord};
use bytes::Bytes;
use parking_lot::Mutex;

use super::io::{LogFile, Storage};

/// An in-memory file system that remembers, per file, what was last synced.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    /// All files by path; directories are implied by file paths.
    files: Arc<Mutex<HashMap<PathBuf, Arc<MemFile>>>>,
}

#[derive(Debug, Default)]
struct MemFile {
    /// What the file holds now.
    data: Mutex<Vec<u8>>,
    /// What the file held at its last sync: what survives a crash.
    synced: Mutex<Vec<u8>>,
    /// Removed from its path (or replaced there), as `unlink` would.
    unlinked: AtomicBool,
}

impl MemFile {
    fn unlink(&self) {
        self.unlinked.store(true, Ordering::Release);
    }
}

impl MemStorage {
    /// The files as a power loss now would leave them: each one cut back to
    /// its contents at its last sync.
    #[must_use]
    pub fn crash_image(&self) -> MemStorage {
        let files = self
            .files
            .lock()
            .iter()
            .map(|(path, file)| {
                let synced = file.synced.lock().clone();
                let copy = MemFile {
                    data: Mutex::new(synced.clone()),
                    synced: Mutex::new(synced),
                    unlinked: AtomicBool::new(false),
                };
                (path.clone(), Arc::new(copy))
            })
            .collect();
        MemStorage {
            files: Arc::new(Mutex::new(files)),
        }
    }

    /// A file's current contents, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.files.lock().get(path).map(|f| f.data.lock().clone())
    }

    /// Replaces a file's contents (and its synced image), for corruption tests.
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let file = MemFile {
            data: Mutex::new(bytes.clone()),
            synced: Mutex::new(bytes),
            unlinked: AtomicBool::new(false),
        };
        if let Some(replaced) = self.files.lock().insert(path.to_owned(), Arc::new(file)) {
            replaced.unlink();
        }
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.files.lock().keys().cloned().collect();
        paths.sort();
        paths
    }
}

impl LogFile for MemFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        let data = self.data.lock();
        let start = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let mut data = self.data.lock();
        for b in bufs {
            data.extend_from_slice(b);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let data = self.data.lock().clone();
        *self.synced.lock() = data;
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let len =
            usize::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.data.lock().resize(len, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().len() as u64)
    }

    fn is_linked(&self) -> io::Result<bool> {
        Ok(!self.unlinked.load(Ordering::Acquire))
    }
}

impl Storage for MemStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let file = self
            .files
            .lock()
            .entry(path.to_owned())
            .or_default()
            .clone();
        Ok(file)
    }

    fn open_existing(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        match self.files.lock().get(path) {
            Some(file) => Ok(file.clone()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.files.lock().remove(path) {
            Some(file) => {
                file.unlink();
                Ok(())
            }
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.files.lock().retain(|p, file| {
            let kept = !p.starts_with(path);
            if !kept {
                file.unlink();
            }
            kept
        });
        Ok(())
    }

    fn list_files(&self, path: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .files
            .lock()
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files.lock();
        let moved: Vec<PathBuf> = files
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        if moved.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        for path in moved {
            if let (Some(file), Ok(rest)) = (files.remove(&path), path.strip_prefix(from)) {
                files.insert(to.join(rest), file);
            }
        }
        Ok(())
    }

    /// Directories exist here only as the parents of files.
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .files
            .lock()
            .keys()
            .filter_map(|p| {
                let rest = p.strip_prefix(path).ok()?;
                let mut components = rest.components();
                let first = components.next()?;
                components.next()?;
                first.as_os_str().to_str().map(str::to_owned)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// Wraps a storage and fails every mutating file operation (append, sync,
/// truncate) once `budget` of them have succeeded. It can also fail every
/// append (after writing part of it: a short write) or every open with a
/// chosen errno, as a full disk or an exhausted descriptor table does.
#[derive(Debug, Clone)]
pub struct FailingStorage {
    inner: Arc<dyn Storage>,
    /// Mutating operations still allowed to succeed, shared by all files.
    budget: Arc<AtomicU64>,
    /// The other faults, shared by all files.
    faults: Arc<Mutex<Faults>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    /// The errno of a failure after the budget; a generic error if `None`.
    errno: Option<i32>,
    /// Every append fails with this errno, whatever the budget.
    append: Option<AppendFault>,
    /// Every open fails with this errno.
    open_errno: Option<i32>,
}

#[derive(Debug, Clone, Copy)]
struct AppendFault {
    errno: i32,
    /// Bytes written before the failure.
    written_bytes: usize,
}

impl FailingStorage {
    pub fn new(inner: Arc<dyn Storage>, budget: u64) -> Self {
        Self {
            inner,
            budget: Arc::new(AtomicU64::new(budget)),
            faults: Arc::default(),
        }
    }

    /// Allows `budget` more operations from now on.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }

    /// Operations past the budget fail with `errno` (e.g. `libc`'s
    /// `ENOSPC`) instead of a generic error.
    pub fn set_errno(&self, errno: i32) {
        self.faults.lock().errno = Some(errno);
    }

    /// Every append from now on writes its first `written_bytes` bytes and
    /// then fails with `errno`, as a write meeting a full disk does;
    /// truncates and syncs still go by the budget.
    pub fn fail_appends_with(&self, errno: i32, written_bytes: usize) {
        self.faults.lock().append = Some(AppendFault {
            errno,
            written_bytes,
        });
    }

    /// Appends succeed again (the resource is back).
    pub fn stop_failing_appends(&self) {
        self.faults.lock().append = None;
    }

    /// Every open fails with `errno` (e.g. `EMFILE`) while set; `None`
    /// lets opens through again.
    pub fn fail_opens_with(&self, errno: Option<i32>) {
        self.faults.lock().open_errno = errno;
    }
}

#[derive(Debug)]
struct FailingFile {
    inner: Arc<dyn LogFile>,
    budget: Arc<AtomicU64>,
    faults: Arc<Mutex<Faults>>,
}

impl FailingFile {
    fn spend(&self) -> io::Result<()> {
        let errno = self.faults.lock().errno;
        self.budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .map(|_| ())
            .map_err(|_| match errno {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::other("injected failure"),
            })
    }
}

impl LogFile for FailingFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let fault = self.faults.lock().append;
        if let Some(fault) = fault {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let written = fault.written_bytes.min(bytes.len());
            self.inner.append(&[IoSlice::new(&bytes[..written])])?;
            return Err(io::Error::from_raw_os_error(fault.errno));
        }
        self.spend()?;
        self.inner.append(bufs)
    }

    fn sync(&self) -> io::Result<()> {
        self.spend()?;
        self.inner.sync()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.spend()?;
        self.inner.truncate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn is_linked(&self) -> io::Result<bool> {
        self.inner.is_linked()
    }
}

impl Storage for FailingStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        if let Some(errno) = self.faults.lock().open_errno {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(Arc::new(FailingFile {
            inner: self.inner.open(path)?,
            budget: self.budget.clone(),
            faults: self.faults.clone(),
        }))
    }

    fn open_existing(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        if let Some(errno) = self.faults.lock().open_errno {
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(Arc::new(FailingFile {
            inner: self.inner.open_existing(path)?,
            budget: self.budget.clone(),
            faults: self.faults.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }

    fn list_files(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_files(path)
    }

    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dirs(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if let Some(errno) = self.faults.lock().open_errno {
            // Syncing a directory opens it first.
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.sync_dir(path)
    }
}

/// A batch of one record valued `value`, stamped 1,000 ms, and its header:
/// what the storage tests append.
///
/// # Panics
///
/// Never for a value that fits a batch (encoding one record cannot fail).
pub fn single_record_batch(value: &str) -> (Bytes, BatchHeader) {
    let record = NewRecord {
        timestamp: 1_000,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..NewRecord::default()
    };
    let bytes = brook_record::encode_batch(&[record], BatchOptions::default())
        .expect("one small record always encodes");
    let header = BatchHeader::parse(&bytes).expect("an encoded batch always parses");
    (bytes, header)
}

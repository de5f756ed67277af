//! The file system as the log sees it: a small trait for files and one for
//! directories, so that tests can swap in a file that fails after N
//! operations or one that keeps only what was synced (see `testing`).
//!
//! Invariant: every byte the log writes or reads goes through these traits;
//! nothing in `storage/` calls `std::fs` directly except `OsStorage`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sync_group::SyncGroup;

/// One open file of the log: a segment or one of its indexes.
///
/// Writes only ever go to the end (`append`); `truncate` is for recovery.
pub trait LogFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `position`; fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    /// Reads up to `len` bytes at `position` into a new buffer; fewer only
    /// at end of file.
    fn read_vec_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        let filled = read_full_at(self, &mut buf, position)?;
        buf.truncate(filled);
        Ok(buf)
    }

    /// Appends all of `bufs`, in order, at the end of the file.
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Whether the path the file was opened at still names this file (it
    /// was not removed, or replaced by another). Appends to an unlinked
    /// file are lost with its last handle.
    fn is_linked(&self) -> io::Result<bool> {
        Ok(true)
    }
}

/// Directory operations and the way files are opened.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens `path` for reading and appending, creating it when missing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>>;
    /// Opens a file that must exist (`NotFound` otherwise): reopening a
    /// sealed segment must never create an empty one in its place. The
    /// default opens as `open` does, for storages that cannot tell.
    fn open_existing(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        self.open(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of `path` (files only, no directories).
    fn list_files(&self, path: &Path) -> io::Result<Vec<String>>;
    /// The names of the directories in `path`.
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Moves a file or directory (within one file system).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created and removed files) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// How the partitions under `dir` share fsyncs (see `SyncGroup`); by
    /// default each syncs its own files.
    fn sync_group(&self, dir: &Path) -> io::Result<SyncGroup> {
        let _ = dir;
        Ok(SyncGroup::per_file())
    }
}

/// Reads exactly `buf.len()` bytes at `position`, or fails with `UnexpectedEof`.
pub fn read_exact_at(file: &dyn LogFile, mut buf: &mut [u8], mut position: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, position) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                position += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes at `position`, stopping early only at end of file.
pub fn read_full_at(
    file: &(impl LogFile + ?Sized),
    buf: &mut [u8],
    position: u64,
) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], position + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes an unprivileged writer may still use on the file system that
/// holds `path` (statvfs: available blocks times the fragment size), or
/// `None` when the file system does not say: one that reports no blocks
/// at all (FUSE file systems without `statfs`, some network file systems)
/// would otherwise read as full.
// The block count and size are narrower than u64 on some targets.
#[allow(clippy::useless_conversion)]
pub fn available_bytes(path: &Path) -> io::Result<Option<u64>> {
    let stats = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    if stats.blocks() == 0 {
        return Ok(None);
    }
    Ok(Some(
        u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size())),
    ))
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

#[derive(Debug)]
struct OsFile {
    file: File,
    /// Where it was opened, to tell whether that path still names it.
    path: PathBuf,
}

impl LogFile for OsFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.file.read_at(buf, position)
    }

    /// Reads into the buffer's spare capacity: a fetch's megabytes are not
    /// zeroed before the kernel overwrites them.
    fn read_vec_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = position + buf.len() as u64;
            match rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => break,
                // Read some, or interrupted before reading: go on.
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The capacity may exceed `len`; nothing past it was asked for.
        buf.truncate(len);
        Ok(buf)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        // The file is opened with O_APPEND, so every write lands at the end.
        // Empty slices would make a vectored write return 0, which reads as
        // "cannot write".
        let mut owned: Vec<IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).copied().collect();
        let mut slices: &mut [IoSlice<'_>] = &mut owned;
        while !slices.is_empty() {
            match (&self.file).write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn is_linked(&self) -> io::Result<bool> {
        let open = self.file.metadata()?;
        if open.nlink() == 0 {
            return Ok(false);
        }
        match fs::metadata(&self.path) {
            Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Storage for OsStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Arc::new(OsFile {
            file,
            path: path.to_owned(),
        }))
    }

    fn open_existing(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Arc::new(OsFile {
            file,
            path: path.to_owned(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list_files(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_group(&self, dir: &Path) -> io::Result<SyncGroup> {
        SyncGroup::for_data_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_file_appends_reads_and_ignores_empty_slices() {
        let dir = tempfile::tempdir().unwrap();
        let file = OsStorage.open(&dir.path().join("f")).unwrap();
        file.append(&[]).unwrap();
        file.append(&[IoSlice::new(&[]), IoSlice::new(b"ab"), IoSlice::new(b"")])
            .unwrap();
        file.append(&[IoSlice::new(b"cd")]).unwrap();
        let mut buf = [0u8; 4];
        read_exact_at(file.as_ref(), &mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcd");
        file.truncate(1).unwrap();
        assert_eq!(file.len().unwrap(), 1);
        assert!(read_exact_at(file.as_ref(), &mut buf, 0).is_err());
    }

    #[test]
    fn os_file_reads_into_a_new_buffer_exactly_what_is_asked_or_up_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = OsStorage.open(&dir.path().join("f")).unwrap();
        let content: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        file.append(&[IoSlice::new(&content)]).unwrap();
        assert_eq!(file.read_vec_at(10, 5).unwrap(), &content[5..15]);
        assert_eq!(
            file.read_vec_at(70_000, 1_000).unwrap(),
            &content[1_000..71_000]
        );
        assert_eq!(
            file.read_vec_at(1_000, 99_500).unwrap(),
            &content[99_500..],
            "fewer at the end of the file"
        );
        assert!(file.read_vec_at(10, 200_000).unwrap().is_empty());
        assert!(file.read_vec_at(0, 0).unwrap().is_empty());
    }

    #[test]
    fn os_file_knows_when_its_path_no_longer_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OsStorage.open(&path).unwrap();
        assert!(file.is_linked().unwrap());
        fs::remove_file(&path).unwrap();
        assert!(!file.is_linked().unwrap(), "removed");
        let _other = OsStorage.open(&path).unwrap();
        assert!(!file.is_linked().unwrap(), "another file at its path");
    }
}

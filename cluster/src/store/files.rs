//! The few file operations the stores need: a small file replaced
//! atomically and durably, and length- and CRC-framed records in an
//! append-only file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes before each record's payload: its length and CRC-32 (little-endian).
pub(crate) const FRAME_LEN: usize = 8;

/// The largest record the stores write or read: far above any metadata
/// entry, and a bound on what a damaged length field can make us allocate.
pub(crate) const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old
/// or the new contents, and the new ones survive a power loss once this
/// returns: a temporary file, fsynced, renamed over, and the directory
/// fsynced.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(name))?;
    sync_dir(dir)
}

/// `value` as JSON in `dir/name`, replaced atomically and durably.
pub(crate) fn replace_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    replace_file(dir, name, &bytes)
}

/// `value` as JSON in `dir/name`, replaced atomically (a temporary file
/// renamed over) but not synced: for what only saves work after a restart
/// and may be lost, or found unreadable, after a power loss.
pub(crate) fn replace_json_unsynced<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let temporary = dir.join(format!("{name}.tmp"));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, dir.join(name))
}

/// The JSON in `dir/name`, or `None` when there is no such file.
pub(crate) fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens (creating) an append-only file of framed records.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

/// One record framed: length, CRC-32 of the payload, payload.
#[cfg(test)]
pub(crate) fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut framed = Vec::with_capacity(FRAME_LEN + payload.len());
    framed.extend_from_slice(&[0; FRAME_LEN]);
    framed.extend_from_slice(payload);
    seal_frame(&mut framed)?;
    Ok(framed)
}

/// Writes the header of a record whose payload was written in place after
/// `FRAME_LEN` bytes left for it: `record` is the header and the payload,
/// so that a record is framed without copying its payload again.
pub(crate) fn seal_frame(record: &mut [u8]) -> io::Result<()> {
    let Some((header, payload)) = record.split_at_mut_checked(FRAME_LEN) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a record without room for its header",
        ));
    };
    if payload.len() > RECORD_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a record of {} bytes is over {RECORD_BYTES_MAX}",
                payload.len()
            ),
        ));
    }
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Ok(())
}

/// A framed file read back: each record's payload with the offset it
/// starts at, and the length of the intact prefix.
pub(crate) struct Records {
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    pub(crate) intact: u64,
}

/// The records of a framed file: reading stops at the first record that is
/// cut short or fails its CRC (a write a crash interrupted), and what
/// follows is not trusted.
pub(crate) fn read_records(file: &mut File) -> io::Result<Records> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + FRAME_LEN) {
        let mut length = [0u8; 4];
        let mut crc = [0u8; 4];
        length.copy_from_slice(&header[..4]);
        crc.copy_from_slice(&header[4..]);
        let length = u32::from_le_bytes(length) as usize;
        if length > RECORD_BYTES_MAX {
            break;
        }
        let Some(payload) = bytes.get(at + FRAME_LEN..at + FRAME_LEN + length) else {
            break;
        };
        if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
            break;
        }
        records.push((at as u64, payload.to_vec()));
        at += FRAME_LEN + length;
    }
    Ok(Records {
        records,
        intact: at as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_damaged_tail_ends_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = open_append(&path).unwrap();
        for payload in [&b"one"[..], b"two", b"three"] {
            file.write_all(&frame(payload).unwrap()).unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record short.
        file.set_len(full - 2).unwrap();
        let mut file = File::open(&path).unwrap();
        let read = read_records(&mut file).unwrap();
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.intact, 2 * FRAME_LEN as u64 + 6);
        // Flip a byte of the second record's payload.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_LEN + 3 + FRAME_LEN] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let read = read_records(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(read.records, vec![(0, b"one".to_vec())]);
        assert_eq!(read.intact, FRAME_LEN as u64 + 3);
    }

    #[test]
    fn a_replaced_file_holds_the_new_contents() {
        let dir = tempfile::tempdir().unwrap();
        replace_json(dir.path(), "vote", &1u64).unwrap();
        replace_json(dir.path(), "vote", &2u64).unwrap();
        assert_eq!(read_json::<u64>(dir.path(), "vote").unwrap(), Some(2));
        assert_eq!(read_json::<u64>(dir.path(), "missing").unwrap(), None);
        assert!(!dir.path().join("vote.tmp").exists());
    }
}

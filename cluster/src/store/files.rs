//! The few file operations the stores need: a small file replaced
//! atomically and durably, and length- and CRC-framed records written one
//! after the other.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes before each record's payload: its length and CRC-32 (little-endian).
pub(crate) const FRAME_LEN: usize = 8;

/// The CRC-32 of a record's payload; with a `seed`, of the seed's bytes
/// (little-endian) followed by the payload, so that a record is valid only
/// where it was written for that seed.
pub(crate) fn record_crc(seed: Option<u64>, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if let Some(seed) = seed {
        hasher.update(&seed.to_le_bytes());
    }
    hasher.update(payload);
    hasher.finalize()
}

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

/// Opens a file of framed records for reading and for writing at chosen
/// positions, creating it if missing.
pub(crate) fn open_positioned(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// One record framed: length, CRC-32 of the payload, payload.
#[cfg(test)]
pub(crate) fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut framed = Vec::with_capacity(FRAME_LEN + payload.len());
    framed.extend_from_slice(&[0; FRAME_LEN]);
    framed.extend_from_slice(payload);
    seal_frame(&mut framed, None)?;
    Ok(framed)
}

/// Writes the header of a record whose payload was written in place after
/// `FRAME_LEN` bytes left for it: `record` is the header and the payload,
/// so that a record is framed without copying its payload again.
pub(crate) fn seal_frame(record: &mut [u8], seed: Option<u64>) -> io::Result<()> {
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
    header[4..].copy_from_slice(&record_crc(seed, payload).to_le_bytes());
    Ok(())
}

/// A framed file read back: each record's payload with the offset it
/// starts at, and the length of the intact prefix.
pub(crate) struct Records {
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    pub(crate) intact: u64,
}

/// The records framed in `bytes` from `from` on, sealed with `seed`:
/// reading stops at the first record that is cut short or fails its CRC (a
/// write a crash interrupted, or what an earlier use of a recycled file
/// left), and what follows is not trusted.
pub(crate) fn read_records(bytes: &[u8], from: usize, seed: Option<u64>) -> Records {
    let mut records = Vec::new();
    let mut at = from;
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
        if record_crc(seed, payload) != u32::from_le_bytes(crc) {
            break;
        }
        records.push((at as u64, payload.to_vec()));
        at += FRAME_LEN + length;
    }
    Records {
        records,
        intact: at as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_damaged_tail_ends_the_records() {
        let mut bytes = Vec::new();
        for payload in [&b"one"[..], b"two", b"three"] {
            bytes.extend_from_slice(&frame(payload).unwrap());
        }
        // Cut the last record short.
        let read = read_records(&bytes[..bytes.len() - 2], 0, None);
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.intact, 2 * FRAME_LEN as u64 + 6);
        // Flip a byte of the second record's payload.
        bytes[FRAME_LEN + 3 + FRAME_LEN] ^= 1;
        let read = read_records(&bytes, 0, None);
        assert_eq!(read.records, vec![(0, b"one".to_vec())]);
        assert_eq!(read.intact, FRAME_LEN as u64 + 3);
    }

    #[test]
    fn a_record_is_valid_only_under_the_seed_it_was_sealed_with() {
        let mut bytes = vec![0; 5];
        for payload in [&b"one"[..], b"two"] {
            let start = bytes.len();
            bytes.extend_from_slice(&[0; FRAME_LEN]);
            bytes.extend_from_slice(payload);
            seal_frame(&mut bytes[start..], Some(7)).unwrap();
        }
        let read = read_records(&bytes, 5, Some(7));
        assert_eq!(
            read.records,
            vec![(5, b"one".to_vec()), (5 + 11, b"two".to_vec())]
        );
        // What another use of the file left is not taken for records.
        assert!(read_records(&bytes, 5, Some(8)).records.is_empty());
        assert!(read_records(&bytes, 5, None).records.is_empty());
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

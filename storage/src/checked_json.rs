//! Small state files (producer snapshots, clean-shutdown marks, recovery
//! points) as JSON behind a CRC: the first line is the CRC-32 of the JSON that follows, in
//! hex, so a torn or damaged file is recognised and skipped, never half
//! believed.

use std::io::IoSlice;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::LogError;
use super::io::{Storage, read_full_at};

/// Writes `value` to `path` (replacing what was there) and syncs the file.
pub fn write<T: Serialize>(storage: &dyn Storage, path: &Path, value: &T) -> Result<(), LogError> {
    let json = serde_json::to_vec(value)
        .map_err(|e| LogError::corrupt(path, 0, format!("cannot encode: {e}")))?;
    let crc = format!("{:08x}\n", crc32fast::hash(&json));
    let file = storage
        .open(path)
        .map_err(|e| LogError::io_or_resource("open", path, e))?;
    // A file torn by a failed write fails its CRC and is skipped when read,
    // so a full disk here leaves nothing that needs cutting back.
    file.truncate(0)
        .and_then(|()| file.append(&[IoSlice::new(crc.as_bytes()), IoSlice::new(&json)]))
        .map_err(|e| LogError::io_or_resource("write", path, e))?;
    file.sync().map_err(|e| LogError::io("fsync", path, e))
}

/// The value in `path`; `None` when the file is damaged (its CRC or JSON
/// does not check out).
pub fn read<T: DeserializeOwned>(
    storage: &dyn Storage,
    path: &Path,
) -> Result<Option<T>, LogError> {
    let file = storage
        .open(path)
        .map_err(|e| LogError::io("open", path, e))?;
    let len = file.len().map_err(|e| LogError::io("stat", path, e))?;
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let n =
        read_full_at(file.as_ref(), &mut bytes, 0).map_err(|e| LogError::io("read", path, e))?;
    bytes.truncate(n);
    Ok(parse(&bytes))
}

/// The value in `dir/name` if `listing` (the names in `dir`, as the caller
/// listed them) has that file; `None` when it has not, or when the file is
/// damaged (logged as a damaged `what`, then ignored).
pub fn read_listed<T: DeserializeOwned>(
    storage: &dyn Storage,
    dir: &Path,
    listing: &[String],
    name: &str,
    what: &str,
) -> Result<Option<T>, LogError> {
    if !listing.iter().any(|listed| listed == name) {
        return Ok(None);
    }
    let path = dir.join(name);
    let value = read(storage, &path)?;
    if value.is_none() {
        tracing::warn!(path = %path.display(), "{what} damaged; ignored");
    }
    Ok(value)
}

/// Removes `dir/name` durably (the directory is synced) if `listing` has it.
pub fn remove_listed(
    storage: &dyn Storage,
    dir: &Path,
    listing: &[String],
    name: &str,
) -> Result<(), LogError> {
    if !listing.iter().any(|listed| listed == name) {
        return Ok(());
    }
    let path = dir.join(name);
    storage
        .remove_file(&path)
        .and_then(|()| storage.sync_dir(dir))
        .map_err(|e| LogError::io("remove", &path, e))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let crc = u32::from_str_radix(std::str::from_utf8(&bytes[..newline]).ok()?, 16).ok()?;
    let json = &bytes[newline + 1..];
    (crc32fast::hash(json) == crc).then(|| serde_json::from_slice(json).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStorage;

    #[test]
    fn a_value_comes_back_and_a_damaged_file_reads_as_none() {
        let storage = MemStorage::default();
        let path = Path::new("/p/state");
        write(&storage, path, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(
            read::<Vec<u32>>(&storage, path).unwrap(),
            Some(vec![1, 2, 3])
        );
        let mut bytes = storage.contents(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        storage.set_contents(path, bytes);
        assert_eq!(read::<Vec<u32>>(&storage, path).unwrap(), None);
    }
}

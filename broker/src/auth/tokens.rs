//! Static bearer tokens: the token file, its lookup and its reload.
//!
//! The file holds one client a line, `NAME sha256:HEX`, where HEX is the
//! SHA-256 of the client's token in lowercase or uppercase hex (what
//! `printf %s "$TOKEN" | sha256sum` prints); blank lines and lines starting
//! with `#` are skipped. Only hashes are kept, so the file (and a memory
//! dump) reveals no token.
//!
//! A presented token is hashed and compared with every entry in constant
//! time, so timing tells nothing about how close a guess came. The file is
//! checked for changes (size, modification time) every `reload_interval`;
//! a changed file replaces the tokens for the requests that follow, and
//! one that cannot be read or parsed keeps the previous tokens and is
//! logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{AuthError, Credential, Principal, Refusal};
use crate::file_watch::{Stamp, spawn_periodic_check, stamp};

const HASH_PREFIX: &str = "sha256:";
const HASH_BYTES: usize = 32;

/// The tokens of the token file, kept current.
#[derive(Debug)]
pub(crate) struct TokenStore {
    file: PathBuf,
    reload_interval: Duration,
    entries: RwLock<Arc<[Entry]>>,
    /// The file's size and modification time when `entries` were read.
    loaded: Mutex<Stamp>,
}

/// One client: its name and its token's hash.
struct Entry {
    name: String,
    hash: [u8; HASH_BYTES],
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    pub(crate) fn load(file: &Path, reload_interval: Duration) -> Result<Arc<Self>, AuthError> {
        let stamp = stamp(file);
        let entries = read(file)?;
        tracing::info!(
            file = %file.display(),
            clients = entries.len(),
            "bearer tokens loaded"
        );
        Ok(Arc::new(Self {
            file: file.to_owned(),
            reload_interval,
            entries: RwLock::new(entries.into()),
            loaded: Mutex::new(stamp),
        }))
    }

    /// The principal whose token this is.
    pub(crate) fn principal(&self, token: &[u8]) -> Result<Principal, Refusal> {
        let presented = sha256(token);
        let entries = self.entries.read().clone();
        // Every entry is compared, found or not: the time taken does not
        // depend on where (or whether) the token matched.
        let mut found = None;
        for entry in entries.iter() {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found
            .map(|entry| Principal::new(entry.name.clone(), Credential::Token))
            .ok_or(Refusal::UnknownToken)
    }

    /// Rereads the file if it changed since it was read. Returns whether
    /// it did; on an error the previous tokens stay.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, AuthError> {
        let now = stamp(&self.file);
        if *self.loaded.lock() == now {
            return Ok(false);
        }
        let entries = read(&self.file)?;
        *self.entries.write() = entries.into();
        *self.loaded.lock() = now;
        Ok(true)
    }

    /// Checks the file every `reload_interval` until `stop`.
    pub(crate) fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        spawn_periodic_check(self, self.reload_interval, stop, |store| {
            match store.reload_if_changed() {
                Ok(true) => tracing::info!(
                    file = %store.file.display(),
                    clients = store.entries.read().len(),
                    "bearer tokens reloaded"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "token file changed but cannot be loaded; the previous tokens stay in use"
                ),
            }
        });
    }
}

fn read(path: &Path) -> Result<Vec<Entry>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::TokenFileRead {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, reason)| AuthError::TokenFileLine {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// The entries of a token file, or the (1-based) line that is wrong and why.
fn parse(text: &str) -> Result<Vec<Entry>, (usize, &'static str)> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(name), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((line_number, "expected `NAME sha256:HEX`"));
        };
        let hash = hash
            .strip_prefix(HASH_PREFIX)
            .ok_or((line_number, "the hash must start with `sha256:`"))?;
        let hash =
            decode_hash(hash).ok_or((line_number, "the hash must be 64 hex digits (a SHA-256)"))?;
        if entries.iter().any(|e| e.hash == hash) {
            return Err((
                line_number,
                "this token's hash is already given to another name",
            ));
        }
        entries.push(Entry {
            name: name.to_owned(),
            hash,
        });
    }
    Ok(entries)
}

fn decode_hash(hex: &str) -> Option<[u8; HASH_BYTES]> {
    if hex.len() != HASH_BYTES * 2 {
        return None;
    }
    let mut hash = [0; HASH_BYTES];
    for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(hash)
}

fn sha256(bytes: &[u8]) -> [u8; HASH_BYTES] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut hash = [0; HASH_BYTES];
    hash.copy_from_slice(digest.as_ref());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf %s secret | sha256sum`
    const SECRET_HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn the_hash_is_sha256_of_the_token_as_sha256sum_prints_it() {
        let expected = decode_hash(SECRET_HASH).expect("64 hex digits");
        assert_eq!(sha256(b"secret"), expected);
    }

    #[test]
    fn a_token_file_parses_and_names_its_clients() {
        let text = format!(
            "# clients\n\nalice sha256:{SECRET_HASH}\n  bob   sha256:{}  \n",
            "AB".repeat(32)
        );
        let entries = parse(&text).expect("a valid file");
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(entries[1].hash, [0xab; 32]);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let good = format!("alice sha256:{SECRET_HASH}\n");
        for (bad, reason) in [
            ("alice".to_owned(), "expected"),
            (format!("alice {SECRET_HASH}"), "sha256:"),
            ("alice sha256:abc".to_owned(), "64 hex"),
            (format!("alice sha256:{}", "zz".repeat(32)), "64 hex"),
            (format!("alice sha256:{SECRET_HASH} extra"), "expected"),
            (format!("bob sha256:{SECRET_HASH}"), "already"),
        ] {
            let Err((line, why)) = parse(&format!("{good}{bad}\n")) else {
                panic!("{bad} was accepted");
            };
            assert_eq!(line, 2, "{bad}");
            assert!(why.contains(reason), "{bad}: {why}");
        }
    }
}

//! Bearer tokens: the secret a client sends as `authorization: Bearer
//! <token>` metadata on every call to a broker that authenticates tokens.
//!
//! A token is given as it is ([`BearerToken::new`]) or as a file that
//! holds it ([`BearerToken::from_file`]), such as a Kubernetes projected
//! ServiceAccount token, which the kubelet replaces before it expires. A
//! file is checked again at most every [`TOKEN_FILE_CHECK_INTERVAL`], by
//! the call that finds the check due: a `stat`, and a read only when its
//! size, modification time or inode changed. So calls make no system call
//! in between, and a client idle for longer than a token's lifetime never
//! sends the expired one it read last (a background refresh would have
//! needed a runtime and a task to stop). A file that cannot be read, or
//! holds no usable token, leaves the previous token in use, with a WARN.
//!
//! Invariant: the token never appears in a `Debug` or `Display` output or
//! a log line; the metadata value is marked sensitive, so HTTP/2 does not
//! put it in its header compression table either.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel that adds the client's bearer token (if any) to each call:
/// what every service stub of a client sends through, and what
/// [`crate::Client::connect_authorized_channel`] gives callers that speak
/// gRPC themselves.
pub type AuthorizedChannel = InterceptedService<Channel, Authorize>;

pub(crate) type Transport = AuthorizedChannel;

/// How often [`BearerToken::from_file`] checks its file for a new token.
/// Kubernetes replaces a projected token when 80% of its lifetime (at
/// least 10 minutes) has passed, so the old one stays valid for minutes
/// after the file changes.
pub const TOKEN_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Largest token file read: a JWT is a few KiB; anything much larger is
/// not a token file.
const TOKEN_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A bearer token for [`crate::ClientOptions::bearer_token`]: a fixed one,
/// or one read from a file and reread when the file changes. Clones share
/// the file's current token. Its `Debug` hides the token.
#[derive(Clone)]
pub struct BearerToken {
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// `Bearer <token>`, ready to send.
    Fixed(AsciiMetadataValue),
    File(Arc<TokenFile>),
}

/// A token that cannot be sent in gRPC metadata (empty, or not visible
/// ASCII). The token itself is not in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a bearer token must be non-empty visible ASCII")]
pub struct InvalidBearerToken;

/// Why a token file gives no token. The token is never in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file cannot be opened or read.
    #[error("cannot read the token file {}: {source}", path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// What reading it failed with.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than a token file can be.
    #[error("the token file {} is larger than {TOKEN_FILE_BYTES_MAX} bytes", path.display())]
    TooLarge {
        /// The token file.
        path: PathBuf,
    },
    /// The file holds no token that metadata can carry.
    #[error("the token file {} holds no usable token", path.display())]
    Invalid {
        /// The token file.
        path: PathBuf,
        /// Why its contents are no token.
        #[source]
        source: InvalidBearerToken,
    },
}

impl BearerToken {
    /// A token as the broker's token file or identity provider issued it;
    /// surrounding whitespace (a trailing newline from a file) is dropped.
    pub fn new(token: &str) -> Result<Self, InvalidBearerToken> {
        Ok(Self {
            source: Source::Fixed(header(token)?),
        })
    }

    /// The token held in `path`, read now and again whenever the file
    /// changes (checked at most every [`TOKEN_FILE_CHECK_INTERVAL`]).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        Self::from_file_checked_every(path, TOKEN_FILE_CHECK_INTERVAL)
    }

    /// [`Self::from_file`], checking the file at most every `interval`.
    pub fn from_file_checked_every(
        path: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<Self, TokenFileError> {
        let path = path.into();
        let stamp = stamp(&path);
        let header = read(&path)?;
        Ok(Self {
            source: Source::File(Arc::new(TokenFile {
                path,
                interval,
                state: Mutex::new(FileState {
                    header,
                    stamp,
                    checked: Instant::now(),
                }),
            })),
        })
    }

    /// `Bearer <token>` as it is to be sent now.
    fn header(&self) -> AsciiMetadataValue {
        match &self.source {
            Source::Fixed(header) => header.clone(),
            Source::File(file) => file.header(),
        }
    }
}

impl PartialEq for BearerToken {
    fn eq(&self, other: &Self) -> bool {
        match (&self.source, &other.source) {
            (Source::Fixed(a), Source::Fixed(b)) => a == b,
            (Source::File(a), Source::File(b)) => a.path == b.path && a.interval == b.interval,
            _ => false,
        }
    }
}

impl Eq for BearerToken {}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Fixed(_) => f.write_str("BearerToken(<redacted>)"),
            Source::File(file) => write!(f, "BearerToken(<redacted>, from {:?})", file.path),
        }
    }
}

impl std::str::FromStr for BearerToken {
    type Err = InvalidBearerToken;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Self::new(token)
    }
}

fn header(token: &str) -> Result<AsciiMetadataValue, InvalidBearerToken> {
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidBearerToken);
    }
    let mut header: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_invalid| InvalidBearerToken)?;
    header.set_sensitive(true);
    Ok(header)
}

/// A token file and the token last read from it.
struct TokenFile {
    path: PathBuf,
    /// Least time between two checks of the file.
    interval: Duration,
    /// Held only to read or update the state, never across file I/O.
    state: Mutex<FileState>,
}

struct FileState {
    header: AsciiMetadataValue,
    /// The file when `header` was read.
    stamp: Stamp,
    /// When the file was last checked.
    checked: Instant,
}

/// What tells the file changed: size, modification time and (on Unix)
/// inode, following symlinks, so the kubelet's swap of a projected
/// volume's `..data` link shows; `None` while it cannot be read.
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.len(), metadata.modified().ok()?, inode))
}

impl TokenFile {
    fn header(&self) -> AsciiMetadataValue {
        let loaded = {
            let mut state = self.state.lock();
            if state.checked.elapsed() < self.interval {
                return state.header.clone();
            }
            // Calls that come while this one checks send the current token.
            state.checked = Instant::now();
            state.stamp
        };
        let now = stamp(&self.path);
        if now != loaded {
            match read(&self.path) {
                Ok(header) => {
                    let mut state = self.state.lock();
                    state.header = header;
                    state.stamp = now;
                    tracing::info!(file = %self.path.display(), "bearer token file reread");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "the bearer token file changed but gives no token; the previous token stays in use"
                ),
            }
        }
        self.state.lock().header.clone()
    }
}

fn read(path: &Path) -> Result<AsciiMetadataValue, TokenFileError> {
    let io = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(TOKEN_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > TOKEN_FILE_BYTES_MAX {
        return Err(TokenFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    header(&text).map_err(|source| TokenFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Adds the bearer token to each call (the interceptor of an
/// [`AuthorizedChannel`]).
#[derive(Debug, Clone, Default)]
pub struct Authorize {
    token: Option<BearerToken>,
}

impl Authorize {
    pub(crate) fn new(token: Option<BearerToken>) -> Self {
        Self { token }
    }
}

impl Interceptor for Authorize {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.header());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(token: &BearerToken) -> String {
        let request = Authorize::new(Some(token.clone()))
            .call(tonic::Request::new(()))
            .expect("the interceptor adds metadata");
        let sent = request.metadata().get("authorization").expect("sent");
        assert!(sent.is_sensitive());
        sent.to_str().expect("ASCII").to_owned()
    }

    #[test]
    fn a_token_is_sent_as_bearer_metadata_and_never_shown() {
        let token = BearerToken::new("s3cret-token\n").expect("a valid token");
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        let options = crate::ClientOptions::default().with_bearer_token(token.clone());
        assert!(!format!("{options:?}").contains("s3cret"));
        assert_eq!(sent(&token), "Bearer s3cret-token");
    }

    #[test]
    fn tokens_that_metadata_cannot_carry_are_refused() {
        for bad in ["", "  ", "two words", "caf\u{e9}", "a\u{7f}"] {
            assert_eq!(BearerToken::new(bad), Err(InvalidBearerToken), "{bad:?}");
        }
    }

    #[test]
    fn a_token_file_is_reread_when_it_changes_and_never_shown() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let token = BearerToken::from_file_checked_every(&path, Duration::ZERO).expect("a token");
        assert_eq!(sent(&token), "Bearer first-token");
        assert!(!format!("{token:?}").contains("first"), "{token:?}");

        // Rotated as the kubelet does it: a new file renamed over the old.
        let next = dir.path().join("token.next");
        std::fs::write(&next, "second-token-longer").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(sent(&token), "Bearer second-token-longer");
        // Clones share the file's token.
        assert_eq!(sent(&token.clone()), "Bearer second-token-longer");

        // A file that gives no token leaves the last one in use.
        std::fs::write(&path, "two words").expect("write");
        assert_eq!(sent(&token), "Bearer second-token-longer");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(sent(&token), "Bearer second-token-longer");
        std::fs::write(&path, "third").expect("write");
        assert_eq!(sent(&token), "Bearer third");
    }

    #[test]
    fn a_token_file_is_not_checked_again_before_its_interval() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token").expect("write");
        let token = BearerToken::from_file_checked_every(&path, Duration::from_secs(3600))
            .expect("a token");
        std::fs::write(&path, "second-token-longer").expect("write");
        assert_eq!(sent(&token), "Bearer first-token");
    }

    #[test]
    fn a_token_file_that_gives_no_token_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let missing = dir.path().join("missing");
        let error = BearerToken::from_file(&missing).expect_err("no file");
        assert!(matches!(error, TokenFileError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("missing"), "{error}");
        let blank = dir.path().join("blank");
        std::fs::write(&blank, "\n").expect("write");
        let error = BearerToken::from_file(&blank).expect_err("no token");
        assert!(matches!(error, TokenFileError::Invalid { .. }), "{error:?}");
        let large = dir.path().join("large");
        std::fs::write(&large, "a".repeat(70_000)).expect("write");
        let error = BearerToken::from_file(&large).expect_err("too large");
        assert!(
            matches!(error, TokenFileError::TooLarge { .. }),
            "{error:?}"
        );
    }
}

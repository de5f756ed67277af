//! The file descriptor budget: at start the soft `RLIMIT_NOFILE` is raised
//! to the hard limit, and the gRPC and HTTP connections may use only part of
//! it, so that a crowd of clients cannot leave the broker unable to open
//! its next segment, index or metadata file.

use brook_engine::Invalid;
use brook_engine::config::{CONNECTIONS_MAX_DEFAULT_CAP, Limits};

/// Descriptors always left for the broker's own files beyond connections.
pub const FILES_RESERVE_MIN: u64 = 256;

/// The descriptor limit assumed where it cannot be read.
const NOFILE_FALLBACK: u64 = 1024;

/// Raises the soft descriptor limit to the hard one (logging both) and
/// returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    #[cfg(unix)]
    {
        let (soft, hard) = match rlimit::Resource::NOFILE.get() {
            Ok(limits) => limits,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the file descriptor limit");
                return NOFILE_FALLBACK;
            }
        };
        if soft >= hard {
            tracing::info!(soft, hard, "file descriptor limit");
            return soft;
        }
        match rlimit::increase_nofile_limit(hard) {
            Ok(raised) => {
                tracing::info!(
                    soft = raised,
                    hard,
                    was = soft,
                    "file descriptor limit raised"
                );
                raised
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the file descriptor limit");
                soft
            }
        }
    }
    #[cfg(not(unix))]
    {
        NOFILE_FALLBACK
    }
}

/// How many gRPC connections the broker allows with `nofile` descriptors:
/// the configured `connections_max`, or half of what the HTTP connections
/// and the files' reserve leave (at most `CONNECTIONS_MAX_DEFAULT_CAP`). A
/// configured value that leaves fewer than `FILES_RESERVE_MIN` descriptors
/// for files is refused.
pub fn connections_max(limits: &Limits, nofile: u64) -> Result<usize, Invalid> {
    let http = limits.http_connections_max as u64;
    let room = nofile.saturating_sub(http);
    match limits.connections_max {
        Some(0) => Err(Invalid::new("max_connections", "must be at least 1")),
        Some(max) if (max as u64).saturating_add(FILES_RESERVE_MIN) > room => Err(Invalid::new(
            "max_connections",
            format!(
                "{max} connections and {http} HTTP connections leave fewer than {FILES_RESERVE_MIN} \
                 of the {nofile} file descriptors for the broker's files; lower it or raise the \
                 descriptor limit (ulimit -n)"
            ),
        )),
        Some(max) => Ok(max),
        None => {
            let half = room.saturating_sub(FILES_RESERVE_MIN) / 2;
            Ok((half as usize).clamp(1, CONNECTIONS_MAX_DEFAULT_CAP))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections_max: Option<usize>) -> Limits {
        let mut limits = Limits::default();
        limits.connections_max = connections_max;
        limits.http_connections_max = 64;
        limits
    }

    #[test]
    fn the_default_leaves_at_least_half_for_files_and_is_capped() {
        let max = connections_max(&limits(None), 1024).unwrap();
        assert_eq!(max, (1024 - 64 - 256) / 2);
        assert_eq!(
            connections_max(&limits(None), 1 << 20).unwrap(),
            CONNECTIONS_MAX_DEFAULT_CAP
        );
        assert_eq!(connections_max(&limits(None), 10).unwrap(), 1);
    }

    #[test]
    fn a_configured_maximum_must_leave_room_for_files() {
        assert_eq!(connections_max(&limits(Some(700)), 1024).unwrap(), 700);
        let error = connections_max(&limits(Some(800)), 1024).unwrap_err();
        assert_eq!(error.field, "max_connections");
        assert!(error.reason.contains("1024"), "{}", error.reason);
        assert!(connections_max(&limits(Some(0)), 1024).is_err());
    }
}

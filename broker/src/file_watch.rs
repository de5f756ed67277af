//! Files the broker rereads when they change while it runs (the TLS
//! certificate and key, the token file): what tells that a file changed,
//! and the periodic check.
//!
//! A file's stamp is its size and modification time; it follows symlinks,
//! so the kubelet's swap of a mounted Secret's `..data` link shows as a
//! change. Rereading happens on a blocking thread, off the async workers.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// What tells a file changed: its size and modification time (`None` while
/// it cannot be read).
pub(crate) type Stamp = Option<(u64, SystemTime)>;

pub(crate) fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?)))
}

/// Runs `check` on `target` every `every` (at least 10 ms), on a blocking
/// thread, until `stop` or until `target` is dropped. `check` rereads what
/// changed and logs the outcome.
pub(crate) fn spawn_periodic_check<T: Send + Sync + 'static>(
    target: &Arc<T>,
    every: Duration,
    stop: CancellationToken,
    check: fn(&T),
) {
    let target: Weak<T> = Arc::downgrade(target);
    let every = every.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(target) = target.upgrade() else {
                return;
            };
            if let Err(e) = tokio::task::spawn_blocking(move || check(&target)).await {
                tracing::warn!(error = %e, "checking a file for changes failed");
            }
        }
    });
}

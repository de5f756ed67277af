//! One clock for the heartbeats of every partition group a broker leads.
//!
//! openraft times each group's heartbeats on its own: a broker leading
//! hundreds of partitions sent each peer hundreds of heartbeats at moments
//! spread over the interval, each a call of its own, and an idle cluster
//! of 256 partitions kept a quarter of its two cores busy with them.
//! Driven by one clock, a broker's heartbeats leave together, and the
//! connection to each peer gathers them into a few calls
//! (`AppendEntriesBatch`, see `network::gather`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::ServerState;
use parking_lot::Mutex;
use tokio::time::MissedTickBehavior;

use super::PartitionRaft;

/// Sends a heartbeat from every registered group that leads, every
/// interval. Clones share the clock, which stops when the last is dropped.
#[derive(Clone)]
pub struct HeartbeatClock {
    inner: Arc<Inner>,
}

struct Inner {
    interval: Duration,
    /// The groups it drives; a group whose Raft stopped is dropped at the
    /// next tick.
    groups: Mutex<Vec<PartitionRaft>>,
}

impl std::fmt::Debug for HeartbeatClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatClock")
            .field("interval", &self.inner.interval)
            .field("groups", &self.inner.groups.lock().len())
            .finish()
    }
}

impl HeartbeatClock {
    /// Starts the clock on the current runtime.
    pub fn start(interval: Duration) -> Self {
        let inner = Arc::new(Inner {
            interval,
            groups: Mutex::default(),
        });
        tokio::spawn(tick(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// How often the groups it drives send heartbeats.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// Drives the heartbeats of `raft` (started with openraft's own
    /// heartbeats off) from now on, until it stops.
    pub(crate) fn register(&self, raft: PartitionRaft) {
        self.inner.groups.lock().push(raft);
    }

    /// How many groups it drives.
    pub fn groups(&self) -> usize {
        self.inner.groups.lock().len()
    }
}

async fn tick(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|inner| inner.interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // Groups are only added while a tick runs (and removed only
        // here), so the indexes of this copy stay valid.
        let groups = inner.groups.lock().clone();
        let mut stopped = Vec::new();
        for (index, raft) in groups.iter().enumerate() {
            let (state, running) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                (metrics.state, metrics.running_state.is_ok())
            };
            let stopped_now = !running
                || state == ServerState::Shutdown
                || (state == ServerState::Leader && raft.trigger().heartbeat().await.is_err());
            if stopped_now {
                stopped.push(index);
            }
        }
        if !stopped.is_empty() {
            let mut groups = inner.groups.lock();
            for index in stopped.into_iter().rev() {
                groups.remove(index);
            }
        }
    }
}

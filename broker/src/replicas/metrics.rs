//! The broker's cluster metrics from its partition replicas: how many run
//! and lead here, elections, catching up, and how far followers are
//! behind the partitions led here; and how many slots of consumer groups
//! it coordinates. Sampled every second from each
//! replica's Raft metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Replicas;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Replicas {
    /// Samples the replicas into the broker's metrics until `stop`.
    pub(super) async fn report_metrics(self: Arc<Self>, stop: CancellationToken) {
        // Each replica's term at the last sample, by group: terms only
        // grow, so their growth counts the elections between samples.
        let mut terms: HashMap<String, u64> = HashMap::new();
        loop {
            self.sample(&mut terms);
            tokio::select! {
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    fn sample(&self, terms: &mut HashMap<String, u64>) {
        let replicas: Vec<_> = self
            .running
            .lock()
            .values()
            .flatten()
            .map(|replication| replication.replica().clone())
            .collect();
        let metrics = self.broker.metrics();
        let mut led = 0_i64;
        let mut lag_max = 0_u64;
        let mut elections = 0_u64;
        let mut seen = HashMap::with_capacity(replicas.len());
        for replica in &replicas {
            let status = replica.status();
            if status.leading {
                led += 1;
                lag_max = lag_max.max(status.followers_behind_max);
            }
            // A replica seen for the first time counts from its term now:
            // its earlier terms were counted before a restart, or belong
            // to the group's history.
            let before = terms.get(replica.group()).copied().unwrap_or(status.term);
            elections += status.term.saturating_sub(before);
            seen.insert(replica.group().to_owned(), status.term);
        }
        *terms = seen;
        metrics
            .partition_replicas
            .set(i64::try_from(replicas.len()).unwrap_or(i64::MAX));
        metrics.partitions_led.set(led);
        metrics.partition_elections.inc_by(elections);
        metrics
            .replica_lag_max
            .set(i64::try_from(lag_max).unwrap_or(i64::MAX));
        metrics
            .replicas_catching_up
            .set(i64::try_from(self.catching_up().len()).unwrap_or(i64::MAX));
        metrics
            .coordinated_group_slots
            .set(i64::try_from(self.coordinating.borrow().len()).unwrap_or(i64::MAX));
    }
}

//! Client quotas as the broker's operations: setting and removing them
//! (durably in the metadata store, then in memory, under the admin lock so
//! the two agree), listing them, and charging a request's bytes to its
//! principal.

use std::time::Duration;

use super::Broker;
use crate::error::{Invalid, QuotaError, blocking};
use crate::quota::{self, Direction, QUOTAS_MAX, QuotaLimits, QuotaTarget};

impl Broker {
    /// Sets a quota, replacing the one `target` had; it applies from the
    /// principal's next request.
    pub async fn set_quota(
        &self,
        target: QuotaTarget,
        limits: QuotaLimits,
    ) -> Result<(), QuotaError> {
        quota::check(&target, &limits)?;
        let _admin = self.admin.lock().await;
        if self.is_stopping() {
            return Err(QuotaError::ShuttingDown);
        }
        if self.quotas.get(&target).is_none() && self.quotas.len() >= QUOTAS_MAX {
            return Err(QuotaError::TooMany { max: QUOTAS_MAX });
        }
        let meta = self.meta.clone();
        let stored = target.clone();
        blocking(move || meta.put_quota(&stored, &limits)).await??;
        tracing::info!(
            quota = %target,
            produce_bytes_per_second = ?limits.produce_bytes_per_second,
            fetch_bytes_per_second = ?limits.fetch_bytes_per_second,
            "quota set"
        );
        self.quotas.set(target, limits);
        Ok(())
    }

    /// Removes a quota; the principal's next request is not held back for it.
    pub async fn remove_quota(&self, target: QuotaTarget) -> Result<(), QuotaError> {
        if let QuotaTarget::Principal(name) = &target {
            quota::check_principal(name)?;
        }
        let _admin = self.admin.lock().await;
        if self.is_stopping() {
            return Err(QuotaError::ShuttingDown);
        }
        if self.quotas.get(&target).is_none() {
            return Err(QuotaError::NotFound(target));
        }
        let meta = self.meta.clone();
        let stored = target.clone();
        blocking(move || meta.delete_quota(&stored)).await??;
        tracing::info!(quota = %target, "quota removed");
        self.quotas.remove(&target);
        Ok(())
    }

    /// Whether a quota may be set, by the rules `set_quota` applies (a
    /// cluster checks before it commits the change).
    pub fn check_quota(&self, target: &QuotaTarget, limits: &QuotaLimits) -> Result<(), Invalid> {
        quota::check(target, limits)
    }

    /// Every quota, the default first, then by principal.
    pub fn list_quotas(&self) -> Vec<(QuotaTarget, QuotaLimits)> {
        self.quotas.list()
    }

    /// Counts `bytes` of a request of `principal` (`quota::ANONYMOUS` when
    /// clients are not authenticated) and returns how long to hold its
    /// answer back for the principal's quota: zero without one.
    pub fn charge_quota(&self, principal: &str, direction: Direction, bytes: u64) -> Duration {
        self.metrics
            .principals
            .record_bytes(principal, direction, bytes);
        self.quotas.charge(principal, direction, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BrokerConfig, MetaBackend};

    fn limits(produce: Option<u64>) -> QuotaLimits {
        QuotaLimits {
            produce_bytes_per_second: produce,
            fetch_bytes_per_second: None,
        }
    }

    #[tokio::test]
    async fn quotas_are_kept_across_a_restart_and_apply_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            meta: MetaBackend::Disk,
            ..BrokerConfig::default()
        };
        let alice = QuotaTarget::Principal("alice".into());
        {
            let broker = Broker::open(config.clone()).await.unwrap();
            broker
                .set_quota(alice.clone(), limits(Some(1_000)))
                .await
                .unwrap();
            broker
                .set_quota(QuotaTarget::Default, limits(Some(5)))
                .await
                .unwrap();
            assert!(broker.charge_quota("alice", Direction::Produce, 10_100) > Duration::ZERO);
            broker.remove_quota(QuotaTarget::Default).await.unwrap();
            let missing = broker.remove_quota(QuotaTarget::Default).await;
            assert!(
                matches!(missing, Err(QuotaError::NotFound(_))),
                "{missing:?}"
            );
            broker.shutdown().await;
        }
        let broker = Broker::open(config).await.unwrap();
        assert_eq!(broker.list_quotas(), vec![(alice, limits(Some(1_000)))]);
        assert!(broker.charge_quota("alice", Direction::Produce, 10_100) > Duration::ZERO);
        assert_eq!(
            broker.charge_quota("bob", Direction::Produce, 10_100),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn a_quota_without_rates_or_with_a_zero_rate_is_refused_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_owned(),
            meta: MetaBackend::Memory,
            ..BrokerConfig::default()
        };
        let broker = Broker::open(config).await.unwrap();
        for refused in [limits(None), limits(Some(0))] {
            let result = broker
                .set_quota(QuotaTarget::Principal("alice".into()), refused)
                .await;
            assert!(matches!(result, Err(QuotaError::Invalid(_))), "{result:?}");
        }
        assert!(broker.list_quotas().is_empty());
    }
}

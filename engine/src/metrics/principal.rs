//! Traffic and throttling per principal: the bytes each one produced and
//! fetched, and how long its answers were held back for its quota.
//!
//! Invariant: the label set is bounded. The first `PRINCIPAL_LABELS_MAX`
//! principals seen since the broker started get a `principal` label of
//! their own; the ones after share `principal="other"`, so a flood of
//! names cannot grow the scrape without limit. The labels are the names
//! authentication established, never a credential.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use crate::quota::Direction;

/// Principals with a label of their own.
pub const PRINCIPAL_LABELS_MAX: usize = 1_000;
/// The label the principals beyond `PRINCIPAL_LABELS_MAX` share.
pub const OTHER_PRINCIPALS: &str = "other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabels {
    principal: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    principal: String,
    direction: &'static str,
}

#[derive(Debug)]
pub struct PrincipalMetrics {
    produced_bytes: Family<PrincipalLabels, Counter>,
    fetched_bytes: Family<PrincipalLabels, Counter>,
    throttle_seconds: Family<ThrottleLabels, Counter<f64, AtomicU64>>,
    /// The principals with a label of their own, first come; read per
    /// request, written once per new principal until it is full.
    labelled: RwLock<HashSet<String>>,
}

impl PrincipalMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            produced_bytes: Family::default(),
            fetched_bytes: Family::default(),
            throttle_seconds: Family::default(),
            labelled: RwLock::new(HashSet::new()),
        };
        registry.register_with_unit(
            "brook_principal_produced",
            "Record batch bytes of the produce requests of a principal (the first 1,000 principals; later ones as principal=\"other\")",
            Unit::Bytes,
            metrics.produced_bytes.clone(),
        );
        registry.register_with_unit(
            "brook_principal_fetched",
            "Record bytes returned to a principal by fetches and subscriptions (the first 1,000 principals; later ones as principal=\"other\")",
            Unit::Bytes,
            metrics.fetched_bytes.clone(),
        );
        registry.register_with_unit(
            "brook_principal_throttle",
            "Time answers to a principal were held back for its quota, by direction (produce, fetch)",
            Unit::Seconds,
            metrics.throttle_seconds.clone(),
        );
        metrics
    }

    /// Counts `bytes` a principal produced or was sent.
    pub fn record_bytes(&self, principal: &str, direction: Direction, bytes: u64) {
        let labels = PrincipalLabels {
            principal: self.label(principal),
        };
        match direction {
            Direction::Produce => self.produced_bytes.get_or_create(&labels).inc_by(bytes),
            Direction::Fetch => self.fetched_bytes.get_or_create(&labels).inc_by(bytes),
        };
    }

    /// Counts the time an answer to a principal was held back.
    pub fn record_throttle(&self, principal: &str, direction: Direction, held: Duration) {
        let labels = ThrottleLabels {
            principal: self.label(principal),
            direction: direction.name(),
        };
        self.throttle_seconds
            .get_or_create(&labels)
            .inc_by(held.as_secs_f64());
    }

    /// The principal's own name while there is room for it, else `other`.
    fn label(&self, principal: &str) -> String {
        if self.labelled.read().contains(principal) {
            return principal.to_owned();
        }
        let mut labelled = self.labelled.write();
        if labelled.len() < PRINCIPAL_LABELS_MAX {
            labelled.insert(principal.to_owned());
        }
        if labelled.contains(principal) {
            principal.to_owned()
        } else {
            OTHER_PRINCIPALS.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_past_the_bound_share_one_label() {
        let mut registry = Registry::default();
        let metrics = PrincipalMetrics::register(&mut registry);
        for i in 0..PRINCIPAL_LABELS_MAX + 50 {
            metrics.record_bytes(&format!("p{i}"), Direction::Produce, 1);
        }
        metrics.record_throttle("p0", Direction::Fetch, Duration::from_millis(1_500));
        metrics.record_throttle(
            &format!("p{PRINCIPAL_LABELS_MAX}"),
            Direction::Produce,
            Duration::from_millis(500),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("brook_principal_produced_bytes_total{"))
            .count();
        assert_eq!(series, PRINCIPAL_LABELS_MAX + 1, "{text}");
        assert!(
            text.contains("brook_principal_produced_bytes_total{principal=\"other\"} 50"),
            "{text}"
        );
        assert!(text.contains(
            "brook_principal_throttle_seconds_total{principal=\"p0\",direction=\"fetch\"} 1.5"
        ));
        assert!(text.contains(
            "brook_principal_throttle_seconds_total{principal=\"other\",direction=\"produce\"} 0.5"
        ));
        // A principal labelled early keeps its label.
        assert_eq!(metrics.label("p3"), "p3");
    }
}

//! The HTTP side: `/health` (alive, no partition poisoned or damaged;
//! names topic directories quarantined at start and partitions that cannot
//! write for want of disk space or file descriptors), `/live` (what a
//! liveness probe asks: is there anything a restart would mend), `/ready`
//! (recovery done and gRPC serving; not while stopping) and `/metrics`
//! (Prometheus/OpenMetrics text).
//!
//! `listener` serves them with bounds on connections and timeouts.
//!
//! It answers from before the broker is open, so that an orchestrator sees
//! "alive, not ready" during a long recovery instead of a refused connection.

mod listener;

pub use listener::{HttpLimits, serve};

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use brook_cluster::MetaNode;
use brook_engine::Broker;

use crate::replicas::Replicas;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Recovering the data directory; gRPC not yet serving.
    Starting = 0,
    Ready = 1,
    /// Draining after a shutdown signal.
    Stopping = 2,
}

/// Whether a broker takes traffic (`/ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Recovering the data directory.
    Starting,
    /// In a cluster, not joined yet: why.
    Joining(&'static str),
    /// In a cluster, these partitions' replicas are catching up.
    CatchingUp(Vec<String>),
    Stopping,
}

/// What the HTTP endpoints report on; shared with the server that moves it
/// through its phases.
#[derive(Debug, Default)]
pub struct ServerStatus {
    phase: AtomicU8,
    /// Set once recovery finished.
    broker: OnceLock<Arc<Broker>>,
    /// Set once the broker joined its cluster's metadata group.
    meta: OnceLock<MetaNode>,
    /// In a cluster: the replicas `/ready` waits for to catch up.
    replicas: OnceLock<Arc<Replicas>>,
}

impl ServerStatus {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Stopping,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The broker's member of the metadata group: `/ready` waits for it to
    /// know a leader.
    pub fn set_meta(&self, meta: MetaNode) {
        let _already = self.meta.set(meta);
    }

    /// The broker's replicas: `/ready` waits for them to catch up.
    pub fn set_replicas(&self, replicas: Arc<Replicas>) {
        let _already = self.replicas.set(replicas);
    }

    /// Whether the broker takes traffic, as `/ready` reports it.
    pub fn readiness(&self) -> Readiness {
        match self.phase() {
            Phase::Starting => Readiness::Starting,
            Phase::Stopping => Readiness::Stopping,
            Phase::Ready if self.meta.get().is_some_and(|meta| meta.leader().is_none()) => {
                Readiness::Joining(
                    "the cluster's metadata group has no leader this broker knows of",
                )
            }
            Phase::Ready => match self.replicas.get() {
                None => Readiness::Ready,
                Some(replicas) if !replicas.joined() => Readiness::Joining(
                    "this broker's registration with the cluster is not applied here yet",
                ),
                Some(replicas) => {
                    let behind = replicas.catching_up();
                    if behind.is_empty() {
                        Readiness::Ready
                    } else {
                        Readiness::CatchingUp(behind)
                    }
                }
            },
        }
    }

    pub fn set_broker(&self, broker: Arc<Broker>) {
        // A second broker for the same status is a programmer error; the
        // first one stays.
        let _ = self.broker.set(broker);
    }
}

/// Partitions a `/ready` answer names at most.
const READY_PARTITIONS_LISTED: usize = 20;

pub fn router(status: Arc<ServerStatus>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/live", get(liveness))
        .route("/ready", get(readiness))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn health(State(status): State<Arc<ServerStatus>>) -> impl IntoResponse {
    let Some(broker) = status.broker.get() else {
        return (StatusCode::OK, Json(json!({ "status": "starting" })));
    };
    // Quarantined topic directories need an operator but do not stop the
    // broker from serving: they are named, and health stays 200.
    let quarantined: Vec<_> = broker
        .quarantined_topics()
        .iter()
        .map(|q| json!({ "topic": q.topic, "path": q.path.display().to_string() }))
        .collect();
    let poisoned = poisoned_partitions(broker);
    // Damaged partitions lost acknowledged records: they refuse reads and
    // writes until an operator accepts the loss.
    let damaged: Vec<_> = broker
        .damaged_partitions()
        .into_iter()
        .map(|(topic, partition, damage)| {
            let lost = damage.lost_offsets();
            json!({
                "topic": topic,
                "partition": partition,
                "reason": damage.to_string(),
                "lost_from": lost.as_ref().map(|r| r.start),
                "lost_to": lost.as_ref().map(|r| r.end - 1),
            })
        })
        .collect();
    // Partitions that cannot write for want of disk space or descriptors:
    // an outage for their producers, but each clears by itself with its
    // next successful write, so they make the status `degraded`, not 503.
    let cannot_write: Vec<_> = broker
        .partitions_short_of_resources()
        .into_iter()
        .map(|(topic, partition, shortage)| {
            json!({
                "topic": topic,
                "partition": partition,
                "resource": shortage.resource.to_string(),
                "reason": shortage.reason,
                "since_ms": shortage.since_ms,
            })
        })
        .collect();
    let (code, state) = if !damaged.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "damaged")
    } else if !poisoned.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "poisoned")
    } else if !cannot_write.is_empty() {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let mut body = json!({ "status": state });
    if !poisoned.is_empty() {
        body["partitions"] = json!(poisoned);
    }
    if !damaged.is_empty() {
        body["damaged"] = json!(damaged);
    }
    if !cannot_write.is_empty() {
        body["cannot_write"] = json!(cannot_write);
    }
    if !quarantined.is_empty() {
        body["quarantined"] = json!(quarantined);
    }
    (code, Json(body))
}

fn poisoned_partitions(broker: &Broker) -> Vec<serde_json::Value> {
    broker
        .poisoned_partitions()
        .into_iter()
        .map(|(topic, partition, reason)| {
            json!({ "topic": topic, "partition": partition, "reason": reason })
        })
        .collect()
}

/// For a liveness probe: 503 only when a restart would mend something, a
/// partition poisoned by a write or fsync whose outcome is unknown.
/// Damaged partitions, full disks and quarantined topics make `/health`
/// report them, but restarting would not help them, and would take every
/// other partition down with it.
async fn liveness(State(status): State<Arc<ServerStatus>>) -> impl IntoResponse {
    let Some(broker) = status.broker.get() else {
        return (StatusCode::OK, Json(json!({ "status": "starting" })));
    };
    let poisoned = poisoned_partitions(broker);
    if poisoned.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "poisoned", "partitions": poisoned })),
        )
    }
}

async fn readiness(State(status): State<Arc<ServerStatus>>) -> impl IntoResponse {
    let (reason, body) = match status.readiness() {
        Readiness::Ready => return (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Readiness::Starting => (
            "starting",
            json!({ "reason": "recovering the data directory" }),
        ),
        Readiness::Joining(reason) => ("joining", json!({ "reason": reason })),
        Readiness::CatchingUp(behind) => (
            "catching_up",
            json!({
                "reason": format!(
                    "{} partition replicas on this broker are catching up with their leaders",
                    behind.len()
                ),
                "partitions": behind.iter().take(READY_PARTITIONS_LISTED).collect::<Vec<_>>(),
            }),
        ),
        Readiness::Stopping => ("stopping", json!({ "reason": "shutting down" })),
    };
    let mut body = body;
    body["status"] = json!(reason);
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

async fn metrics(State(status): State<Arc<ServerStatus>>) -> Response {
    let Some(broker) = status.broker.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    match broker.metrics().render(broker) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

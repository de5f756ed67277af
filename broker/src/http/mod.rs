//! The HTTP side: `/health` (alive and no partition poisoned) and `/ready`
//! (recovery done and the gRPC listener accepting; not while stopping).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use crate::broker::Broker;

#[derive(Debug, Clone)]
struct HttpState {
    broker: Arc<Broker>,
    ready: Arc<AtomicBool>,
}

/// The router; `ready` is set by the server once it accepts gRPC calls and
/// cleared when it starts stopping.
pub fn router(broker: Arc<Broker>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(readiness))
        .with_state(HttpState { broker, ready })
}

async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    let poisoned = state.broker.poisoned_partitions();
    if poisoned.is_empty() {
        return (StatusCode::OK, Json(json!({ "status": "ok" })));
    }
    let partitions: Vec<_> = poisoned
        .into_iter()
        .map(|(topic, partition, reason)| json!({ "topic": topic, "partition": partition, "reason": reason }))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "poisoned", "partitions": partitions })),
    )
}

async fn readiness(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready" })),
        )
    }
}

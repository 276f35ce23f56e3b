//! Operations routes outside the base path: health and metrics.

use std::sync::atomic::Ordering;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::http::{AppState, envelope::ApiError};

pub(crate) async fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "UP"}))).into_response()
}

pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    // A store that refused a write refuses every later one: not ready until restarted.
    if state.ready.load(Ordering::Acquire) && !state.engine.store_stats().poisoned {
        (StatusCode::OK, axum::Json(json!({"status": "UP"}))).into_response()
    } else {
        ApiError::unavailable().into_response()
    }
}

/// Prometheus text format; a handful of gauges and counters does not need a metrics crate.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.engine.store_stats();
    let (users, sessions) = state.engine.live_actors();
    let body = format!(
        "# HELP latchkey_store_batches_total Batches committed by the group-commit writer.\n\
         # TYPE latchkey_store_batches_total counter\n\
         latchkey_store_batches_total {}\n\
         # HELP latchkey_store_fsyncs_total fsyncs issued by the group-commit writer.\n\
         # TYPE latchkey_store_fsyncs_total counter\n\
         latchkey_store_fsyncs_total {}\n\
         # HELP latchkey_live_user_actors User actors in memory.\n\
         # TYPE latchkey_live_user_actors gauge\n\
         latchkey_live_user_actors {}\n\
         # HELP latchkey_live_session_actors Session actors in memory.\n\
         # TYPE latchkey_live_session_actors gauge\n\
         latchkey_live_session_actors {}\n\
         # HELP latchkey_outbox_pending Messages queued for delivery, not yet sent or given up.\n\
         # TYPE latchkey_outbox_pending gauge\n\
         latchkey_outbox_pending {}\n",
        stats.batches,
        stats.fsyncs,
        users,
        sessions,
        state.engine.pending_deliveries()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

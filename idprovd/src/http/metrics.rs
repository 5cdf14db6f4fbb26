//! The operations endpoints: `/metrics` (OpenMetrics text), `/healthz` and
//! `/readyz` on the metrics listener, the request counters (by endpoint and
//! outcome) as middleware, and the readiness check on both listeners.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use idprov_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Daemon;
use crate::metrics::{MetricsConfig, StoreSnapshot};
use crate::storage::StoreHealth;

/// The rate-limit label of an error code, if it is one.
fn rate_limit_reason(code: ErrorCode) -> Option<&'static str> {
    match code {
        ErrorCode::RateLimited => Some("rate_limited"),
        ErrorCode::SlowDown => Some("slow_down"),
        ErrorCode::PendingFull => Some("pending_full"),
        ErrorCode::Busy => Some("busy"),
        _ => None,
    }
}

/// The route template a request matched, carried from the inner route
/// layer out to [`track`] on the response.
#[derive(Clone)]
struct Endpoint(String);

/// Route layer: remember which route template matched.
pub async fn mark_endpoint(path: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Some(p) = path {
        resp.extensions_mut()
            .insert(Endpoint(p.as_str().to_string()));
    }
    resp
}

/// Outer layer: count every answered request by endpoint and outcome.
pub async fn track(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let endpoint = resp
        .extensions()
        .get::<Endpoint>()
        .map(|e| e.0.as_str())
        .unwrap_or("unmatched");
    let code = resp.extensions().get::<ErrorCode>().copied();
    let status = resp.status();
    let outcome = match code {
        Some(c) => c.as_str(),
        None if status == StatusCode::ACCEPTED => "pending",
        None if status.is_success() => "ok",
        None => status.as_str(),
    };
    d.metrics.request(endpoint, outcome);
    if let Some(reason) = code.and_then(rate_limit_reason) {
        d.metrics.rate_limited(reason);
    }
    resp
}

/// `GET /readyz`: 200 when the store answers, the CA key signs what its
/// certificate verifies, provisioning is not paused and the clock is not
/// behind its high-water mark; 503 otherwise. The body says
/// which check failed.
pub async fn readyz(State(d): State<Arc<Daemon>>) -> Response {
    // A store that failed on I/O may still read: its health says whether
    // it takes writes.
    let snapshot = match d.core.store.status().health {
        StoreHealth::Ok => d.store_snapshot().await,
        StoreHealth::Unavailable { reason } => Err(format!(
            "store {} unavailable after an I/O error: {reason}",
            d.core.store.location()
        )),
    };
    let ca = d.pki.check_ca().map_err(|e| format!("{e:#}"));
    let store_check = match &snapshot {
        Ok(_) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    };
    let ca_check = match &ca {
        Ok(_) => serde_json::json!({ "ok": true, "fingerprint": d.pki.ca_fingerprint }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    };
    let prov_check = match &snapshot {
        Ok(s) if s.paused => serde_json::json!({
            "ok": false,
            "paused": true,
            "reason": s.pause_reason,
        }),
        Ok(_) => serde_json::json!({ "ok": true, "paused": false }),
        Err(_) => serde_json::json!({ "ok": false, "error": "store unavailable" }),
    };
    let clock = d.clock_state().await;
    let clock_check = match &clock {
        Ok(c) => serde_json::json!({
            "ok": !c.regressed,
            "now": c.now,
            "high_water": c.high_water,
        }),
        Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
    };
    let ready = snapshot.as_ref().is_ok_and(|s| !s.paused)
        && ca.is_ok()
        && clock.as_ref().is_ok_and(|c| !c.regressed);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "store": store_check,
            "ca": ca_check,
            "provisioning": prov_check,
            "clock": clock_check,
        },
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(d): State<Arc<Daemon>>) -> Response {
    let snapshot = match d.store_snapshot().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: store counts unavailable");
            StoreSnapshot::default()
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.metrics.render(&snapshot, &d.core.store.status()),
    )
        .into_response()
}

pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Bind the metrics listener if enabled (a port in use is a startup error:
/// silently running without metrics would hide it).
pub async fn bind(cfg: &MetricsConfig) -> anyhow::Result<Option<TcpListener>> {
    use anyhow::Context;
    if !cfg.enabled {
        return Ok(None);
    }
    let l = TcpListener::bind(cfg.listen).await.with_context(|| {
        format!(
            "binding the metrics listener {} (set metrics.listen, or metrics.enabled = false)",
            cfg.listen
        )
    })?;
    Ok(Some(l))
}

/// Serve `/metrics`, `/healthz` and `/readyz` until `shutdown`.
pub async fn serve(listener: TcpListener, d: Arc<Daemon>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route(READYZ, get(readyz))
        .with_state(d);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "metrics listener failed");
    }
}

/// Readiness path, on both listeners.
pub const READYZ: &str = "/readyz";

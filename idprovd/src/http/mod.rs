//! The HTTPS API: routing, per-request middleware (request id, tracing span,
//! time limit) and the per-connection information handlers may need.

pub mod admin;
pub mod alerts;
pub mod backup;
pub mod device;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod oob_import;
pub mod policy;
pub mod ratelimit;
pub mod setup;
pub mod x509;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use http::HeaderValue;
use idprov_proto::ErrorCode;
use tracing::Instrument;

use crate::Daemon;
use error::ApiError;

/// What the server knows of the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client certificate of a mutual-TLS connection, if one was sent.
    pub client_cert: Option<Arc<rustls_pki_types::CertificateDer<'static>>>,
    /// RFC 9266 `tls-exporter` value of this connection (32 bytes), checked
    /// against a proof's `cbt` claim (channel binding, monitor.rs).
    pub channel_binding: Option<[u8; idprov_proto::device::CHANNEL_BINDING_LEN]>,
}

/// The whole API.
///
/// `limits.request_timeout` bounds reading a request body ([`extract`]), not
/// the handler: a handler that has begun a store transaction always finishes
/// it and answers, so a timeout answer always means nothing was done.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .merge(device::routes())
        .merge(setup::routes())
        .merge(admin::routes())
        .merge(admin::stream_routes())
        .merge(alerts::routes())
        .merge(oob_import::routes())
        .merge(x509::routes())
        .merge(backup::routes())
        .merge(policy::routes())
        .route(metrics::READYZ, axum::routing::get(metrics::readyz))
        .route_layer(middleware::from_fn(metrics::mark_endpoint))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(
            d.clone(),
            ratelimit::limit_sources,
        ))
        .layer(middleware::from_fn_with_state(d.clone(), metrics::track))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn(request_id))
        .with_state(d)
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = crate::tokens::base64_id()[..12].to_string();
    let peer = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.peer.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        peer = %peer,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span.clone()))
        .await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The current request's id, so error bodies can carry it.
    pub static REQUEST_ID: String;
}

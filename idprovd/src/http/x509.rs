//! Routes of the X.509 lifecycle (docs/x509.md): the CRL, a device adding a
//! key, renewal over mutual TLS, and the administrator's key, certificate,
//! re-provisioning and registry-CA calls.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, header};
use idprov_proto::DeviceId;
use idprov_proto::admin::DecisionRequest;
use idprov_proto::admin::paths::DEVICES;
use idprov_proto::device::{ProvisionResponse, paths};
use idprov_proto::x509::{
    AddKeyRequest, AdminKeyAddRequest, MtlsRenewRequest, RegistryCaAddRequest, ReprovisionRequest,
    admin_paths,
};
use serde::Deserialize;

use super::ConnInfo;
use super::admin::AdminAuth;
use super::error::ApiError;
use super::extract::{JsonBody, Query};
use crate::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route(paths::CRL, get(crl))
        .route(paths::KEYS, post(add_key))
        .route(paths::RENEW_MTLS, post(renew_mtls))
        .route(&format!("{DEVICES}/{{id}}/keys"), post(admin_add_key))
        .route(
            &format!("{DEVICES}/{{id}}/keys/{{kid}}"),
            axum::routing::delete(admin_remove_key),
        )
        .route(
            &format!("{DEVICES}/{{id}}/keys/{{kid}}/revoke"),
            post(admin_revoke_key),
        )
        .route(
            &format!("{DEVICES}/{{id}}/certificates"),
            get(device_certificates),
        )
        .route(&format!("{DEVICES}/{{id}}/reprovision"), post(reprovision))
        .route(
            &format!("{}/{{serial}}", admin_paths::CERTIFICATES),
            get(certificate),
        )
        .route(
            &format!("{}/{{serial}}/revoke", admin_paths::CERTIFICATES),
            post(revoke_certificate),
        )
        .route(
            admin_paths::REGISTRY_CAS,
            get(registry_cas).post(add_registry_ca),
        )
        .route(
            &format!("{}/{{fingerprint}}", admin_paths::REGISTRY_CAS),
            axum::routing::delete(remove_registry_ca),
        )
        .route(admin_paths::CRL, get(crl_info))
}

fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("device id: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrlQuery {
    #[serde(default)]
    format: Option<String>,
}

/// DER by default (`application/pkix-crl`, RFC 5280 §4.2.1.13); PEM with
/// `?format=pem` or `Accept: application/x-pem-file`.
async fn crl(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<CrlQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pem = match q.format.as_deref() {
        Some("pem") => true,
        Some("der") => false,
        Some(_) => return Err(ApiError::bad_request("format must be der or pem")),
        None => accept.contains("application/x-pem-file") || accept.contains("text/plain"),
    };
    let doc = d.x509.current();
    let next = doc.state.next_update;
    let mut resp = if pem {
        (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            doc.pem.clone(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/pkix-crl")],
            doc.der.clone(),
        )
            .into_response()
    };
    // Revocation must show at once: caches revalidate every time.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&next.to_string()) {
        resp.headers_mut().insert("x-crl-next-update", v);
    }
    Ok(resp)
}

async fn add_key(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    JsonBody(req): JsonBody<AddKeyRequest>,
) -> Result<Response, ApiError> {
    let binding = conn.channel_binding.as_ref().map(|b| &b[..]);
    Ok(Json(d.devices.add_key(req, conn.peer, binding).await?).into_response())
}

/// The body is optional (curl can renew with no body at all); when present
/// it is JSON.
async fn renew_mtls(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    body: Bytes,
) -> Result<Json<ProvisionResponse>, ApiError> {
    if body.len() > d.cfg.limits.max_body_bytes {
        return Err(ApiError::new(
            idprov_proto::ErrorCode::PayloadTooLarge,
            "request body too large",
        ));
    }
    let req: MtlsRenewRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MtlsRenewRequest::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let creds = d
        .devices
        .renew_mtls(conn.client_cert.clone(), req, conn.peer)
        .await?;
    Ok(Json(ProvisionResponse::Approved(creds)))
}

async fn admin_add_key(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AdminKeyAddRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.admin_add_key(device_id(&id)?, req, a).await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    #[serde(default)]
    revision: Option<u64>,
}

async fn admin_remove_key(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path((id, kid)): Path<(String, String)>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(
        d.admin
            .admin_remove_key(device_id(&id)?, kid, false, q.revision, None, a)
            .await?,
    )
    .into_response())
}

async fn admin_revoke_key(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path((id, kid)): Path<(String, String)>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(
        d.admin
            .admin_remove_key(device_id(&id)?, kid, true, req.revision, req.reason, a)
            .await?,
    )
    .into_response())
}

async fn device_certificates(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.device_certificates(device_id(&id)?).await?).into_response())
}

async fn reprovision(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReprovisionRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.reprovision(device_id(&id)?, req, a).await?).into_response())
}

async fn certificate(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.certificate(serial).await?).into_response())
}

async fn revoke_certificate(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(serial): Path<String>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.revoke_certificate(serial, req.reason, a).await?).into_response())
}

async fn registry_cas(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
) -> Result<Response, ApiError> {
    Ok(Json(d.admin.registry_cas().await?).into_response())
}

async fn add_registry_ca(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    JsonBody(req): JsonBody<RegistryCaAddRequest>,
) -> Result<Response, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(d.admin.add_registry_ca(req, a).await?),
    )
        .into_response())
}

async fn remove_registry_ca(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(fp): Path<String>,
) -> Result<StatusCode, ApiError> {
    d.admin.remove_registry_ca(fp, a).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn crl_info(State(d): State<Arc<Daemon>>, AdminAuth(_): AdminAuth) -> Response {
    Json(d.admin.crl_info()).into_response()
}

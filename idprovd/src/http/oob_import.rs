//! `POST /admin/oob/imports…`: large, atomic OOB uploads on the wire. The
//! bodies are read here, with their own size limits (chunks are far larger
//! than the general body limit, and only for an authenticated admin); the
//! session state machine is `crate::oob_import`. These routes run outside
//! the per-request time limit: a commit of a million entries takes seconds,
//! and abandoning it half-way to answer "timeout" would be a lie (the commit
//! would still land).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use http::StatusCode;
use idprov_proto::oob_import::{IMPORTS, OobImportCommit, OobImportStart};
use serde::de::DeserializeOwned;

use super::admin::AdminAuth;
use super::error::ApiError;
use super::extract::{body_bytes, parse_json};
use crate::Daemon;
use crate::oob_import::{self as imports, MAX_CHUNK_BODY, MAX_CONTROL_BODY};

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route(IMPORTS, post(start))
        .route(&format!("{IMPORTS}/{{sid}}/chunks"), post(chunk))
        .route(&format!("{IMPORTS}/{{sid}}/commit"), post(commit))
        .route(&format!("{IMPORTS}/{{sid}}"), delete(abort))
}

async fn start(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    req: Request,
) -> Result<Response, ApiError> {
    let opts: OobImportStart = json_body(req, MAX_CONTROL_BODY).await?;
    let session = imports::start(&d.imports, &d.core, &a, opts).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

async fn chunk(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(sid): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    // The ticket before the body: it bounds the chunks in memory.
    let ticket = imports::chunk_ticket(&d.imports, &d.core, &a, &sid).await?;
    let body = body_bytes(req, MAX_CHUNK_BODY, None).await?;
    let ack = imports::chunk(&d.imports, &d.core, &a, ticket, &body).await?;
    Ok(Json(ack).into_response())
}

async fn commit(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(sid): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    // The session must exist before its body is read (as before the split).
    let c: OobImportCommit = json_body(req, MAX_CONTROL_BODY).await?;
    // A task of its own: a client that goes away mid-commit must not cancel
    // the commit half-way through its bookkeeping (the store transaction
    // would still land, while the session and its lock vanished early).
    let task = tokio::spawn(async move { imports::commit(&d.imports, &d.core, &a, &sid, c).await });
    let result = task
        .await
        .map_err(|e| crate::error::Error::internal("the import commit task failed", e))??;
    Ok(Json(result).into_response())
}

async fn abort(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(sid): Path<String>,
) -> Result<StatusCode, ApiError> {
    imports::abort(&d.imports, &d.core, &a, &sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A JSON body up to `limit` bytes (no time limit: see the module doc).
async fn json_body<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    parse_json(&body_bytes(req, limit, None).await?)
}

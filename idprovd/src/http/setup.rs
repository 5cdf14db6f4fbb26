//! Setup-code exchange handlers (docs/protocol.md, "Setup codes"): parse,
//! call the use case (core `setup_code.rs`), shape the answer.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::routing::post;
use axum::{Json, Router};
use idprov_proto::setup::{
    FinishRequest, FinishResponse, ParamsRequest, ParamsResponse, StartRequest, StartResponse,
    paths,
};

use super::ConnInfo;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route(paths::PARAMS, post(params))
        .route(paths::START, post(start))
        .route(paths::FINISH, post(finish))
}

async fn params(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    JsonBody(req): JsonBody<ParamsRequest>,
) -> Result<Json<ParamsResponse>, ApiError> {
    let id = req.device_id.to_string();
    d.devices.limit_device(&id)?;
    let answer = d.setup_params(req).await;
    super::ratelimit::after_request(&d, &conn, Some(&id), &answer);
    Ok(Json(answer?))
}

async fn start(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let id = req.device_id.to_string();
    d.devices.limit_device(&id)?;
    let binding = conn.channel_binding.as_ref().map(|b| &b[..]);
    let answer = d.setup_start(req, conn.peer, binding).await;
    super::ratelimit::after_request(&d, &conn, Some(&id), &answer);
    Ok(Json(answer?))
}

async fn finish(
    State(d): State<Arc<Daemon>>,
    Extension(conn): Extension<ConnInfo>,
    JsonBody(req): JsonBody<FinishRequest>,
) -> Result<Json<FinishResponse>, ApiError> {
    let id = req.provision.device_id.to_string();
    let binding = conn.channel_binding.as_ref().map(|b| &b[..]);
    let answer = d.setup_finish(req, conn.peer, binding).await;
    super::ratelimit::after_request(&d, &conn, Some(&id), &answer);
    Ok(Json(answer?))
}

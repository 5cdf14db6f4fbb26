//! `GET /admin/alerts`: the security alerts of this run (monitor.rs).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use idprov_proto::admin::{AlertList, paths};

use super::admin::AdminAuth;
use super::error::ApiError;
use crate::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new().route(paths::ALERTS, get(list))
}

async fn list(State(d): State<Arc<Daemon>>, _a: AdminAuth) -> Result<Json<AlertList>, ApiError> {
    Ok(Json(AlertList {
        items: d.alerts.list(),
    }))
}

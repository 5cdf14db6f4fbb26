//! The auto-approval policy on the admin API: rules (list, add, replace,
//! delete, move, replace all, dry run) and enrollment windows (list, open,
//! close). Handlers parse and call `Policy` (policy_admin.rs, windows.rs).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use http::StatusCode;
use idprov_proto::admin::paths;
use idprov_proto::policy::{
    DryRunRequest, RevisionQuery, RuleAdd, RuleMove, RuleName, RuleReplace, RulesReplace,
    WindowClosed, WindowOpen,
};

use super::admin::AdminAuth;
use super::error::ApiError;
use super::extract::{JsonBody, Query};
use crate::Daemon;
use idprovd_core::policy_admin::RuleEdit;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route(
            paths::RULES,
            get(list_rules).put(replace_all).post(add_rule),
        )
        .route(paths::RULES_DRY_RUN, post(dry_run))
        .route(
            &format!("{}/{{name}}", paths::RULES),
            put(replace_rule).delete(delete_rule),
        )
        .route(&format!("{}/{{name}}/move", paths::RULES), post(move_rule))
        .route(paths::WINDOWS, get(list_windows).post(open_window))
        .route(&format!("{}/{{id}}", paths::WINDOWS), delete(close_window))
}

fn rule_name(raw: &str) -> Result<RuleName, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request(format!("rule name: {e}")))
}

async fn list_rules(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
) -> Result<Response, ApiError> {
    Ok(Json(d.policy.list_rules().await?).into_response())
}

async fn replace_all(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    JsonBody(req): JsonBody<RulesReplace>,
) -> Result<Response, ApiError> {
    let edit = RuleEdit::ReplaceAll(req.rules);
    Ok(Json(d.policy.edit_rules(req.revision, edit, a).await?).into_response())
}

async fn add_rule(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    JsonBody(req): JsonBody<RuleAdd>,
) -> Result<Response, ApiError> {
    let edit = RuleEdit::Add {
        rule: req.rule,
        position: req.position,
    };
    let list = d.policy.edit_rules(req.revision, edit, a).await?;
    Ok((StatusCode::CREATED, Json(list)).into_response())
}

async fn replace_rule(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RuleReplace>,
) -> Result<Response, ApiError> {
    let edit = RuleEdit::Replace {
        name: rule_name(&name)?,
        rule: req.rule,
    };
    Ok(Json(d.policy.edit_rules(req.revision, edit, a).await?).into_response())
}

async fn delete_rule(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(name): Path<String>,
    Query(q): Query<RevisionQuery>,
) -> Result<Response, ApiError> {
    let edit = RuleEdit::Delete(rule_name(&name)?);
    Ok(Json(d.policy.edit_rules(q.revision, edit, a).await?).into_response())
}

async fn move_rule(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RuleMove>,
) -> Result<Response, ApiError> {
    let edit = RuleEdit::Move {
        name: rule_name(&name)?,
        position: req.position,
    };
    Ok(Json(d.policy.edit_rules(req.revision, edit, a).await?).into_response())
}

async fn dry_run(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
    JsonBody(req): JsonBody<DryRunRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(d.policy.dry_run(req).await?).into_response())
}

async fn list_windows(
    State(d): State<Arc<Daemon>>,
    AdminAuth(_): AdminAuth,
) -> Result<Response, ApiError> {
    Ok(Json(d.policy.list_windows().await?).into_response())
}

async fn open_window(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    JsonBody(req): JsonBody<WindowOpen>,
) -> Result<Response, ApiError> {
    let w = d.policy.open_window(req, a).await?;
    Ok((StatusCode::CREATED, Json(w)).into_response())
}

async fn close_window(
    State(d): State<Arc<Daemon>>,
    AdminAuth(a): AdminAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("window id: a number"))?;
    let w = d
        .policy
        .close_window(id, WindowClosed::Admin, a.label())
        .await?;
    Ok(Json(w).into_response())
}

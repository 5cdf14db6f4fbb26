//! `GET /admin/backup`: the archive the backup service makes, streamed.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;
use idprov_proto::admin::paths;

use super::admin::AdminAuth;
use super::error::ApiError;
use crate::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new().route(paths::BACKUP, get(download))
}

async fn download(
    State(d): State<Arc<Daemon>>,
    AdminAuth(actor): AdminAuth,
) -> Result<Response, ApiError> {
    let (file, size, manifest) = crate::backup::export(&d, actor).await?;
    let file = tokio::fs::File::from_std(file);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let name = format!(
        "idprov-backup-{}-{}.tar",
        manifest.daemon_id, manifest.created_at
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

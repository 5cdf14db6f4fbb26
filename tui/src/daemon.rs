//! The daemon side: runs [`Command`]s against the admin API and keeps the
//! event stream connected, reporting everything back as [`Msg`]s. All access
//! goes through `idprov-admin-client`; the TUI never opens the database.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use idprov_admin_client::{AdminClient, AdminError};
use idprov_proto::admin::{AuditEntry, ListQuery, MAX_PAGE, Page};
use idprov_proto::policy::{DryRunRequest, WindowOpen};
use idprov_proto::{DeviceId, ErrorCode};

use crate::text::timestamp;
use tokio::sync::mpsc;

use crate::app::AUDIT_KEEP;
use crate::msg::{Command, Decision, FailKind, Failure, Msg, Outcome, Snapshot, Verb};

/// Calls in flight at once during a bulk decision.
const BULK_CONCURRENCY: usize = 8;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Daemon {
    client: AdminClient,
    tx: mpsc::Sender<Msg>,
}

impl Daemon {
    /// Rules, windows and the whole policy's dry run, for the Policy view.
    async fn policy(&self) -> Result<crate::policy::PolicyData, AdminError> {
        Ok(crate::policy::PolicyData {
            rules: self.client.rules().await?,
            windows: self.client.windows().await?.items,
            dry_run: self.client.rules_dry_run(&DryRunRequest::default()).await?,
        })
    }

    async fn policy_msg(&self) -> Msg {
        match self.policy().await {
            Ok(d) => Msg::Policy(Box::new(d)),
            Err(e) => Msg::PolicyFailed(e.to_string()),
        }
    }

    pub fn new(client: AdminClient, tx: mpsc::Sender<Msg>) -> Self {
        Daemon { client, tx }
    }

    /// Keep the event stream open for as long as the receiver lives:
    /// connect, forward events, and after a failure or a drop say so and
    /// try again with a growing delay (1 s, 2 s, 4 s … 10 s).
    pub fn spawn_event_stream(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut attempt: u32 = 0;
            loop {
                let error = match this.client.events().await {
                    Ok(mut rx) => {
                        attempt = 0;
                        if this.tx.send(Msg::Connected).await.is_err() {
                            return;
                        }
                        while let Some(ev) = rx.recv().await {
                            if this.tx.send(Msg::Event(ev)).await.is_err() {
                                return;
                            }
                        }
                        "the event stream ended".to_string()
                    }
                    // A revoked or invalid token stays refused: retrying
                    // would only fill the daemon's log. Say so and stop.
                    Err(AdminError::Api {
                        code: ErrorCode::Unauthorized,
                        message,
                        ..
                    }) => {
                        let _ = this.tx.send(Msg::Refused { error: message }).await;
                        return;
                    }
                    Err(e) => e.to_string(),
                };
                attempt = attempt.saturating_add(1);
                let retry_in = backoff(attempt);
                let msg = Msg::Disconnected {
                    error,
                    retry_in,
                    attempt,
                };
                if this.tx.send(msg).await.is_err() {
                    return;
                }
                tokio::time::sleep(retry_in).await;
            }
        })
    }

    /// Run one command in the background; its result arrives as a [`Msg`].
    pub fn execute(&self, cmd: Command) {
        let this = self.clone();
        tokio::spawn(async move {
            // The rules and windows are loaded with every list.
            if matches!(cmd, Command::Reload { .. })
                && this.tx.send(this.policy_msg().await).await.is_err()
            {
                return;
            }
            let msg = match cmd {
                Command::Reload { generation } => match this.snapshot().await {
                    Ok(s) => Msg::Snapshot {
                        generation,
                        snapshot: Box::new(s),
                    },
                    Err(e) => Msg::SnapshotFailed {
                        generation,
                        error: e.to_string(),
                    },
                },
                Command::ReloadOob => {
                    let c = &this.client;
                    match load_all(|q| async move { c.oob_list(&q).await }).await {
                        Ok(v) => Msg::Oob(v),
                        Err(e) => Msg::OobFailed(e.to_string()),
                    }
                }
                Command::Approve(d) => Msg::Done(this.decide(Verb::Approve, d).await),
                Command::Reject(d) => Msg::Done(this.decide(Verb::Reject, d).await),
                Command::Revoke(d) => {
                    let mut o = Outcome::new(Verb::Revoke, 1);
                    match this
                        .client
                        .device_revoke(&d.id, Some(d.revision), None)
                        .await
                    {
                        Ok(dev) => {
                            o.done.push(d.id);
                            o.devices.push(dev);
                        }
                        Err(e) => o.failures.push(failure(Some(d.id), Some(d.revision), &e)),
                    }
                    Msg::Done(o)
                }
                Command::ReloadPolicy => this.policy_msg().await,
                Command::OpenWindow => Msg::PolicyOp(
                    match this.client.window_open(&WindowOpen::default()).await {
                        Ok(w) => Ok(format!(
                            "window {} open until {}",
                            w.id,
                            timestamp(w.closes_at)
                        )),
                        Err(e) => Err(format!("cannot open a window: {e}")),
                    },
                ),
                Command::CloseWindow(id) => {
                    Msg::PolicyOp(match this.client.window_close(id).await {
                        Ok(w) => Ok(format!("window {} closed, {} admitted", w.id, w.admitted)),
                        Err(e) => Err(format!("cannot close window {id}: {e}")),
                    })
                }
                Command::RemoveOob(ids) => {
                    let mut o = Outcome::new(Verb::RemoveOob, ids.len());
                    for id in ids {
                        match this.client.oob_remove(&id).await {
                            Ok(()) => o.done.push(id),
                            Err(e) => o.failures.push(failure(Some(id), None, &e)),
                        }
                    }
                    Msg::Done(o)
                }
                Command::SetProvisioning(state) => {
                    let mut o = Outcome::new(Verb::Provisioning, 1);
                    match this.client.set_provisioning(&state).await {
                        Ok(s) => o.provisioning = Some(s),
                        Err(e) => o.failures.push(failure(None, None, &e)),
                    }
                    Msg::Done(o)
                }
            };
            // The receiver is gone only when the TUI is quitting.
            let _ = this.tx.send(msg).await;
        });
    }

    /// Approve or reject many devices, a few calls at a time, reporting
    /// progress about a hundred times over the whole run.
    async fn decide(&self, verb: Verb, decisions: Vec<Decision>) -> Outcome {
        let total = decisions.len();
        let mut out = Outcome::new(verb, total);
        let step = (total / 100).max(1);
        let client = &self.client;
        let mut results = futures_util::stream::iter(decisions)
            .map(|d| async move {
                let r = match verb {
                    Verb::Approve => client.approve(&d.id, d.revision).await,
                    _ => client.reject(&d.id, d.revision, None).await,
                };
                (d, r)
            })
            .buffer_unordered(BULK_CONCURRENCY);
        let mut finished = 0usize;
        while let Some((d, r)) = results.next().await {
            match r {
                Ok(dev) => {
                    out.done.push(d.id);
                    out.devices.push(dev);
                }
                Err(e) => out.failures.push(failure(Some(d.id), Some(d.revision), &e)),
            }
            finished += 1;
            if total > 1 && (finished.is_multiple_of(step) || finished == total) {
                let _ = self
                    .tx
                    .send(Msg::Progress {
                        verb,
                        done: finished,
                        total,
                    })
                    .await;
            }
        }
        out
    }

    /// Every list, loaded concurrently, page by page.
    async fn snapshot(&self) -> Result<Snapshot, AdminError> {
        let c = &self.client;
        let (pending, devices, oob, audit, provisioning) = tokio::try_join!(
            load_all(|q| async move { c.pending_list(&q).await }),
            load_all(|q| async move { c.device_list(&q).await }),
            load_all(|q| async move { c.oob_list(&q).await }),
            self.audit_tail(),
            c.provisioning(),
        )?;
        Ok(Snapshot {
            pending,
            devices,
            oob,
            audit,
            provisioning: Some(provisioning),
        })
    }

    /// The newest [`AUDIT_KEEP`] audit entries, oldest first.
    async fn audit_tail(&self) -> Result<Vec<AuditEntry>, AdminError> {
        let mut out: VecDeque<AuditEntry> = VecDeque::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.client.audit(&page_query(after.clone())).await?;
            for e in page.items {
                if out.len() == AUDIT_KEEP {
                    out.pop_front();
                }
                out.push_back(e);
            }
            match next_cursor(after.as_deref(), page.next) {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(out.into())
    }
}

fn page_query(after: Option<String>) -> ListQuery {
    ListQuery {
        after,
        limit: Some(MAX_PAGE),
        q: None,
    }
}

/// The next page's cursor, or `None` at the end (or if the daemon repeats
/// a cursor, which would otherwise loop forever).
fn next_cursor(prev: Option<&str>, next: Option<String>) -> Option<String> {
    next.filter(|n| !n.is_empty() && Some(n.as_str()) != prev)
}

async fn load_all<T, F, Fut>(mut call: F) -> Result<Vec<T>, AdminError>
where
    F: FnMut(ListQuery) -> Fut,
    Fut: Future<Output = Result<Page<T>, AdminError>>,
{
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = call(page_query(after.clone())).await?;
        out.extend(page.items);
        match next_cursor(after.as_deref(), page.next) {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

fn failure(id: Option<DeviceId>, revision: Option<u64>, e: &AdminError) -> Failure {
    let kind = match e {
        AdminError::Api { code, .. } => match code {
            ErrorCode::Conflict => FailKind::Conflict,
            ErrorCode::NotFound => FailKind::NotFound,
            other => FailKind::Other(other.as_str().to_string()),
        },
        AdminError::Connect { .. } => FailKind::Connection,
        AdminError::Unexpected { status, .. } => FailKind::Other(format!("HTTP {status}")),
        AdminError::ProfileRead { .. }
        | AdminError::ProfileInvalid { .. }
        | AdminError::NoProfile(_) => FailKind::Other("profile".into()),
    };
    let message = match e {
        AdminError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Failure {
        id,
        revision,
        kind,
        message,
    }
}

fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(4);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s: Vec<u64> = (1..=7).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn paging_stops_at_the_end_or_on_a_repeated_cursor() {
        assert_eq!(next_cursor(None, Some("a".into())), Some("a".into()));
        assert_eq!(next_cursor(Some("a"), Some("a".into())), None);
        assert_eq!(next_cursor(Some("a"), None), None);
        assert_eq!(next_cursor(Some("a"), Some(String::new())), None);
    }
}

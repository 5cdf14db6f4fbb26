//! When the answer to an import's commit is lost (the connection broke after
//! the commit request left), the daemon may have applied all of the import
//! or none of it — never a part. The tool must not guess: it asks the daemon
//! once it answers again. Ending the session (DELETE) waits for a commit
//! still running; "done" means the commit had not reached the session, which
//! is now ended; "not found" means the session is over, and the audit log
//! then says whether it was committed (the daemon records the session id in
//! the `oob_import` entry of the same transaction).

use std::time::Duration;

use idprov_admin_client::{AdminClient, AdminError};
use idprov_proto::ErrorCode;
use idprov_proto::admin::ListQuery;
use idprov_proto::oob_import::OobImportResult;

/// Waits before each attempt to reach the daemon again: about 15 s in all.
const RETRIES: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];
/// One attempt may wait for a large commit still running on the daemon.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// What the daemon says about a commit whose answer was lost.
#[derive(Debug)]
pub enum Settled {
    /// Committed: the counts from its audit entry (the lists of IDs were in
    /// the lost answer), and the entry's sequence number.
    Committed { result: OobImportResult, seq: u64 },
    /// The session is over and no commit of it is recorded, or it was still
    /// open and is now ended: nothing was imported.
    NotImported,
}

/// The outcome could not be learnt: the message says how to check.
#[derive(Debug, thiserror::Error)]
#[error(
    "the answer to the commit was lost and the daemon could not be asked again ({cause}): the outcome is unknown — the daemon applied all of the import or none of it; check with `idprov-oob list`, or look in the audit log for an `oob_import` entry of session {session}"
)]
pub struct OutcomeUnknown {
    pub session: String,
    pub cause: String,
}

/// Is this error a lost answer (no HTTP answer at all), as opposed to the
/// daemon's refusal?
pub fn is_lost(e: &AdminError) -> bool {
    matches!(e, AdminError::Connect { .. })
}

/// Ask the daemon what became of session `session`'s commit.
pub async fn settle(client: &AdminClient, session: &str) -> Result<Settled, OutcomeUnknown> {
    let mut cause = String::new();
    for wait in RETRIES {
        tokio::time::sleep(wait).await;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, ask(client, session)).await {
            Ok(Ok(settled)) => return Ok(settled),
            Ok(Err(e)) => cause = e.to_string(),
            Err(_) => cause = format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        }
    }
    Err(OutcomeUnknown {
        session: session.to_string(),
        cause,
    })
}

async fn ask(client: &AdminClient, session: &str) -> Result<Settled, AdminError> {
    match client.oob_import_abort(session).await {
        Ok(()) => return Ok(Settled::NotImported),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => {}
        Err(e) => return Err(e),
    }
    let tag = format!("session {session}:");
    let page = client
        .audit(&ListQuery {
            after: None,
            limit: Some(10),
            q: Some(tag.clone()),
        })
        .await?;
    let entry = page
        .items
        .into_iter()
        .find(|e| e.action == "oob_import" && e.detail.starts_with(&tag));
    Ok(match entry {
        Some(e) => Settled::Committed {
            result: counts(&e.detail),
            seq: e.seq,
        },
        None => Settled::NotImported,
    })
}

/// The counts of an `oob_import` audit detail ("session S: added 1,
/// changed 2, unchanged 3, removed 4"); a count it lacks is 0.
fn counts(detail: &str) -> OobImportResult {
    let count = |name: &str| {
        detail
            .split([':', ','])
            .filter_map(|part| part.trim().strip_prefix(name))
            .find_map(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    OobImportResult {
        added: count("added "),
        changed: count("changed "),
        unchanged: count("unchanged "),
        removed: count("removed "),
        ..OobImportResult::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_come_from_the_audit_detail() {
        let r = super::counts("session abc: added 1, changed 2, unchanged 3, removed 4");
        assert_eq!((r.added, r.changed, r.unchanged, r.removed), (1, 2, 3, 4));
    }
}

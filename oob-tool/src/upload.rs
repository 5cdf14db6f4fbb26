//! Sending a checked import to the daemon: an import session (numbered
//! chunks, staged and checked again by the daemon, then one commit). A daemon
//! without import sessions gets small imports in one `POST /admin/oob`.
//! Either way the daemon applies all of it or none of it.

use std::sync::Arc;

use anyhow::{Context, bail};
use idprov_admin_client::{AdminClient, AdminError};
use idprov_proto::admin::{MAX_OOB_BATCH, OobEntryInput, OobUpsertRequest};
use idprov_proto::oob_import::{OobImportChunk, OobImportCommit, OobImportResult, OobImportStart};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::source::Input;
use crate::validate::{Loc, Problem, Summary, loc_label, read_entries};

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub replace: bool,
    pub prune: bool,
    pub dry_run: bool,
    /// Entries per chunk of a session upload.
    pub chunk: usize,
}

/// The daemon refused entries: each problem mapped back to its line.
#[derive(Debug, thiserror::Error)]
#[error("the daemon refused the import: {message}")]
pub struct Refused {
    pub message: String,
    pub problems: Vec<Problem>,
}

/// Wall time of the two phases of an upload, for `--timings`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub upload: std::time::Duration,
    pub commit: std::time::Duration,
}

pub async fn import(
    client: &AdminClient,
    inputs: Arc<Vec<Input>>,
    summary: &Summary,
    opts: ImportOptions,
    bar: &ProgressBar,
    phases: &mut Phases,
) -> anyhow::Result<OobImportResult> {
    let t0 = std::time::Instant::now();
    let started = client
        .oob_import_start(&OobImportStart {
            replace: opts.replace,
            prune: opts.prune,
        })
        .await;
    let session = match started {
        Ok(s) => s,
        // A daemon without import sessions still takes a small import in
        // one request.
        Err(e)
            if e.code() == Some(idprov_proto::ErrorCode::NotFound)
                && summary.entries <= MAX_OOB_BATCH as u64
                && !opts.prune =>
        {
            let r = single_request(client, inputs, summary, opts, bar).await;
            phases.upload = t0.elapsed();
            return r;
        }
        Err(e) if e.code() == Some(idprov_proto::ErrorCode::NotFound) => bail!(
            "this daemon does not support import sessions (needed for more than {MAX_OOB_BATCH} entries or --prune)"
        ),
        Err(e) => return Err(anyhow::Error::new(e).context("starting the import")),
    };
    let (mut rx, reader) = spawn_reader(inputs, opts.chunk.clamp(1, MAX_OOB_BATCH), CHUNK_BYTES);
    // Interrupted (Ctrl-C, SIGTERM, SIGHUP): end the session on the daemon
    // before leaving, so it does not hold one of the daemon's few import
    // slots until it times out. Only SIGKILL leaves that to the daemon.
    let interrupt = interrupted()?;
    let in_commit = std::cell::Cell::new(false);
    let work = async {
        let sent = send_chunks(client, &session.id, &mut rx, bar).await?;
        let digest = reader.await.context("reading the files")??;
        if digest != summary.digest || sent != summary.entries {
            bail!("the input files changed while they were being imported; nothing was imported");
        }
        bar.set_message("committing");
        phases.upload = t0.elapsed();
        let committing = std::time::Instant::now();
        in_commit.set(true);
        let r = client
            .oob_import_commit(
                &session.id,
                &OobImportCommit {
                    dry_run: opts.dry_run,
                    expected_entries: sent,
                },
            )
            .await
            .map_err(|e| {
                if crate::lost::is_lost(&e) {
                    anyhow::Error::new(CommitLost(e))
                } else {
                    refused(e, &[])
                }
            });
        phases.commit = committing.elapsed();
        r
    };
    let outcome = tokio::select! {
        r = work => r,
        signal = interrupt => {
            let when = if in_commit.get() {
                "while the daemon was committing: it applies all of the import or none of it; see `idprov-oob list`"
            } else {
                "nothing was imported"
            };
            Err(anyhow::anyhow!("interrupted by {signal} {when}"))
        }
    };
    if let Err(e) = &outcome
        && e.is::<CommitLost>()
    {
        return settle_lost(client, &session.id, opts.dry_run, outcome).await;
    }
    if outcome.is_err() {
        // Best effort: the daemon also drops idle sessions by itself, and a
        // failed commit ends the session anyway.
        let abort = client.oob_import_abort(&session.id);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), abort).await;
    }
    outcome
}

/// No answer to the commit came back (the connection broke after it left).
#[derive(Debug, thiserror::Error)]
#[error("the connection broke before the daemon's answer to the commit arrived: {0}")]
struct CommitLost(AdminError);

/// The commit's answer was lost: say that the outcome is unknown, then ask
/// the daemon what it did (`crate::lost`).
async fn settle_lost(
    client: &AdminClient,
    session: &str,
    dry_run: bool,
    lost: anyhow::Result<OobImportResult>,
) -> anyhow::Result<OobImportResult> {
    let e = match lost {
        Err(e) => e,
        ok => return ok,
    };
    if dry_run {
        bail!("{e:#}; a dry run stores nothing, so nothing was stored");
    }
    eprintln!(
        "warning: {e:#}
warning: the outcome is unknown until the daemon answers again (it applies all of an import or none of it); asking it about session {session}…"
    );
    match crate::lost::settle(client, session).await? {
        crate::lost::Settled::Committed { result, seq } => {
            eprintln!(
                "the daemon committed the import (audit entry {seq}); the lists of device IDs were in the lost answer"
            );
            Ok(result)
        }
        crate::lost::Settled::NotImported => {
            bail!("{e:#}; the daemon did not commit it: nothing was imported")
        }
    }
}

/// A future that ends with the name of the first SIGINT, SIGTERM or SIGHUP.
pub fn interrupted() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    })
}

/// Body size a chunk aims at (the daemon takes up to 16 MiB).
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Chunk requests in flight at once: the daemon checks the next chunk while
/// it stages this one (it accepts two per session and stages them in order).
const IN_FLIGHT: usize = 2;

type Pending = (Vec<Loc>, tokio::task::JoinHandle<Result<u64, AdminError>>);

/// Send every chunk from `rx`, keeping [`IN_FLIGHT`] requests open, and
/// wait for all answers. Returns the number of entries sent. The first
/// refusal stops the upload (the requests still open are dropped).
async fn send_chunks(
    client: &AdminClient,
    session: &str,
    rx: &mut mpsc::Receiver<Chunk>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut open: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
    let mut seq = 0u64;
    let mut sent = 0u64;
    let result = async {
        loop {
            let next = if open.len() < IN_FLIGHT {
                rx.recv().await
            } else {
                None
            };
            match next {
                Some((locs, entries)) => {
                    let n = entries.len() as u64;
                    let (client, session) = (client.clone(), session.to_string());
                    let chunk = OobImportChunk { seq, entries };
                    let task = tokio::spawn(async move {
                        client.oob_import_chunk(&session, &chunk).await.map(|_| n)
                    });
                    open.push_back((locs, task));
                    seq += 1;
                }
                None => {
                    let Some((locs, task)) = open.pop_front() else {
                        return Ok(sent);
                    };
                    let n = task
                        .await
                        .context("a chunk upload task failed")?
                        .map_err(|e| refused(e, &locs))?;
                    sent += n;
                    bar.set_position(sent);
                }
            }
        }
    }
    .await;
    for (_, task) in open {
        task.abort();
    }
    result
}

type Chunk = (Vec<Loc>, Vec<OobEntryInput>);

/// Pass two on a blocking thread, handing over chunks of at most `count`
/// entries and about `bytes` bytes through a channel of two: at most a few
/// chunks are in memory at any time.
fn spawn_reader(
    inputs: Arc<Vec<Input>>,
    count: usize,
    bytes: usize,
) -> (
    mpsc::Receiver<Chunk>,
    tokio::task::JoinHandle<anyhow::Result<[u8; 32]>>,
) {
    let (tx, rx) = mpsc::channel::<Chunk>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut locs = Vec::new();
        let mut entries = Vec::new();
        let mut size = 0usize;
        let digest = read_entries(&inputs, |loc, entry| {
            size += approx_size(&entry);
            locs.push(loc);
            entries.push(entry);
            if entries.len() >= count || size >= bytes {
                size = 0;
                let full = (std::mem::take(&mut locs), std::mem::take(&mut entries));
                tx.blocking_send(full)
                    .map_err(|_| anyhow::anyhow!("upload stopped"))?;
            }
            Ok(())
        })?;
        if !entries.is_empty() {
            tx.blocking_send((locs, entries))
                .map_err(|_| anyhow::anyhow!("upload stopped"))?;
        }
        Ok::<_, anyhow::Error>(digest)
    });
    (rx, reader)
}

fn approx_size(e: &OobEntryInput) -> usize {
    // JSON overhead per entry, plus PEM line breaks escaped as \n.
    160 + e.device_id.as_str().len()
        + e.public_key.as_ref().map_or(0, |k| k.len() + k.len() / 32)
        + e.note.as_ref().map_or(0, String::len)
        + e.secret.as_ref().map_or(0, |s| s.expose().len())
}

/// The whole import in one `POST /admin/oob` (daemons without sessions).
async fn single_request(
    client: &AdminClient,
    inputs: Arc<Vec<Input>>,
    summary: &Summary,
    opts: ImportOptions,
    bar: &ProgressBar,
) -> anyhow::Result<OobImportResult> {
    let (mut rx, reader) = spawn_reader(inputs, MAX_OOB_BATCH, usize::MAX);
    let (locs, entries) = rx.recv().await.unwrap_or_default();
    let digest = reader.await.context("reading the files")??;
    if digest != summary.digest {
        bail!("the input files changed while they were being imported; nothing was imported");
    }
    let req = OobUpsertRequest {
        entries,
        replace: opts.replace,
        dry_run: opts.dry_run,
    };
    bar.set_position(req.entries.len() as u64);
    let r = client
        .oob_upsert(&req)
        .await
        .map_err(|e| refused(e, &locs))?;
    let mut added_ids = r.added;
    let mut changed_ids = r.changed;
    let (added, changed) = (added_ids.len() as u64, changed_ids.len() as u64);
    added_ids.sort();
    changed_ids.sort();
    Ok(OobImportResult {
        added,
        changed,
        unchanged: r.unchanged,
        removed: 0,
        dry_run: r.dry_run,
        added_ids,
        changed_ids,
        removed_ids: Vec::new(),
    })
}

/// Map an error answer to problems with file lines (the daemon numbers
/// entries within the request it got).
fn refused(e: AdminError, locs: &[Loc]) -> anyhow::Error {
    match e {
        AdminError::Api {
            message, ref body, ..
        } if !body.details.is_empty() => {
            let problems = body
                .details
                .iter()
                .map(|d| Problem {
                    loc: locs
                        .get(d.index)
                        .copied()
                        .unwrap_or(Loc { file: 0, line: 0 }),
                    message: match &d.device_id {
                        Some(id) => format!(
                            "{}: {}",
                            crate::export::printable(id),
                            crate::export::printable(&d.message)
                        ),
                        None => crate::export::printable(&d.message),
                    },
                })
                .collect();
            anyhow::Error::new(Refused { message, problems })
        }
        other => anyhow::Error::new(other),
    }
}

/// Print the outcome; lists at most `list` IDs of each kind.
pub fn print_result(r: &OobImportResult, list: usize) {
    println!(
        "{}added {}, changed {}, unchanged {}, removed {}{}",
        if r.dry_run { "dry run: " } else { "" },
        r.added,
        r.changed,
        r.unchanged,
        r.removed,
        if r.dry_run {
            " (nothing was stored)"
        } else {
            ""
        }
    );
    for (sign, ids, total) in [
        ('+', &r.added_ids, r.added),
        ('~', &r.changed_ids, r.changed),
        ('-', &r.removed_ids, r.removed),
    ] {
        for id in ids.iter().take(list) {
            println!("  {sign} {id}");
        }
        let shown = ids.len().min(list) as u64;
        if total > shown {
            println!("  {sign} … and {} more", total - shown);
        }
    }
}

/// `file:line` of a refused entry; `None` for problems the daemon found at
/// commit time (it names the device instead).
pub fn label(inputs: &[Input], p: &Problem) -> Option<String> {
    (p.loc.line != 0).then(|| loc_label(inputs, p.loc))
}

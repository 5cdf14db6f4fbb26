//! Sending a checked import to the daemon. Small imports (up to
//! `MAX_OOB_BATCH` entries, no `--prune`) go in one `POST /admin/oob`; larger
//! ones through an import session: numbered chunks, staged by the daemon, then
//! one commit. Either way the daemon applies all of it or none of it.

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

pub async fn import(
    client: &AdminClient,
    inputs: Arc<Vec<Input>>,
    summary: &Summary,
    opts: ImportOptions,
    bar: &ProgressBar,
) -> anyhow::Result<OobImportResult> {
    let chunk = opts.chunk.clamp(1, MAX_OOB_BATCH);
    let small = summary.entries <= MAX_OOB_BATCH as u64 && !opts.prune;
    // Pass two runs on a blocking thread and hands chunks over a channel of
    // two, so at most a few chunks are in memory at any time.
    let (tx, mut rx) = mpsc::channel::<(Vec<Loc>, Vec<OobEntryInput>)>(2);
    let reader_inputs = inputs.clone();
    let size = if small { MAX_OOB_BATCH } else { chunk };
    let reader = tokio::task::spawn_blocking(move || {
        let mut locs = Vec::with_capacity(size);
        let mut entries = Vec::with_capacity(size);
        let digest = read_entries(&reader_inputs, |loc, entry| {
            locs.push(loc);
            entries.push(entry);
            if entries.len() == size {
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

    if small {
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
        return Ok(OobImportResult {
            added,
            changed,
            unchanged: r.unchanged,
            removed: 0,
            dry_run: r.dry_run,
            added_ids,
            changed_ids,
            removed_ids: Vec::new(),
        });
    }

    let session = client
        .oob_import_start(&OobImportStart {
            replace: opts.replace,
            prune: opts.prune,
        })
        .await
        .map_err(|e| match e.code() {
            Some(idprov_proto::ErrorCode::NotFound) => anyhow::anyhow!(
                "this daemon does not support import sessions (needed for more than {MAX_OOB_BATCH} entries or --prune)"
            ),
            _ => anyhow::Error::new(e).context("starting the import"),
        })?;
    let outcome = async {
        let mut seq = 0u64;
        let mut sent = 0u64;
        while let Some((locs, entries)) = rx.recv().await {
            let n = entries.len() as u64;
            let chunk = OobImportChunk { seq, entries };
            client
                .oob_import_chunk(&session.id, &chunk)
                .await
                .map_err(|e| refused(e, &locs))?;
            seq += 1;
            sent += n;
            bar.set_position(sent);
        }
        let digest = reader.await.context("reading the files")??;
        if digest != summary.digest || sent != summary.entries {
            bail!("the input files changed while they were being imported; nothing was imported");
        }
        bar.set_message("committing");
        let result = client
            .oob_import_commit(
                &session.id,
                &OobImportCommit {
                    dry_run: opts.dry_run,
                    expected_entries: sent,
                },
            )
            .await
            .map_err(|e| refused(e, &[]))?;
        Ok(result)
    }
    .await;
    if outcome.is_err() {
        // Best effort: the daemon also drops idle sessions by itself.
        let _ = client.oob_import_abort(&session.id).await;
    }
    outcome
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
                        Some(id) => format!("{} ({})", d.message, crate::record::quoted(id)),
                        None => d.message.clone(),
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

/// `file:line` of a refused entry, for callers that print [`Refused`].
pub fn label(inputs: &[Input], p: &Problem) -> String {
    if p.loc.line == 0 {
        "(daemon)".to_string()
    } else {
        loc_label(inputs, p.loc)
    }
}

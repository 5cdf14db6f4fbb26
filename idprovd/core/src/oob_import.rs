//! Import sessions for large, atomic OOB uploads (`idprov_proto::oob_import`):
//! the session state machine (start, chunks in order, commit or abort, idle
//! expiry). The HTTP layer (`http::oob_import`) reads the bodies and calls in.
//!
//! Sessions live in memory (they die with the daemon, and so does what they
//! staged: the next start drops leftover staging tables). Every chunk is
//! checked again here with the same rules as `POST /admin/oob` — the daemon
//! never trusts the tool — and staged on disk, so memory stays bounded by a
//! few chunks whatever the size of the import. These routes run outside the
//! per-request time limit: a commit of a million entries takes seconds, and
//! abandoning it half-way to answer "timeout" would be a lie (the commit
//! would still land).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use idprov_proto::admin::{AdminEvent, MAX_OOB_BATCH};
use idprov_proto::error::EntryError;
use idprov_proto::oob_import::{
    IMPORT_IDLE_SECS, MAX_IMPORT_ENTRIES, OobImportChunk, OobImportChunkAck, OobImportCommit,
    OobImportResult, OobImportSession, OobImportStart,
};

use crate::audit::Actor;
use crate::audit::draft;
use crate::context::{Core, WeakCore};
use crate::error::Error;
use crate::oob::validate_oob;
use crate::store::{CommitOptions, OobRecord};

/// Import sessions open at once (each may hold one chunk in memory).
const MAX_SESSIONS: usize = 4;
/// Largest chunk body. 10,000 RSA-4096 certificates would not fit; the tool
/// cuts chunks by size as well as by count.
pub const MAX_CHUNK_BODY: usize = 16 * 1024 * 1024;
/// Largest start or commit body.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;

/// The open import sessions of one daemon.
#[derive(Default)]
pub struct Imports {
    sessions: Mutex<HashMap<String, Arc<Slot>>>,
    /// Leftover staging tables from before a restart are dropped once.
    swept: std::sync::atomic::AtomicBool,
}

/// How many chunks of one session the daemon reads and checks at once: the
/// one being staged and the next, so a client can keep two requests in
/// flight and the daemon checks chunk n+1 while it stages chunk n. Staging
/// itself stays strictly in order.
const CHUNKS_IN_FLIGHT: u64 = 2;
/// How long a chunk that arrived early waits for the one before it.
const ORDER_WAIT: Duration = Duration::from_secs(60);

/// One session: its state, the bound on chunks in memory, and the number
/// of the next chunk to stage (for chunks that arrived early to wait on).
struct Slot {
    state: tokio::sync::Mutex<Session>,
    in_flight: Arc<tokio::sync::Semaphore>,
    next_seq: tokio::sync::watch::Sender<u64>,
}

struct Session {
    id: String,
    admin: String,
    replace: bool,
    prune: bool,
    next_seq: u64,
    staged: u64,
    /// SHA-256 of the body of the last staged chunk: a resend of it must be
    /// the same request, not other entries under its number.
    last_body: [u8; 32],
    last_used: Instant,
    /// Set when the session was committed, aborted or expired.
    closed: bool,
}

impl Slot {
    /// Mark the session closed (under its lock) and wake chunks waiting for
    /// their turn, so they answer at once instead of at their time limit.
    fn close(&self, s: &mut Session) {
        s.closed = true;
        self.next_seq.send_replace(u64::MAX);
    }
}

impl Imports {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        // A poisoned map still holds valid sessions; keep serving.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session if it exists and belongs to this administrator; anything
    /// else is "not found", so ids cannot be probed.
    fn get(&self, sid: &str) -> Result<Arc<Slot>, Error> {
        self.lock().get(sid).cloned().ok_or_else(|| {
            Error::not_found("no such import session (expired, finished, or the daemon restarted)")
        })
    }

    fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }
}

impl Imports {
    /// Drop what imports cut short by a crash or a restart staged. The
    /// daemon calls this as it starts; if that fails, the first import of
    /// the run tries again.
    pub async fn sweep(&self, core: &Core) -> Result<(), Error> {
        sweep_once(core, self).await
    }
}

/// Once per daemon run: drop staging tables that no live session owns.
async fn sweep_once(core: &Core, reg: &Imports) -> Result<(), Error> {
    use std::sync::atomic::Ordering;
    if reg.swept.load(Ordering::SeqCst) {
        return Ok(());
    }
    let live: HashSet<String> = reg.lock().keys().cloned().collect();
    core.with_store(move |s| {
        let n = s.drop_stale_oob_staging(&live)?;
        if n > 0 {
            tracing::info!(tables = n, "dropped staging tables of unfinished imports");
        }
        Ok(())
    })
    .await?;
    reg.swept.store(true, Ordering::SeqCst);
    Ok(())
}

/// Open a session for administrator `a`.
pub async fn start(
    imports: &Arc<Imports>,
    core: &Core,
    a: &Actor,
    opts: OobImportStart,
) -> Result<OobImportSession, Error> {
    let reg = imports;
    sweep_once(core, reg).await?;
    let id = crate::tokens::base64_id();
    let evicted = {
        let mut map = reg.lock();
        let evicted = if map.len() >= MAX_SESSIONS {
            evict_abandoned(&mut map, &a.name, core.clock.instant())
        } else {
            Vec::new()
        };
        if map.len() >= MAX_SESSIONS {
            return Err(Error::busy(
                format!("{MAX_SESSIONS} imports are running already; try again later"),
                Some(30),
            ));
        }
        map.insert(
            id.clone(),
            Arc::new(Slot {
                state: tokio::sync::Mutex::new(Session {
                    id: id.clone(),
                    admin: a.name.clone(),
                    replace: opts.replace,
                    prune: opts.prune,
                    next_seq: 0,
                    staged: 0,
                    last_body: [0; 32],
                    last_used: core.clock.instant(),
                    closed: false,
                }),
                in_flight: Arc::new(tokio::sync::Semaphore::new(CHUNKS_IN_FLIGHT as usize)),
                next_seq: tokio::sync::watch::Sender::new(0),
            }),
        );
        evicted
    };
    for sid in evicted {
        let session = sid.clone();
        core.with_store(move |s| s.drop_oob_staging(&session))
            .await?;
        tracing::info!(admin = %a.name, session = %sid, "abandoned OOB import session dropped for a new one");
    }
    tokio::spawn(reap_when_idle(
        Arc::downgrade(imports),
        core.downgrade(),
        id.clone(),
    ));
    tracing::info!(admin = %a.name, session = %id, replace = opts.replace, prune = opts.prune, "OOB import started");
    Ok(OobImportSession {
        id,
        idle_timeout_secs: IMPORT_IDLE_SECS,
    })
}

/// A session of `admin` with no request for this long is taken to be
/// abandoned (its client was killed) when the same administrator needs a
/// slot: a live upload sends a chunk every fraction of a second, and a
/// long commit holds the session's lock.
const ABANDONED_AFTER: Duration = Duration::from_secs(30);

/// With every slot taken, close `admin`'s abandoned sessions and return
/// their ids (the caller drops their staging tables). Other
/// administrators' sessions are left alone.
fn evict_abandoned(map: &mut HashMap<String, Arc<Slot>>, admin: &str, now: Instant) -> Vec<String> {
    let abandoned: Vec<String> = map
        .iter()
        .filter(|(_, slot)| {
            slot.state.try_lock().is_ok_and(|s| {
                s.admin == admin
                    && !s.closed
                    && now.saturating_duration_since(s.last_used) >= ABANDONED_AFTER
            })
        })
        .map(|(sid, _)| sid.clone())
        .collect();
    for sid in &abandoned {
        if let Some(slot) = map.remove(sid)
            && let Ok(mut s) = slot.state.try_lock()
        {
            slot.close(&mut s);
        }
    }
    abandoned
}

/// End a session nobody has used for [`IMPORT_IDLE_SECS`] and drop what it
/// staged. Holds the sessions and the store only weakly, so a stopped daemon
/// can close its store without waiting for this task.
async fn reap_when_idle(imports: std::sync::Weak<Imports>, core: WeakCore, sid: String) {
    let limit = Duration::from_secs(IMPORT_IDLE_SECS);
    loop {
        tokio::time::sleep(limit / 5).await;
        let Some(reg) = imports.upgrade() else { return };
        let Ok(slot) = reg.get(&sid) else {
            return; // committed or aborted
        };
        let mut s = slot.state.lock().await;
        if s.closed {
            return;
        }
        if core
            .clock()
            .instant()
            .saturating_duration_since(s.last_used)
            <= limit
        {
            continue;
        }
        // Closed under the lock: a late chunk cannot race the drop.
        slot.close(&mut s);
        reg.remove(&sid);
        let id = sid.clone();
        // The store is gone when the daemon stopped: nothing to drop then.
        let Some(core) = core.upgrade() else { return };
        match core.with_store(move |s| s.drop_oob_staging(&id)).await {
            Ok(()) => tracing::info!(session = %sid, "idle OOB import session dropped"),
            Err(e) => {
                tracing::warn!(session = %sid, error = ?e, "could not drop idle import staging")
            }
        }
        return;
    }
}

/// The session's state, locked, checked to belong to this administrator
/// and to be open.
async fn lock_open<'a>(
    slot: &'a Slot,
    admin: &str,
) -> Result<tokio::sync::MutexGuard<'a, Session>, Error> {
    let guard = slot.state.lock().await;
    if guard.closed || guard.admin != admin {
        return Err(Error::not_found("no such import session"));
    }
    Ok(guard)
}

/// The right to send one chunk to a session: taken before the body is read,
/// so at most [`CHUNKS_IN_FLIGHT`] chunks per session are in memory.
pub struct ChunkTicket {
    slot: Arc<Slot>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Take a ticket for a chunk of session `sid` of administrator `a`.
pub async fn chunk_ticket(
    imports: &Imports,
    core: &Core,
    a: &Actor,
    sid: &str,
) -> Result<ChunkTicket, Error> {
    let slot = imports.get(sid)?;
    {
        let mut s = lock_open(&slot, &a.name).await?;
        s.last_used = core.clock.instant();
    }
    let permit = slot
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::not_found("no such import session"))?;
    Ok(ChunkTicket {
        slot,
        _permit: permit,
    })
}

/// A chunk: checked outside the session's lock, then staged in order.
pub async fn chunk(
    _imports: &Arc<Imports>,
    core: &Core,
    a: &Actor,
    ticket: ChunkTicket,
    body: &[u8],
) -> Result<OobImportChunkAck, Error> {
    let slot = &ticket.slot;
    let body_sha = sha256(body);
    let c: OobImportChunk = parse_json(body)?;
    let next = *slot.next_seq.borrow();
    if c.seq.checked_add(1) == Some(next) {
        // The answer to this chunk was lost; it is staged already.
        let s = lock_open(slot, &a.name).await?;
        return resent(&s, c.seq, &body_sha);
    }
    if c.seq < next || c.seq >= next.saturating_add(CHUNKS_IN_FLIGHT) {
        return Err(Error::conflict(format!(
            "expected chunk {next}, got {}",
            c.seq
        )));
    }
    if c.entries.len() > MAX_OOB_BATCH {
        return Err(Error::bad_request(format!(
            "at most {MAX_OOB_BATCH} entries per chunk"
        )));
    }
    let records = validate_parallel(c.entries, core.now()).await?;

    // Wait for the chunks before this one to be staged.
    let mut turn = slot.next_seq.subscribe();
    match tokio::time::timeout(ORDER_WAIT, turn.wait_for(|n| *n >= c.seq)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err(Error::not_found("no such import session")),
        Err(_) => {
            return Err(Error::conflict(format!(
                "chunk {} did not arrive in time before chunk {}",
                c.seq.saturating_sub(1),
                c.seq
            )));
        }
    }
    let mut s = lock_open(slot, &a.name).await?;
    if c.seq.checked_add(1) == Some(s.next_seq) {
        // Sent twice, and the other copy was staged first.
        return resent(&s, c.seq, &body_sha);
    }
    if c.seq != s.next_seq {
        return Err(Error::conflict(format!(
            "expected chunk {}, got {}",
            s.next_seq, c.seq
        )));
    }
    if s.staged + records.len() as u64 > MAX_IMPORT_ENTRIES {
        return Err(Error::bad_request(format!(
            "an import holds at most {MAX_IMPORT_ENTRIES} entries"
        )));
    }
    let session = s.id.clone();
    let staged = core
        .with_store(move |st| {
            let (staged, errors) = st.stage_oob(&session, &records)?;
            if !errors.is_empty() {
                return Err(refused(errors));
            }
            Ok(staged)
        })
        .await?;
    s.staged = staged;
    s.last_body = body_sha;
    s.next_seq += 1;
    s.last_used = core.clock.instant();
    slot.next_seq.send_replace(s.next_seq);
    Ok(OobImportChunkAck { seq: c.seq, staged })
}

/// The answer to the last staged chunk sent again: acknowledged if it is
/// the same request, a conflict if other entries came under its number.
fn resent(s: &Session, seq: u64, body_sha: &[u8; 32]) -> Result<OobImportChunkAck, Error> {
    if s.last_body != *body_sha {
        return Err(Error::conflict(format!(
            "chunk {seq} was staged already with other content; send the next chunk ({})",
            s.next_seq
        )));
    }
    Ok(OobImportChunkAck {
        seq,
        staged: s.staged,
    })
}

/// Check a chunk on all cores: parsing keys is the expensive part. Problems
/// come back with indexes into the chunk, as one error listing all of them.
async fn validate_parallel(
    entries: Vec<idprov_proto::admin::OobEntryInput>,
    now: i64,
) -> Result<Vec<OobRecord>, Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let per = entries.len().div_ceil(threads).max(1);
    let entries = Arc::new(entries);
    let mut tasks = Vec::new();
    for start in (0..entries.len()).step_by(per) {
        let entries = entries.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let end = (start + per).min(entries.len());
            (start, validate_oob(&entries[start..end], now))
        }));
    }
    let mut records = Vec::with_capacity(entries.len());
    let mut errors: Vec<EntryError> = Vec::new();
    for t in tasks {
        let (start, r) = t
            .await
            .map_err(|e| Error::internal("validation task failed", e))?;
        match r {
            Ok(part) => records.extend(part),
            Err(Error::Invalid { details, .. }) if !details.is_empty() => {
                errors.extend(details.into_iter().map(|mut x| {
                    x.index += start;
                    x
                }))
            }
            Err(e) => return Err(e),
        }
    }
    if !errors.is_empty() {
        return Err(refused(errors));
    }
    Ok(records)
}

fn refused(errors: Vec<EntryError>) -> Error {
    Error::invalid(
        format!("{} entries refused; nothing was stored", errors.len()),
        errors,
    )
}

/// Commit (or dry-run) what session `sid` staged; the session ends.
pub async fn commit(
    imports: &Arc<Imports>,
    core: &Core,
    a: &Actor,
    sid: &str,
    c: OobImportCommit,
) -> Result<OobImportResult, Error> {
    let sid = sid.to_string();
    let reg = imports;
    let slot = reg.get(&sid)?;
    let mut s = lock_open(&slot, &a.name).await?;
    // Whatever happens now, the session ends. It stays registered, closed
    // and locked, until the commit is over: a client whose answer was lost
    // asks about the session (abort), waits here for the outcome, and only
    // then gets "not found" and looks for the commit in the audit log.
    slot.close(&mut s);
    let result = commit_locked(core, a, &sid, &s, c).await;
    reg.remove(&sid);
    result
}

/// The commit proper, under the session's lock.
async fn commit_locked(
    core: &Core,
    a: &Actor,
    sid: &str,
    s: &Session,
    c: OobImportCommit,
) -> Result<OobImportResult, Error> {
    let sid = sid.to_string();
    if c.expected_entries != s.staged {
        let session = sid.clone();
        core.with_store(move |s| s.drop_oob_staging(&session))
            .await?;
        return Err(Error::conflict(format!(
            "the daemon staged {} entries but the commit expects {}; nothing was imported (the session is closed)",
            s.staged, c.expected_entries
        )));
    }
    let opts = CommitOptions {
        replace: s.replace,
        prune: s.prune,
        dry_run: c.dry_run,
        expected_entries: c.expected_entries,
        now: core.now(),
    };
    let session = s.id.clone();
    let session_name = s.id.clone();
    let actor = a.clone();
    let outcome = core
        .with_store(move |st| {
            let committed = st.commit_oob_import(&session, opts, &mut |result| {
                Some(draft(
                    opts.now,
                    &format!("admin:{}", actor.name),
                    "oob_import",
                    None,
                    Some(&actor.source),
                    // The session id lets a client that lost the answer
                    // find out that its import was committed.
                    format!(
                        "session {session_name}: added {}, changed {}, unchanged {}, removed {}",
                        result.added, result.changed, result.unchanged, result.removed
                    ),
                ))
            })?;
            committed.map_err(refused)
        })
        .await;
    match outcome {
        Ok((result, entry, count)) => {
            if let Some(entry) = entry {
                core.publish(vec![
                    AdminEvent::OobChanged { count },
                    AdminEvent::Audit { entry },
                ]);
            }
            tracing::info!(admin = %a.name, session = %sid, added = result.added, changed = result.changed,
                unchanged = result.unchanged, removed = result.removed, dry_run = result.dry_run, "OOB import finished");
            Ok(result)
        }
        Err(e) => {
            // The commit transaction was aborted; drop what was staged.
            let session = sid.clone();
            if let Err(drop_err) = core.with_store(move |s| s.drop_oob_staging(&session)).await {
                tracing::warn!(session = %sid, error = ?drop_err, "could not drop import staging");
            }
            Err(e)
        }
    }
}

/// Abort session `sid` and drop what it staged.
pub async fn abort(imports: &Arc<Imports>, core: &Core, a: &Actor, sid: &str) -> Result<(), Error> {
    let reg = imports;
    let slot = reg.get(sid)?;
    let mut s = lock_open(&slot, &a.name).await?;
    slot.close(&mut s);
    reg.remove(sid);
    let session = s.id.clone();
    core.with_store(move |s| s.drop_oob_staging(&session))
        .await?;
    tracing::info!(admin = %a.name, session = %sid, "OOB import aborted");
    Ok(())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // The same rule as every other body (the HTTP layer's extractor): a
    // chunk is parsed here because its exact bytes are hashed here.
    idprov_proto::json::from_object_slice(bytes).map_err(|e| Error::bad_request(e.to_string()))
}

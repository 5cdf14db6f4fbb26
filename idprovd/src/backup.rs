//! Backups and restores of a whole data dir.
//!
//! A backup is made *by the running daemon* (redb lets one process open the
//! database): `GET /idprov/v1/admin/backup` copies every table from one read
//! transaction into a fresh database (see `store::backup`), adds the key
//! files, and streams a tar archive:
//!
//! ```text
//! idprov-backup.json   manifest: format, daemon id, counts, SHA-256 of each file
//! identity.json ca.pem ca.key signing.key server.key server.pem
//! admins.json admin.profile idprov.redb
//! ```
//!
//! The archive holds the CA and token-signing private keys and an
//! administrator token: it is as secret as the data dir itself. `restore`
//! checks every hash and opens the restored store before it puts anything in
//! place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::Daemon;
use crate::admins::{ADMINS_FILE, FIRST_PROFILE};
use crate::error::Error;
use crate::pki::{CA_CERT, CA_KEY, IDENTITY, SERVER_CERT, SERVER_KEY, SIGNING_KEY};
use crate::store::{RedbStore, STORE_FILE, SnapshotCounts, StoreError};

pub const FORMAT: &str = "idprov-backup/1";
pub const MANIFEST: &str = "idprov-backup.json";

/// The files of a data dir a backup carries: name, mode, required.
const FILES: &[(&str, u32, bool)] = &[
    (IDENTITY, 0o644, true),
    (CA_CERT, 0o644, true),
    (CA_KEY, 0o600, true),
    (SIGNING_KEY, 0o600, true),
    (SERVER_KEY, 0o600, true),
    (SERVER_CERT, 0o644, false),
    (ADMINS_FILE, 0o600, false),
    (FIRST_PROFILE, 0o600, false),
    (STORE_FILE, 0o600, true),
];

/// Largest key or JSON file accepted from an archive (they are a few KiB).
const MAX_SMALL_FILE: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("not a valid idprov backup: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not empty; restore into an empty or new directory, or pass --force")]
    NotEmpty(PathBuf),
    #[error("a daemon is using {0}; stop it before restoring over its data dir")]
    InUse(PathBuf),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub daemon_id: String,
    pub ca_fingerprint: String,
    /// Unix seconds, daemon clock.
    pub created_at: i64,
    pub idprovd_version: String,
    pub idprovd_revision: String,
    pub counts: SnapshotCounts,
    pub files: Vec<FileEntry>,
}

// ---------------------------------------------------------------- making

/// One backup at a time: each copies the whole store.
static RUNNING: Semaphore = Semaphore::const_new(1);

/// Make a backup archive for an administrator and audit the export (the
/// keys leave the hub: that is itself a decision). Returns the archive,
/// rewound, its size and its manifest.
pub async fn export(
    d: &Arc<Daemon>,
    actor: crate::admin_ops::Actor,
) -> Result<(File, u64, Manifest), Error> {
    let this = d;
    {
        let _permit = RUNNING
            .try_acquire()
            .map_err(|_| Error::busy("a backup is already running", Some(10)))?;
        let started = std::time::Instant::now();
        let d2 = this.clone();
        let (file, size, manifest) = tokio::task::spawn_blocking(move || build(&d2))
            .await
            .map_err(|e| Error::internal("the backup failed", e))?
            .map_err(|e| Error::Internal {
                message: format!("the backup failed: {e}"),
                source: Some(Box::new(e)),
            })?;
        let now = this.now();
        let src = actor.source.clone();
        let detail = format!(
            "{} devices, {} OOB entries, {size} bytes",
            manifest.counts.devices, manifest.counts.oob
        );
        let admin = format!("admin:{}", actor.name);
        this.core
            .transact(move |_, u| {
                u.audit(crate::audit::draft(
                    now,
                    &admin,
                    "backup_exported",
                    None,
                    Some(&src),
                    detail.clone(),
                ));
                Ok(())
            })
            .await?;
        tracing::info!(
            admin = %actor.name,
            bytes = size,
            devices = manifest.counts.devices,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "backup exported"
        );
        Ok((file, size, manifest))
    }
}

/// Build the archive in an unlinked temporary file in the data dir (which
/// is private to the daemon); returns it rewound, with its size.
pub fn build(d: &Daemon) -> Result<(File, u64, Manifest), BackupError> {
    let dir = &d.cfg.data_dir;
    let tmp_err = io_err(format!("creating a temporary file in {}", dir.display()));
    let db_file = tempfile::tempfile_in(dir).map_err(tmp_err)?;
    let mut db_read = db_file
        .try_clone()
        .map_err(io_err("duplicating a file handle"))?;
    let counts = d.store.snapshot_into(db_file)?;
    db_read
        .rewind()
        .map_err(io_err("rewinding the store copy"))?;

    // Everything but the store is small: read it whole.
    let mut small: Vec<(&str, u32, Vec<u8>)> = Vec::new();
    for &(name, mode, required) in FILES {
        if name == STORE_FILE {
            continue;
        }
        match fs::read(dir.join(name)) {
            Ok(bytes) => small.push((name, mode, bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {}
            Err(e) => return Err(io_err(format!("reading {}", dir.join(name).display()))(e)),
        }
    }
    let mut files: Vec<FileEntry> = small
        .iter()
        .map(|(name, mode, bytes)| FileEntry {
            name: name.to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(digest::digest(&digest::SHA256, bytes)),
            mode: *mode,
        })
        .collect();
    let (db_size, db_hash) = hash_reader(&mut db_read).map_err(io_err("reading the store copy"))?;
    db_read
        .rewind()
        .map_err(io_err("rewinding the store copy"))?;
    files.push(FileEntry {
        name: STORE_FILE.to_string(),
        size: db_size,
        sha256: db_hash,
        mode: 0o600,
    });
    let manifest = Manifest {
        format: FORMAT.to_string(),
        daemon_id: d.daemon_id().to_string(),
        ca_fingerprint: d.pki.ca_fingerprint.clone(),
        created_at: d.now(),
        idprovd_version: env!("CARGO_PKG_VERSION").to_string(),
        idprovd_revision: crate::metrics::build_revision().to_string(),
        counts,
        files,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Invalid(format!("manifest: {e}")))?;

    let out = tempfile::tempfile_in(dir).map_err(io_err(format!(
        "creating a temporary file in {}",
        dir.display()
    )))?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(256 * 1024, out));
    let mtime = u64::try_from(manifest.created_at).unwrap_or(0);
    let add = |tar: &mut tar::Builder<_>, name: &str, mode: u32, size: u64, r: &mut dyn Read| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append_data(&mut h, name, r)
            .map_err(io_err(format!("writing {name} to the archive")))
    };
    add(
        &mut tar,
        MANIFEST,
        0o600,
        manifest_json.len() as u64,
        &mut manifest_json.as_slice(),
    )?;
    for (name, mode, bytes) in &small {
        add(
            &mut tar,
            name,
            *mode,
            bytes.len() as u64,
            &mut bytes.as_slice(),
        )?;
    }
    add(&mut tar, STORE_FILE, 0o600, db_size, &mut db_read)?;
    let mut out = tar
        .into_inner()
        .map_err(io_err("finishing the archive"))?
        .into_inner()
        .map_err(|e| io_err("flushing the archive")(e.into_error()))?;
    let size = out
        .stream_position()
        .map_err(io_err("sizing the archive"))?;
    out.rewind().map_err(io_err("rewinding the archive"))?;
    Ok((out, size, manifest))
}

fn hash_reader(r: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(ctx.finish())))
}

// ---------------------------------------------------------------- reading

/// Read an archive, checking the manifest, every name, size and hash.
/// `sink` receives each file's bytes (pass `io::sink()`-like writers to only
/// verify).
fn read_archive(
    r: impl Read,
    mut sink: impl FnMut(&FileEntry) -> Result<Box<dyn Write>, BackupError>,
) -> Result<Manifest, BackupError> {
    let mut ar = tar::Archive::new(r);
    let mut entries = ar.entries().map_err(io_err("reading the archive"))?;
    let invalid = |m: String| BackupError::Invalid(m);

    let mut first = entries
        .next()
        .ok_or_else(|| invalid("the archive is empty".into()))?
        .map_err(io_err("reading the archive"))?;
    if entry_name(&first)? != MANIFEST || first.size() > MAX_SMALL_FILE {
        return Err(invalid(format!("the first entry must be {MANIFEST}")));
    }
    let mut raw = Vec::new();
    first
        .read_to_end(&mut raw)
        .map_err(io_err("reading the manifest"))?;
    let manifest: Manifest =
        serde_json::from_slice(&raw).map_err(|e| invalid(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(invalid(format!(
            "format {:?}; this idprovd reads {FORMAT}",
            manifest.format
        )));
    }
    for f in &manifest.files {
        if !FILES.iter().any(|(n, _, _)| *n == f.name) {
            return Err(invalid(format!(
                "unexpected file {:?} in the manifest",
                f.name
            )));
        }
    }
    for &(name, _, required) in FILES {
        if required && !manifest.files.iter().any(|f| f.name == name) {
            return Err(invalid(format!("{name} is missing")));
        }
    }

    let mut seen: Vec<String> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading the archive"))?;
        let name = entry_name(&entry)?;
        let fe = manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| invalid(format!("unexpected entry {name:?}")))?;
        if seen.contains(&name) {
            return Err(invalid(format!("{name} appears twice")));
        }
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() != fe.size {
            return Err(invalid(format!(
                "{name}: not the file the manifest describes"
            )));
        }
        if name != STORE_FILE && fe.size > MAX_SMALL_FILE {
            return Err(invalid(format!("{name} is too large")));
        }
        let mut w = sink(fe)?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = entry
                .read(&mut buf)
                .map_err(io_err(format!("reading {name} from the archive")))?;
            if k == 0 {
                break;
            }
            ctx.update(&buf[..k]);
            w.write_all(&buf[..k])
                .map_err(io_err(format!("writing {name}")))?;
        }
        w.flush().map_err(io_err(format!("writing {name}")))?;
        if hex::encode(ctx.finish()) != fe.sha256 {
            return Err(invalid(format!(
                "{name}: checksum mismatch (damaged archive)"
            )));
        }
        seen.push(name);
    }
    for f in &manifest.files {
        if !seen.contains(&f.name) {
            return Err(invalid(format!(
                "{} is listed but missing (truncated archive?)",
                f.name
            )));
        }
    }
    Ok(manifest)
}

fn entry_name<R: Read>(e: &tar::Entry<'_, R>) -> Result<String, BackupError> {
    let path = e.path().map_err(io_err("reading an entry name"))?;
    let name = path.to_str().unwrap_or("");
    // Plain file names only: nothing can land outside the target dir.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(BackupError::Invalid(format!("bad entry name {:?}", path)));
    }
    Ok(name.to_string())
}

/// Check a backup file completely without writing anything.
pub fn verify(archive: &Path) -> Result<Manifest, BackupError> {
    let f = File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    read_archive(io::BufReader::new(f), |_| Ok(Box::new(io::sink())))
}

// ---------------------------------------------------------------- restoring

/// Restore `archive` into `dir`. A non-empty `dir` is refused unless
/// `force`; a dir whose store a daemon holds open is always refused.
pub fn restore(archive: &Path, dir: &Path, force: bool) -> Result<Manifest, BackupError> {
    let exists = dir.exists();
    if exists {
        let mut it = fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
        if it.next().is_some() && !force {
            return Err(BackupError::NotEmpty(dir.to_path_buf()));
        }
        let live = dir.join(STORE_FILE);
        if live.exists()
            && let Err(redb::DatabaseError::DatabaseAlreadyOpen) = redb::Database::open(&live)
        {
            return Err(BackupError::InUse(dir.to_path_buf()));
        }
    }
    // Unpack next to the target, on the same file system, so the final
    // step is renames.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let leaf = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("idprovd");
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{leaf}.restore-"))
        .tempdir_in(&parent)
        .map_err(io_err(format!(
            "creating a staging dir in {}",
            parent.display()
        )))?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod the staging dir"))?;

    let f = File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let sdir = staging.path().to_path_buf();
    let manifest = read_archive(io::BufReader::new(f), |fe| {
        let path = sdir.join(&fe.name);
        // Modes come from this table, never from the archive.
        let mode = FILES
            .iter()
            .find(|(n, _, _)| *n == fe.name)
            .map_or(0o600, |(_, m, _)| *m);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(io_err(format!("creating {}", path.display())))?;
        Ok(Box::new(SyncOnFlush(io::BufWriter::new(file))))
    })?;

    // Prove the restored dir works before it replaces anything.
    let identity: crate::pki::Identity = serde_json::from_slice(
        &fs::read(sdir.join(IDENTITY)).map_err(io_err("reading the restored identity"))?,
    )
    .map_err(|e| BackupError::Invalid(format!("{IDENTITY}: {e}")))?;
    if identity.daemon_id != manifest.daemon_id {
        return Err(BackupError::Invalid(format!(
            "{IDENTITY} names {} but the manifest {}",
            identity.daemon_id, manifest.daemon_id
        )));
    }
    let (_, fingerprint) = crate::pki::read_ca(&sdir)
        .map_err(|e| BackupError::Invalid(format!("{CA_CERT}: {e:#}")))?;
    if fingerprint != manifest.ca_fingerprint {
        return Err(BackupError::Invalid(
            "the CA does not match the manifest".into(),
        ));
    }
    drop(RedbStore::open(&sdir, &identity.daemon_id, false)?);

    let staged = staging.keep();
    let place = || -> Result<(), BackupError> {
        if !exists {
            return fs::rename(&staged, dir)
                .map_err(io_err(format!("moving into {}", dir.display())));
        }
        for &(name, _, _) in FILES {
            let from = staged.join(name);
            let to = dir.join(name);
            if from.exists() {
                fs::rename(&from, &to).map_err(io_err(format!("replacing {}", to.display())))?;
            } else if to.exists() {
                // Left from whatever lived here before: it would not match.
                fs::remove_file(&to).map_err(io_err(format!("removing {}", to.display())))?;
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
        fs::remove_dir(&staged).map_err(io_err(format!("removing {}", staged.display())))
    };
    let placed = place();
    if placed.is_err() && staged.exists() {
        let _ = fs::remove_dir_all(&staged);
    }
    placed?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    if let Ok(d) = File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(manifest)
}

/// A writer whose flush also fsyncs: a restored file is on disk before it is
/// moved into place.
struct SyncOnFlush(io::BufWriter<File>);

impl Write for SyncOnFlush {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_all()
    }
}

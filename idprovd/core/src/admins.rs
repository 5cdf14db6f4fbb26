//! Administrator credentials. They live in `admins.json` in the data dir, not
//! in the redb store, so `idprovd admin add/list/remove` work while the
//! daemon runs without ever opening its database (redb locks it to one
//! process). The daemon re-reads the file when it changes, so a removal takes
//! effect on the next request.
//!
//! A token is `idpa.<name>.<secret>`; only its SHA-256 is stored.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use idprov_proto::Secret;
use idprov_proto::admin::AdminProfile;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::pki::write_atomic;

pub const ADMINS_FILE: &str = "admins.json";
pub const FIRST_PROFILE: &str = "admin.profile";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub admins: Vec<AdminEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminEntry {
    pub name: String,
    /// Hex SHA-256 of the whole token.
    pub token_sha256: String,
    pub created_at: i64,
}

/// Administrator names: 1–32 of `[a-z0-9_-]`, starting with a letter/digit
/// (no `.`: it separates the name from the secret in a token).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !ok {
        bail!("administrator names are 1-32 characters of a-z 0-9 _ - (got {name:?})");
    }
    Ok(())
}

/// The daemon's cached view of `admins.json`.
pub struct AdminRegistry {
    path: PathBuf,
    cache: Mutex<(Option<(SystemTime, u64)>, AdminFile)>,
}

impl AdminRegistry {
    pub fn new(data_dir: &Path) -> Self {
        AdminRegistry {
            path: data_dir.join(ADMINS_FILE),
            cache: Mutex::new((None, AdminFile::default())),
        }
    }

    /// The administrator a bearer token belongs to, if any.
    pub fn authenticate(&self, token: &str) -> Option<String> {
        let name = token.strip_prefix("idpa.")?.split('.').next()?;
        let digest = idprov_proto::keys::sha256_hex(token.as_bytes());
        let mut guard = self.cache.lock().ok()?;
        let stamp = fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp != guard.0 {
            let file = read_file(&self.path).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read admin registry; refusing all admins");
                AdminFile::default()
            });
            *guard = (stamp, file);
        }
        let entry = guard.1.admins.iter().find(|a| a.name == name)?;
        let ok: bool = entry
            .token_sha256
            .as_bytes()
            .ct_eq(digest.as_bytes())
            .into();
        ok.then(|| entry.name.clone())
    }
}

fn read_file(path: &Path) -> Result<AdminFile> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Run `f` on the admin file under an exclusive lock, then write it back
/// atomically (two `admin add` at once must not lose one).
fn update<T>(data_dir: &Path, f: impl FnOnce(&mut AdminFile) -> Result<T>) -> Result<T> {
    let lock_path = data_dir.join(".admins.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock().context("locking the admin registry")?;
    let path = data_dir.join(ADMINS_FILE);
    let mut file = read_file(&path)?;
    let out = f(&mut file)?;
    write_atomic(&path, &serde_json::to_vec_pretty(&file)?, 0o600)?;
    Ok(out)
}

/// Create an administrator and return the profile that holds its token.
pub fn add(
    data_dir: &Path,
    name: &str,
    server: &str,
    ca_cert_pem: &str,
    ca_fingerprint: &str,
    now: i64,
) -> Result<AdminProfile> {
    check_name(name)?;
    let secret = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    };
    let token = format!("idpa.{name}.{secret}");
    let digest = idprov_proto::keys::sha256_hex(token.as_bytes());
    update(data_dir, |file| {
        if file.admins.iter().any(|a| a.name == name) {
            bail!("administrator {name:?} already exists; remove it first");
        }
        file.admins.push(AdminEntry {
            name: name.to_string(),
            token_sha256: digest,
            created_at: now,
        });
        Ok(())
    })?;
    Ok(AdminProfile {
        name: name.to_string(),
        server: server.to_string(),
        token: Secret::new(token),
        ca_cert: ca_cert_pem.to_string(),
        ca_fingerprint: ca_fingerprint.to_string(),
    })
}

/// Whether a removal may leave the daemon with no administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAdmin {
    /// Refuse: nobody could administer the daemon afterwards (the command
    /// line's `admin remove`).
    Keep,
    /// Allow (undoing an `admin add` whose profile could not be written).
    MayRemove,
}

pub fn remove(data_dir: &Path, name: &str, last: LastAdmin) -> Result<()> {
    update(data_dir, |file| {
        if !file.admins.iter().any(|a| a.name == name) {
            return Err(anyhow!("no administrator named {name:?}"));
        }
        if last == LastAdmin::Keep && file.admins.len() == 1 {
            bail!(
                "refusing to remove {name:?}, the last administrator: nobody could administer \
                 the daemon; add another first (idprovd admin add NAME --out FILE)"
            );
        }
        file.admins.retain(|a| a.name != name);
        Ok(())
    })
}

pub fn list(data_dir: &Path) -> Result<Vec<AdminEntry>> {
    Ok(read_file(&data_dir.join(ADMINS_FILE))?.admins)
}

/// Whether writing a profile may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingProfile {
    Refuse,
    /// `admin add --force`: replace it (atomically; the old token in it is
    /// the one of an administrator that may no longer exist).
    Replace,
}

/// Write a profile file, 0600, atomically.
pub fn write_profile(path: &Path, profile: &AdminProfile, existing: ExistingProfile) -> Result<()> {
    if existing == ExistingProfile::Refuse && path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it (--force replaces it)",
            path.display()
        );
    }
    let text = toml::to_string_pretty(profile).context("rendering the profile")?;
    write_atomic(path, text.as_bytes(), 0o600)
}

//! The device's state directory: its credentials and the CA it pinned.
//!
//! Files are replaced atomically (write a temporary file in the same
//! directory, fsync, rename, fsync the directory) with mode 0600, so a power
//! cut leaves either the old or the new credentials, never a torn file, and a
//! device that restarts picks up where it was without provisioning again.
//!
//! A client certificate is part of the credentials (so it is reloaded with
//! them) and is also written to `certificate.pem`, leaf then CA chain, for
//! TLS stacks that want a file. That copy is written first, so the file the
//! device restarts from never names a certificate that was not saved.

use std::io::Write;
use std::path::{Path, PathBuf};

use idprov_proto::device::Credentials;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::trust::PinnedCa;

const CREDENTIALS: &str = "credentials.json";
const CA: &str = "ca.pem";
const CERTIFICATE: &str = "certificate.pem";

/// What is saved with the credentials: enough to renew without discovery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedState {
    pub credentials: Credentials,
    /// The daemon that issued them (its id is part of every proof's audience).
    pub daemon_id: String,
    /// The base URL they were obtained from.
    pub server: String,
    /// Server clock minus local clock when saved, milliseconds.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Use `dir`, creating it (mode 0700) if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir).map_err(|source| Error::Store {
            path: dir.clone(),
            source,
        })?;
        Ok(StateDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The saved credentials, if any. A file that cannot be parsed is
    /// reported, not silently ignored: it means corruption or tampering.
    pub fn load_state(&self) -> Result<Option<SavedState>, Error> {
        let Some(bytes) = self.read(CREDENTIALS)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Store {
                path: self.dir.join(CREDENTIALS),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    pub fn save_state(&self, state: &SavedState) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::Store {
            path: self.dir.join(CREDENTIALS),
            source: std::io::Error::other(e),
        })?;
        match &state.credentials.certificate {
            Some(cert) => {
                let mut pem = String::new();
                for block in std::iter::once(cert).chain(&state.credentials.ca_chain) {
                    pem.push_str(block.trim_end());
                    pem.push('\n');
                }
                self.write_atomic(CERTIFICATE, pem.as_bytes())?;
            }
            None => self.remove(CERTIFICATE)?,
        }
        self.write_atomic(CREDENTIALS, &bytes)
    }

    /// Where the client certificate (PEM, leaf then chain) is written.
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE)
    }

    /// Forget the credentials (after the daemon refused the device).
    pub fn clear_state(&self) -> Result<(), Error> {
        self.remove(CREDENTIALS)?;
        self.remove(CERTIFICATE)
    }

    fn remove(&self, name: &str) -> Result<(), Error> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Store { path, source }),
        }
    }

    /// The CA pinned on first use (or saved after a fingerprint check).
    pub fn load_ca(&self) -> Result<Option<PinnedCa>, Error> {
        match self.read(CA)? {
            None => Ok(None),
            Some(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| Error::Store {
                    path: self.dir.join(CA),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                PinnedCa::from_pem(&text).map(Some)
            }
        }
    }

    pub fn save_ca(&self, ca: &PinnedCa) -> Result<(), Error> {
        self.write_atomic(CA, ca.to_pem().as_bytes())
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Store { path, source }),
        }
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp{}", std::process::id()));
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Store { path: p, source }
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let result = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Result<SavedState, Error> {
        Ok(SavedState {
            credentials: Credentials {
                device_id: "dev-1".parse()?,
                token: "a.b.c".into(),
                issued_at: 100,
                expires_at: 200,
                renew_after: 150,
                key_id: "kid".into(),
                certificate: None,
                ca_chain: Vec::new(),
            },
            daemon_id: "d1".into(),
            server: "https://10.0.0.1:8445".into(),
            clock_offset_ms: Some(-5),
        })
    }

    #[test]
    fn save_load_replace_clear() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::config_from("test setup", e))?;
        let dir = StateDir::open(tmp.path().join("state"))?;
        assert_eq!(dir.load_state()?, None);
        let mut s = state()?;
        dir.save_state(&s)?;
        assert_eq!(dir.load_state()?, Some(s.clone()));
        s.credentials.token = "d.e.f".into();
        dir.save_state(&s)?;
        assert_eq!(dir.load_state()?, Some(s));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .map_err(|e| Error::config_from("test setup", e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CREDENTIALS)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(CREDENTIALS))
                .map_err(|e| Error::config_from("test setup", e))?;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        dir.clear_state()?;
        assert_eq!(dir.load_state()?, None);
        Ok(())
    }

    #[test]
    fn certificate_is_written_next_to_the_credentials() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::config_from("test setup", e))?;
        let dir = StateDir::open(tmp.path())?;
        let mut s = state()?;
        s.credentials.certificate = Some("LEAF\n".into());
        s.credentials.ca_chain = vec!["CA".into()];
        dir.save_state(&s)?;
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::config_from("test setup", e));
        assert_eq!(read(&dir.certificate_path())?, "LEAF\nCA\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.certificate_path())
                .map_err(|e| Error::config_from("test setup", e))?;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(dir.load_state()?, Some(s.clone()));
        // Credentials without a certificate leave no stale certificate file.
        s.credentials.certificate = None;
        dir.save_state(&s)?;
        assert!(!dir.certificate_path().exists());
        s.credentials.certificate = Some("LEAF".into());
        dir.save_state(&s)?;
        dir.clear_state()?;
        assert!(!dir.certificate_path().exists());
        Ok(())
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_fresh_start() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::config_from("test setup", e))?;
        let dir = StateDir::open(tmp.path())?;
        std::fs::write(tmp.path().join(CREDENTIALS), b"{not json")
            .map_err(|e| Error::config_from("test setup", e))?;
        assert!(matches!(dir.load_state(), Err(Error::Store { .. })));
        Ok(())
    }
}

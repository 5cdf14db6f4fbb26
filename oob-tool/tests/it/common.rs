//! Shared by the oob-tool tests: a real daemon in this process (port 0, its
//! own data dir), and the real `idprov-oob` binary run against it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use idprov_admin_client::AdminClient;
use idprov_proto::admin::{ListQuery, OobEntryView};
use idprov_tests::TestDaemon;

pub struct Env {
    pub daemon: TestDaemon,
    pub work: tempfile::TempDir,
    pub profile: PathBuf,
}

impl Env {
    pub async fn start() -> Env {
        let daemon = TestDaemon::start().await.expect("daemon starts");
        let work = tempfile::tempdir().expect("tempdir");
        let profile = daemon.profile_path();
        Env {
            daemon,
            work,
            profile,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }

    /// Run `idprov-oob --profile P ARGS...` in the work dir.
    pub async fn oob(&self, args: &[&str]) -> Output {
        run_oob(&self.profile, self.work.path(), args).await
    }

    /// Write `content` to `name` and import it; it must succeed.
    pub async fn import_ok(&self, name: &str, content: &str) {
        let file = self.write(name, content);
        let out = self.oob(&["import", &file.to_string_lossy()]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }

    pub fn admin(&self) -> AdminClient {
        self.daemon.admin().expect("admin client")
    }

    pub async fn entries(&self) -> Vec<OobEntryView> {
        list_all(&self.admin()).await
    }
}

pub async fn run_oob(profile: &Path, cwd: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_idprov-oob"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .current_dir(cwd)
        .env_remove("IDPROV_PROFILE")
        .output()
        .await
        .expect("idprov-oob runs")
}

pub async fn list_all(admin: &AdminClient) -> Vec<OobEntryView> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = admin
            .oob_list(&ListQuery {
                after: after.take(),
                limit: Some(1000),
                q: None,
            })
            .await
            .expect("list");
        out.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn es256_public() -> String {
    idprov_oob::generate::es256().expect("keygen").public_pem
}

pub fn es256_private() -> String {
    idprov_oob::generate::es256().expect("keygen").private_pem
}

/// An RSA-1024 public key: too short, must be refused.
pub const RSA_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC9b7cC/Wpb3nhXp2GBLct8tvwj
NYuH84jppgaQpcZXjgHvamGodLVIOAWOD6XA3Mae5Ws1uyRTmvnNPWHTtdKvGsuv
XWyeZQzgv34gGEdmk7/HdqjdVYyDupEg5b5UU3Fma4wdN1mcZtVQllG+7AYtwrbw
7o+GzrIVfcxxNdgjOwIDAQAB
-----END PUBLIC KEY-----
";

/// A self-signed P-256 certificate (ES256_X509_PEM), valid until 2036.
pub const EC_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBcTCCARegAwIBAgIUZfL/r3kO+0GPFl5AeeFonZHIWqIwCgYIKoZIzj0EAwIw
DjEMMAoGA1UEAwwDZGV2MB4XDTI2MTEyMTIzMzI0OFoXDTM2MTExODIzMzI0OFow
DjEMMAoGA1UEAwwDZGV2MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYdbia+Hz
7c9xju2nzXrYZ6nfTLykiXvbj4C7bxvIDorPgBYSA0x4a8xjG5wUFPBT4oekzgGq
Fz6mlEyr093186NTMFEwHQYDVR0OBBYEFM5jSW8r1ncCT2XMwj3QqpOHIe5NMB8G
A1UdIwQYMBaAFM5jSW8r1ncCT2XMwj3QqpOHIe5NMA8GA1UdEwEB/wQFMAMBAf8w
CgYIKoZIzj0EAwIDSAAwRQIhAKJedti0tlVbJg92AMEtU/OPyTJpY/hDhw6DOUJ+
mzwxAiAEfoAcAklNGLbtLYkUYzRSSFX3k27F+f9Z8KNlKoNtwQ==
-----END CERTIFICATE-----
";

/// A CSV cell: quoted, with inner quotes doubled.
pub fn cell(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

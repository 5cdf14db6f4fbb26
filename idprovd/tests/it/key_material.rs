//! Key material in an initialised data dir is never created again (issue 13
//! item 1): each missing, damaged or replaced file stops the real binary
//! with exit 4, a message naming the file and how to restore, and the data
//! dir exactly as it was. Only a missing `server.key` (derived material) is
//! made again, its certificate issued from the intact CA.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ops_cli::{Daemon, idprovd};

/// Every file in `dir` with its mode and contents.
fn snapshot(dir: &Path) -> Result<BTreeMap<String, (u32, Vec<u8>)>> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            (meta.permissions().mode(), fs::read(e.path())?),
        );
    }
    Ok(m)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        fs::copy(e.path(), &dest)?;
    }
    Ok(())
}

/// Start the daemon on `dir`; it must stop by itself (a refusal) within a
/// bound. Exit code and standard error.
fn start_refused(dir: &Path) -> Result<(i32, String)> {
    let mut child = idprovd(dir)
        .args(["--listen", "127.0.0.1:0", "--no-metrics"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if child.try_wait()?.is_some() {
            let o = child.wait_with_output()?;
            return Ok((
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the daemon started on {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn damaged_key_material_is_refused_with_exit_4_and_the_dir_untouched() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let good = tmp.path().join("good");
    let other = tmp.path().join("other");
    for d in [&good, &other] {
        let (code, _) = Daemon::start(d, &[], &[]).terminate();
        assert_eq!(code, 0);
    }
    let key_of_other = |f: &str| fs::read(other.join(f)).context("other dir");
    let garbage = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".to_vec();

    // (case, file changed, its new contents or None to remove, words the
    // message must hold)
    type Damage = (Option<Vec<u8>>, &'static [&'static str]);
    let cases: Vec<(&str, Damage)> = vec![
        ("ca.key", (None, &["ca.key", "missing"])),
        (
            "ca.key",
            (
                Some(key_of_other("ca.key")?),
                &["ca.key", "does not match ca.pem"],
            ),
        ),
        ("ca.key", (Some(garbage.clone()), &["ca.key", "damaged"])),
        ("ca.pem", (None, &["ca.pem", "missing"])),
        ("signing.key", (None, &["signing.key", "missing"])),
        (
            "signing.key",
            (Some(key_of_other("signing.key")?), &["signing.key", "kid"]),
        ),
        ("server.key", (Some(garbage), &["server.key", "damaged"])),
        ("identity.json", (None, &["identity.json", "missing"])),
        ("idprov.redb", (None, &["idprov.redb", "missing"])),
    ];
    for (i, (file, (contents, words))) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        copy_dir(&good, &dir)?;
        match contents {
            None => fs::remove_file(dir.join(file))?,
            Some(b) => fs::write(dir.join(file), b)?,
        }
        let before = snapshot(&dir)?;
        let (code, stderr) = start_refused(&dir).with_context(|| format!("{file}: {words:?}"))?;
        assert_eq!(code, 4, "{file}: {stderr}");
        for w in words.iter().chain(&["restore"]) {
            assert!(stderr.contains(w), "{file}: {w:?} not in {stderr}");
        }
        assert!(snapshot(&dir)? == before, "{file}: the data dir changed");
    }

    // Both CA files replaced by another daemon's (a consistent pair, but
    // not the CA the devices pinned).
    let dir = tmp.path().join("ca-pair");
    copy_dir(&good, &dir)?;
    for f in ["ca.key", "ca.pem"] {
        fs::write(dir.join(f), key_of_other(f)?)?;
    }
    let before = snapshot(&dir)?;
    let (code, stderr) = start_refused(&dir)?;
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("ca.pem") && stderr.contains("fingerprint"),
        "{stderr}"
    );
    assert!(snapshot(&dir)? == before, "the data dir changed");
    Ok(())
}

#[test]
fn a_missing_server_key_is_issued_again_from_the_intact_ca() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    let (code, _) = Daemon::start(&dir, &[], &[]).terminate();
    assert_eq!(code, 0);
    let ca = fs::read(dir.join("ca.pem"))?;
    let identity = fs::read(dir.join("identity.json"))?;
    fs::remove_file(dir.join("server.key"))?;
    let d = Daemon::start(&dir, &[], &[]);
    // The new server certificate chains to the same CA: a TLS client that
    // trusts only ca.pem connects.
    let mut tls = crate::shutdown::tls_connect(&dir, &d.https)?;
    use std::io::Write;
    write!(
        tls,
        "GET /healthz HTTP/1.1\r\nHost: idprovd\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut tls, &mut answer).ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
    assert!(dir.join("server.key").exists());
    assert_eq!(fs::read(dir.join("ca.pem"))?, ca, "the CA is the same");
    assert_eq!(fs::read(dir.join("identity.json"))?, identity);
    Ok(())
}

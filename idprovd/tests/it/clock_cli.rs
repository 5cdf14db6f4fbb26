//! `idprovd clock show|accept` against the real daemon through its admin
//! API (the regressed case itself is tested with the injected clock in the
//! tests crate, `clock_accept`).

use anyhow::Result;

use crate::ops_cli::{Daemon, idprovd, out};

#[test]
fn clock_show_and_accept_speak_to_the_running_daemon() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    let d = Daemon::start(&dir, &[], &[]);
    let profile = dir.join("admin.profile");
    let (code, stdout, stderr) = out(idprovd(&dir)
        .args(["clock", "show", "--json", "--profile"])
        .arg(&profile));
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(v["regressed"], false, "{v}");
    assert!(v["now"].as_i64().is_some(), "{v}");
    // A clock that is not behind: accepted, nothing to change.
    let (code, stdout, stderr) = out(idprovd(&dir).args(["clock", "accept"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
    // The daemon is gone: the documented "could not be reached" code.
    let (code, _, stderr) = out(idprovd(&dir).args(["clock", "show"]));
    assert_eq!(code, 5, "{stderr}");
    Ok(())
}

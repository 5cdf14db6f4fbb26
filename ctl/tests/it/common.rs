//! The real `idprovctl` binary, run against a daemon of this process.

#![allow(clippy::expect_used, clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

pub async fn ctl(profile: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_idprovctl"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("IDPROV_PROFILE")
        .output()
        .await
        .expect("idprovctl runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run with `--json`; it must succeed and print one JSON document.
pub async fn ctl_json(profile: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = ctl(profile, &all).await;
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
}

/// Exit code and standard error of a run that must fail.
pub async fn ctl_fails(profile: &Path, args: &[&str]) -> (i32, String) {
    let o = ctl(profile, args).await;
    assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
    (o.status.code().unwrap_or(-1), stderr(&o))
}

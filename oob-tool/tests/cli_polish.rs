//! `--version` names the git revision; `check --json` reports every problem
//! in a form scripts can read, with the same exit code as without it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_idprov-oob");

#[test]
fn version_has_the_revision() {
    let o = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    // `idprov-oob 0.1.0 (0123456789ab)`, or `(unknown)` outside git.
    let rev = s
        .trim()
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{s}"));
    assert!(
        rev == "unknown" || rev.chars().all(|c| c.is_ascii_hexdigit()),
        "{rev}"
    );
}

#[test]
fn check_json_lists_problems_and_keeps_the_exit_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "device_id,mac\nok-1,02:00:00:00:00:01\nbad id!,02:00:00:00:00:02\n",
    )
    .expect("write");
    let o = Command::new(BIN)
        .args(["check", "--json"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{v}");
    assert!(
        problems[0]["at"]
            .as_str()
            .is_some_and(|a| a.ends_with("bad.csv:3")),
        "{v}"
    );

    let good = tmp.path().join("good.csv");
    std::fs::write(&good, "device_id,mac\nok-1,02:00:00:00:00:01\n").expect("write");
    let o = Command::new(BIN)
        .args(["check", "--json"])
        .arg(&good)
        .output()
        .expect("runs");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["entries"], 1);
    assert_eq!(v["ok"], true);
}

//! `--version` names the git revision; `check --json` reports every problem
//! in a form scripts can read, with the same exit code as without it;
//! oversized rows and JSON type errors are reported clearly.

#![allow(clippy::expect_used, clippy::unwrap_used)]

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

fn check(files: &[(&str, &str)]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(tmp.path()).arg("check");
    for (name, text) in files {
        std::fs::write(tmp.path().join(name), text).expect("write");
        cmd.arg(name);
    }
    let o = cmd.output().expect("runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every format bounds one entry to 64 KiB. A CSV row over it is reported
/// and the next row is still checked; a row that never ends (an unclosed
/// quote) stops the file at the row's first line instead of filling memory.
#[test]
fn oversized_csv_rows_are_reported_without_reading_them_whole() {
    let long = "x".repeat(70_000);
    let text = format!(
        "device_id,mac,note\nok-1,02:00:00:00:00:01,\nbig-1,02:00:00:00:00:02,{long}\nbad id,02:00:00:00:00:03,\n"
    );
    let (code, err) = check(&[("long.csv", &text)]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "long.csv:3: error: the row is longer than 65536 bytes\n\
         long.csv:4: error: device_id \"bad id\": device id may contain only ASCII letters, digits and . _ : - and must start with a letter or digit\n\
         2 problem(s) in 2 row(s); nothing was imported\n"
    );

    // 64 MiB inside a quote that is never closed.
    let endless = format!(
        "device_id,mac,note\nok-1,02:00:00:00:00:01,\nbig-2,02:00:00:00:00:02,\"{}\nok-2,02:00:00:00:00:04,\n",
        "y".repeat(64 << 20)
    );
    let (code, err) = check(&[("endless.csv", &endless)]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "endless.csv:3: error: no row ends within 1 MiB from here (a row is at most 65536 bytes); the rest of the file was not read\n\
         1 problem(s) in 1 row(s); nothing was imported\n"
    );

    // Blank lines before a row do not count toward its size, and do not
    // move its line number; nor do line breaks inside quoted cells.
    let text = format!(
        "device_id,mac,note\nok-1,02:00:00:00:00:01,\n{}\"bad id\",02:00:00:00:00:02,\"two\nlines\"\n\n\nbad id2,02:00:00:00:00:03,",
        "\n".repeat(200_000)
    );
    let (_, err) = check(&[("blank.csv", &text)]);
    let bad =
        "may contain only ASCII letters, digits and . _ : - and must start with a letter or digit";
    assert_eq!(
        err,
        format!(
            "blank.csv:200003: error: device_id \"bad id\": device id {bad}\n\
             blank.csv:200003: error: note must not contain control characters (line breaks, tabs)\n\
             blank.csv:200007: error: device_id \"bad id2\": device id {bad}\n\
             3 problem(s) in 2 row(s); nothing was imported\n"
        )
    );

    // The header row is bounded too; a row of exactly the limit is fine.
    let (_, err) = check(&[("header.csv", &format!("device_id,{}\n", "z".repeat(70_000)))]);
    assert!(
        err.starts_with("header.csv:1: error: the row is longer than 65536 bytes"),
        "{err}"
    );
    let prefix = "at-limit,02:00:00:00:00:05,";
    let row = format!("{prefix}{}\n", "n".repeat(65_536 - prefix.len()));
    let (_, err) = check(&[("limit.csv", &format!("device_id,mac,note\n{row}"))]);
    assert_eq!(
        err,
        "limit.csv:2: error: note is longer than 256 bytes\n\
         1 problem(s) in 1 row(s); nothing was imported\n"
    );
}

/// A JSON value of the wrong type names its field.
#[test]
fn json_type_errors_name_the_field() {
    let (code, err) = check(&[
        (
            "types.json",
            "[{\"device_id\": 5}, {\"device_id\": \"a-1\", \"expires\": true},\n[1, 2]]",
        ),
        (
            "types.jsonl",
            "{\"device_id\":\"b-1\",\"mac\":7}\n{\"device_id\":\"b-2\",\"note\":[\"x\"]}\n{\"device_id\":\"b-3\",\"mac\":\"02:00:00:00:00:01\"} {}\n",
        ),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "types.json:1: error: device_id: invalid type: integer `5`, expected a string\n\
         types.json:1: error: expires: invalid type: boolean `true`, expected an RFC 3339 time as a string, or unix seconds as an integer\n\
         types.json:2: error: an entry must be a JSON object ({\"device_id\": ..., ...})\n\
         types.jsonl:1: error: mac: invalid type: integer `7`, expected a string\n\
         types.jsonl:2: error: note: invalid type: sequence, expected a string\n\
         types.jsonl:3: error: unexpected data after the entry\n\
         6 problem(s) in 5 row(s); nothing was imported\n"
    );
}

/// Issue 18 item 6: `list` lines its columns up whatever the ID's length
/// (the DEVICE ID column used to take the ID's own width).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_aligns_its_columns() {
    let env = crate::common::Env::start().await;
    env.import_ok(
        "a.csv",
        "device_id,mac\nx,02:00:00:00:00:01\na-much-longer-device-id-1,02:00:00:00:00:02\n",
    )
    .await;
    let o = env.oob(&["list"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let key_col = lines[0].find("KEY").expect("header");
    let mac_col = lines[0].find("MAC").expect("header");
    for row in &lines[1..3] {
        // The key column ("-": a MAC-only entry) and the MAC start under
        // their headings.
        assert_eq!(row.find(" - ").map(|i| i + 1), Some(key_col), "{text}");
        assert_eq!(row.find("02:00").expect("mac"), mac_col, "{text}");
    }
}

/// Every argument says what it is in `--help` (issue 18 item 6).
#[test]
fn arguments_have_help_text() {
    for (sub, want) in [
        ("remove", "Device IDs of the entries to remove"),
        ("list", "Only entries whose id"),
        ("check", "checked as one import"),
    ] {
        let o = Command::new(BIN)
            .args([sub, "--help"])
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains(want), "{sub}: {help}");
    }
}

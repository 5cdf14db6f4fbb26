//! Export then import changes nothing; dry runs, --prune and --replace.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::common::*;

/// Entries of every kind: four key formats' worth, MAC only, key with a
/// secret, expiry, notes with commas, quotes and would-be formulas.
fn mixed_file(env: &Env) -> std::path::PathBuf {
    let rsa = idprov_oob::generate::rs256(2048).expect("rsa").public_pem;
    let rows = [
        "device_id,public_key,key_format,mac,secret,expires,note".to_string(),
        format!(
            "rt-01,{},ES256_PEM,02:00:00:00:aa:01,,,{}",
            cell(&es256_public()),
            cell("line 7, \"left\" bay")
        ),
        format!("rt-02,{},RSA_PEM,,,,", cell(&rsa)),
        format!("rt-03,{},ES256_X509_PEM,,,2036-01-01,", cell(EC_CERT)),
        "rt-04,,,02-00-00-00-AA-04,,2035-06-30T12:00:00Z,mac only".to_string(),
        format!("rt-05,{},,,a-one-time-secret,,", cell(&es256_public())),
        format!(
            "rt-06,,,02:00:00:00:aa:06,,,{}",
            cell("=HYPERLINK(\"http://evil.example\",\"click\")")
        ),
        "rt-07,,,02:00:00:00:aa:07,,,@SUM(1+1)".to_string(),
    ];
    env.write("mixed.csv", &(rows.join("\n") + "\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_changes_nothing() {
    let env = Env::start().await;
    let file = mixed_file(&env);
    let out = env.oob(&["import", file.to_str().expect("utf-8")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("added 7, changed 0, unchanged 0, removed 0\n"));
    let before = env.entries().await;
    assert_eq!(before.len(), 7);

    // CSV: formulas are defused, and the file imports to no change at all.
    let out = env.oob(&["export", "--out", "export.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = std::fs::read_to_string(env.path("export.csv")).expect("export");
    assert!(csv.contains("\"'=HYPERLINK("), "{csv}");
    assert!(csv.contains(",'@SUM(1+1)"), "{csv}");
    assert!(
        csv.contains("\"-----BEGIN PUBLIC KEY-----\n"),
        "PEM stays PEM"
    );
    assert!(
        stderr(&out).contains("1 entries have an unused one-time secret"),
        "{}",
        stderr(&out)
    );
    let out = env.oob(&["import", "export.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added 0, changed 0, unchanged 7, removed 0\n");
    assert_eq!(env.entries().await, before, "records are untouched");

    // JSON the same way, and with --prune nothing is removed either.
    let out = env.oob(&["export", "--out", "export.json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.oob(&["import", "--prune", "export.json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added 0, changed 0, unchanged 7, removed 0\n");
    assert_eq!(env.entries().await, before);

    // The secret survived the round trip: the entry still has it.
    let rt05 = before
        .iter()
        .find(|e| e.device_id.as_str() == "rt-05")
        .expect("rt-05");
    assert!(rt05.has_secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prune_and_replace() {
    let env = Env::start().await;
    let file = mixed_file(&env);
    let out = env.oob(&["import", file.to_str().expect("utf-8")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let before = env.entries().await;

    // Keep two, change a note, add one, and prune the rest: a dry run shows
    // the difference and stores nothing.
    env.write(
        "next.csv",
        "device_id,mac,note\n\
         rt-04,02:00:00:00:aa:04,mac only\n\
         rt-06,02:00:00:00:aa:06,now a plain note\n\
         rt-08,02:00:00:00:aa:08,\n",
    );
    let out = env
        .oob(&["import", "--dry-run", "--prune", "next.csv"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // rt-04 is unchanged only if its expiry is given too; it is not, so it
    // counts as changed (expiry dropped).
    assert_eq!(
        stdout(&out),
        "dry run: added 1, changed 2, unchanged 0, removed 5 (nothing was stored)\n\
         \x20 + rt-08\n\
         \x20 ~ rt-04\n\
         \x20 ~ rt-06\n\
         \x20 - rt-01\n\
         \x20 - rt-02\n\
         \x20 - rt-03\n\
         \x20 - rt-05\n\
         \x20 - rt-07\n"
    );
    assert_eq!(env.entries().await, before, "a dry run stores nothing");

    // A new key for an existing device needs --replace.
    let key = es256_public();
    env.write(
        "newkey.csv",
        &format!("device_id,public_key\nrt-02,{}\n", cell(&key)),
    );
    let out = env.oob(&["import", "newkey.csv"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("import with --replace to change it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.entries().await, before);
    let out = env.oob(&["import", "--replace", "newkey.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "added 0, changed 1, unchanged 0, removed 0\n  ~ rt-02\n"
    );
    // The same file again: idempotent.
    let out = env.oob(&["import", "--replace", "newkey.csv"]).await;
    assert_eq!(stdout(&out), "added 0, changed 0, unchanged 1, removed 0\n");

    // Prune for real.
    let out = env.oob(&["import", "--prune", "next.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<String> = env
        .entries()
        .await
        .iter()
        .map(|e| e.device_id.to_string())
        .collect();
    assert_eq!(ids, ["rt-04", "rt-06", "rt-08"]);

    // list and remove.
    let out = env.oob(&["list", "--json"]).await;
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    assert_eq!(listed.len(), 3);
    // All or nothing: an ID without an entry removes none of them.
    let out = env.oob(&["remove", "rt-04", "rt-06", "rt-99"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: no OOB entry for rt-99: nothing was removed\n"
    );
    assert_eq!(env.entries().await.len(), 3);
    let out = env.oob(&["remove", "rt-06", "rt-04"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "removed rt-04\nremoved rt-06\n");
    assert_eq!(env.entries().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_batch_imports_as_is() {
    let env = Env::start().await;
    let out = env
        .oob(&["generate", "12", "--prefix", "fab-", "--out", "batch"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    let key = env.path("batch/fab-01.key.pem");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&key).expect("key");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // Never overwrites.
    let again = env
        .oob(&["generate", "12", "--prefix", "fab-", "--out", "batch"])
        .await;
    assert!(!again.status.success());
    let out = env.oob(&["import", "batch/oob.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("added 12, changed 0"));
    let entries = env.entries().await;
    assert_eq!(entries[0].device_id.as_str(), "fab-01");
    assert_eq!(entries[11].device_id.as_str(), "fab-12");
}

//! Bad input files: every problem is reported at once, with its line, and
//! nothing reaches the daemon's list.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csv_lists_every_problem_with_its_line_and_imports_nothing() {
    let env = Env::start().await;
    env.write("keys/good1.pem", &es256_public());
    env.write("keys/good2.pem", &es256_public());
    env.write("keys/good3.pem", &es256_public());
    env.write("keys/garbage.pem", "hello, I am not a key\n");
    env.write("keys/rsa1024.pem", RSA_1024);
    env.write("keys/private.pem", &es256_private());
    // A UTF-8 byte order mark and CRLF line endings, as spreadsheets write
    // them: valid, and line numbers still count lines.
    let rows = [
        "device_id,public_key,mac,note",
        "dev-1,keys/good1.pem,02:00:00:00:00:01,\"first, with a comma\"",
        "dev-2,keys/good2.pem,02:00:00:00:00:02",
        "dev-1,keys/good3.pem,,same id again",
        "dev-4,,02:00:00:00:00:01,same MAC as dev-1",
        "dev-5,keys/garbage.pem,,",
        "dev-6,keys/rsa1024.pem,,",
        "dev-7,keys/private.pem,,",
        "dev 8,,02:00:00:00:00:08,",
        "dev-9,,,nothing to match on",
        "dev-10,,02:00:00:00:00:10,fine",
        "dev-11,keys/good1.pem,,same key as dev-1",
    ];
    let text = format!("\u{feff}{}\r\n", rows.join("\r\n"));
    env.write("bad.csv", &text);

    let out = env.oob(&["import", "bad.csv"]).await;
    assert!(!out.status.success());
    let expected = "\
bad.csv:3: error: the row has 3 fields but the header has 4
bad.csv:4: error: device id dev-1 is already listed on line 2
bad.csv:5: error: mac 02:00:00:00:00:01 is already given to another device on line 2
bad.csv:6: error: public_key: not a PEM block (expected -----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----)
bad.csv:7: error: public_key: RSA key has 1024 bits; 2048 to 4096 are accepted
bad.csv:8: error: public_key: a private key was given where the public key belongs; send only the public half
bad.csv:9: error: device_id \"dev 8\": device id may contain only ASCII letters, digits and . _ : - and must start with a letter or digit
bad.csv:10: error: give at least one of public_key, mac, secret, setup_verifier
bad.csv:12: error: the same public key is already given to another device on line 2
9 problem(s) in 9 row(s); nothing was imported
";
    assert_eq!(stderr(&out), expected);
    assert!(env.entries().await.is_empty(), "nothing may be imported");

    // The same rows, minus the bad ones, import fine: BOM, CRLF and the
    // quoted comma were never the problem.
    let good = format!("\u{feff}{}\r\n{}\r\n{}\r\n", rows[0], rows[1], rows[10]);
    env.write("good.csv", &good);
    let out = env.oob(&["import", "good.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = env.entries().await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].note.as_deref(), Some("first, with a comma"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_columns_stop_the_file_at_line_one() {
    let env = Env::start().await;
    env.write(
        "cols.csv",
        "device_id,mac,colour,Secret\r\ndev-1,02:00:00:00:00:01,red,s3cret-s3cret\r\n",
    );
    let out = env.oob(&["import", "cols.csv"]).await;
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "cols.csv:1: error: unknown column \"colour\" (known columns: device_id, public_key, key_format, mac, secret, expires, note, setup_verifier)\n\
         1 problem(s) in 1 row(s); nothing was imported\n"
    );
    assert!(env.entries().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_json_lines_report_lines_too() {
    let env = Env::start().await;
    env.write(
        "bad.json",
        "[\n  {\"device_id\": \"j-1\", \"mac\": \"02:00:00:00:01:01\"},\n  {\"device_id\": \"j-2\",\n   \"mac\": \"02:00:00:00:01:01\"},\n  {\"device_id\": \"j-3\", \"colour\": \"red\"},\n  {\"device_id\": \"j-4\", \"mac\": \"02:00:00:00:01:04\", \"expires\": \"2001-01-01\"}\n]\n",
    );
    env.write(
        "bad.jsonl",
        "{\"device_id\": \"l-1\", \"secret\": \"correct-horse\"}\n\n{\"device_id\": \"l-2\", \"secret\": \"short\"}\n{\"device_id\": \"l-3\", \"mac\": \"02:00:00:00:02:03\"\n",
    );
    let out = env.oob(&["import", "bad.json", "bad.jsonl"]).await;
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "bad.json:3: error: mac 02:00:00:00:01:01 is already given to another device on line 2\n\
         bad.json:5: error: unknown field `colour`, expected one of `device_id`, `public_key`, `key_format`, `mac`, `secret`, `expires`, `note`, `setup_verifier`\n\
         bad.json:6: error: expires 2001-01-01T00:00:00Z is in the past\n\
         bad.jsonl:3: error: secret must be 8 to 256 bytes long\n\
         bad.jsonl:4: error: EOF while parsing an object\n\
         5 problem(s) in 5 row(s); nothing was imported\n"
    );
    assert!(env.entries().await.is_empty());
}

/// The daemon checks every entry again: a client that skips the tool's
/// checks gets the same refusal, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refuses_bad_chunks_itself() {
    use idprov_proto::admin::OobEntryInput;
    use idprov_proto::oob_import::{OobImportChunk, OobImportCommit, OobImportStart};

    let env = Env::start().await;
    let admin = env.admin();
    let s = admin
        .oob_import_start(&OobImportStart::default())
        .await
        .expect("start");
    let entry = |id: &str, key: Option<&str>, mac: Option<&str>| OobEntryInput {
        device_id: id.parse().expect("id"),
        public_key: key.map(str::to_string),
        key_format: None,
        mac: mac.map(|m| m.parse().expect("mac")),
        secret: None,
        setup_verifier: None,
        expires_at: None,
        note: None,
    };
    let good = es256_public();
    let chunk0 = OobImportChunk {
        seq: 0,
        entries: vec![entry("d-1", Some(&good), Some("02:00:00:00:00:01"))],
    };
    admin
        .oob_import_chunk(&s.id, &chunk0)
        .await
        .expect("good chunk");
    // RSA-1024, a private key, an id staged before, a MAC staged before.
    let chunk1 = OobImportChunk {
        seq: 1,
        entries: vec![
            entry("d-2", Some(RSA_1024), None),
            entry("d-3", Some(&es256_private()), None),
            entry("d-1", None, Some("02:00:00:00:00:05")),
            entry("d-4", None, Some("02:00:00:00:00:01")),
        ],
    };
    let err = admin
        .oob_import_chunk(&s.id, &chunk1)
        .await
        .expect_err("bad chunk is refused");
    let idprov_admin_client::AdminError::Api { body, .. } = err else {
        panic!("expected an API error, got {err:?}");
    };
    let got: Vec<(usize, String)> = body
        .details
        .iter()
        .map(|d| (d.index, d.message.clone()))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, 0);
    assert!(got[0].1.contains("RSA key has 1024 bits"), "{got:?}");
    assert_eq!(got[1].0, 1);
    assert!(got[1].1.contains("private key"), "{got:?}");
    // Key problems are found before staging; staging finds the others.
    let chunk1b = OobImportChunk {
        seq: 1,
        entries: vec![
            entry("d-1", None, Some("02:00:00:00:00:05")),
            entry("d-4", None, Some("02:00:00:00:00:01")),
        ],
    };
    let err = admin
        .oob_import_chunk(&s.id, &chunk1b)
        .await
        .expect_err("duplicates across chunks are refused");
    let idprov_admin_client::AdminError::Api { body, .. } = err else {
        panic!("expected an API error");
    };
    let msgs: Vec<&str> = body.details.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "device_id is listed twice in this import",
            "MAC 02:00:00:00:00:01 is also given for device d-1 in this import"
        ]
    );
    // The session still holds exactly the good chunk; commit it and check.
    let r = admin
        .oob_import_commit(
            &s.id,
            &OobImportCommit {
                dry_run: false,
                expected_entries: 1,
            },
        )
        .await
        .expect("commit");
    assert_eq!(r.added, 1);
    let ids: Vec<String> = env
        .entries()
        .await
        .iter()
        .map(|e| e.device_id.to_string())
        .collect();
    assert_eq!(ids, ["d-1"]);
}

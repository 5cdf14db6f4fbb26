//! `generate --setup-codes`: codes for the labels in a 0600 file of their
//! own, only verifiers in the import CSV; a device provisions with a code
//! from it; `export` carries neither, and importing the export keeps the
//! stored codes with their use.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use idprov_client::{Client, KeySigner, SetupCode, Trust};

use crate::common::{Env, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_setup_codes_admit_devices_and_never_leave_the_label_file() {
    let env = Env::start().await;
    let out = env
        .oob(&[
            "generate",
            "3",
            "--prefix",
            "lbl-",
            "--out",
            "batch",
            "--setup-codes",
            "--no-keys",
            "--kdf-memory-kib",
            "256",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let codes_path = env.path("batch/setup-codes.csv");
    let mode = std::fs::metadata(&codes_path)
        .expect("codes file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let codes = std::fs::read_to_string(&codes_path).expect("codes");
    let rows: Vec<(String, String)> = codes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(rows.len(), 3, "{codes}");
    let csv = std::fs::read_to_string(env.path("batch/oob.csv")).expect("csv");
    assert!(!std::path::Path::new(&env.path("batch/lbl-1.key.pem")).exists());
    for (_, code) in &rows {
        SetupCode::parse(code).expect("a valid code");
        assert!(!csv.contains(code.as_str()) && !csv.contains(&code.replace('-', "")));
    }
    assert_eq!(
        csv.matches("spake2+p256$argon2id$m=256,").count(),
        3,
        "{csv}"
    );

    let out = env.oob(&["import", "batch/oob.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("added 3, changed 0"),
        "{}",
        stdout(&out)
    );

    // The first device provisions with its label's code alone.
    let (id, code) = &rows[0];
    let state = tempfile::tempdir().expect("tmp");
    let client = Client::builder()
        .device_id(id.as_str())
        .server(&env.daemon.url)
        .trust(Trust::SetupCode(SetupCode::parse(code).expect("code")))
        .signer(Arc::new(KeySigner::generate_p256().expect("key").0))
        .mac(None)
        .state_dir(state.path())
        .build()
        .expect("client");
    let creds = client.provision().await.expect("provisioned with the code");
    assert_eq!(creds.device_id.as_str(), id);

    // Export: no verifier, no code, and a word on why these entries cannot
    // be imported from it as they are.
    let out = env.oob(&["export", "--out", "export.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 entries have a setup code"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("3 entries have only a secret or a setup code"));
    let exported = std::fs::read_to_string(env.path("export.csv")).expect("export");
    assert!(!exported.contains("spake2+p256"), "{exported}");
    for (_, code) in &rows {
        assert!(!exported.contains(&code.replace('-', "")));
    }
    let states: Vec<_> = env
        .entries()
        .await
        .iter()
        .map(|e| e.setup_code.map(|s| s.consumed))
        .collect();
    assert_eq!(states, vec![Some(true), Some(false), Some(false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_an_export_keeps_the_stored_setup_codes() {
    let env = Env::start().await;
    let out = env
        .oob(&[
            "generate",
            "2",
            "--prefix",
            "kc-",
            "--out",
            "batch",
            "--setup-codes",
            "--kdf-memory-kib",
            "256",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.oob(&["import", "batch/oob.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.oob(&["export", "--out", "export.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.oob(&["import", "export.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("added 0, changed 0, unchanged 2"),
        "{}",
        stdout(&out)
    );
    assert!(env.entries().await.iter().all(|e| e.setup_code.is_some()));
}

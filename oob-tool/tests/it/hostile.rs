//! Cases from a hostile review: far-future expiry, runaway `generate`,
//! `--prune` with an empty file, PKCS#1 RSA keys, bad `--chunk` values, an
//! interrupted upload that must give its daemon session back, and a failed
//! export that must leave nothing behind.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use crate::common::*;
use idprov_proto::oob_import::OobImportStart;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_past_the_year_9999_is_refused_by_tool_and_daemon() {
    let env = Env::start().await;
    let file = env.write(
        "far.jsonl",
        concat!(
            "{\"device_id\":\"ok-1\",\"mac\":\"02:00:00:00:00:01\",\"expires\":\"9999-12-31\"}\n",
            "{\"device_id\":\"far-1\",\"mac\":\"02:00:00:00:00:02\",\"expires\":9223372036854775807}\n",
            "{\"device_id\":\"far-2\",\"mac\":\"02:00:00:00:00:03\",\"expires\":253402300800}\n",
        ),
    );
    let out = env.oob(&["import", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "far.jsonl:2: error: expires 9223372036854775807 is after 9999-12-31T23:59:59Z"
        ),
        "{err}"
    );
    assert!(
        err.contains("far.jsonl:3: error: expires 253402300800 is after"),
        "{err}"
    );
    assert!(env.entries().await.is_empty());

    // The daemon refuses it too, whatever the client.
    let mut e = idprov_tests::oob_entry(
        "far-3",
        None,
        Some("02:00:00:00:00:04".parse().unwrap()),
        None,
    );
    e.expires_at = Some(i64::MAX);
    let r = env
        .admin()
        .oob_upsert(&idprov_proto::admin::OobUpsertRequest {
            entries: vec![e],
            replace: false,
            dry_run: false,
        })
        .await
        .expect_err("refused");
    assert_eq!(r.code(), Some(idprov_proto::ErrorCode::BadRequest));

    // The last representable second is fine, and lists and exports.
    let ok = env.write(
        "ok.csv",
        "device_id,mac,expires\nok-1,02:00:00:00:00:01,9999-12-31T23:59:59Z\n",
    );
    let out = env.oob(&["import", ok.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.oob(&["export"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("9999-12-31T23:59:59Z"),
        "{}",
        stdout(&out)
    );
    let out = env.oob(&["list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_refuses_runaway_counts_before_writing_anything() {
    let env = Env::start().await;
    for args in [
        &[
            "generate",
            "18446744073709551615",
            "--prefix",
            "a-",
            "--out",
            "g1",
        ][..],
        &["generate", "1000001", "--prefix", "a-", "--out", "g1"],
        &["generate", "0", "--prefix", "a-", "--out", "g1"],
        &[
            "generate",
            "2",
            "--prefix",
            "a-",
            "--out",
            "g1",
            "--start",
            "18446744073709551615",
        ],
    ] {
        let out = env.oob(args).await;
        assert_eq!(
            out.status.code(),
            Some(if args[1] == "2" { 1 } else { 2 }),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!env.path("g1").exists(), "{args:?} created the directory");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_with_an_empty_file_needs_allow_empty() {
    let env = Env::start().await;
    env.import_ok(
        "some.csv",
        "device_id,mac\np-1,02:00:00:00:00:01\np-2,02:00:00:00:00:02\n",
    )
    .await;
    let empty = env.write("empty.csv", "device_id,mac\n");
    let out = env
        .oob(&["import", "--prune", empty.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    assert_eq!(env.entries().await.len(), 2);
    let out = env
        .oob(&[
            "import",
            "--prune",
            "--allow-empty",
            empty.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed 2"), "{}", stdout(&out));
    assert!(env.entries().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs1_rsa_public_key_imports_and_names_the_same_key() {
    let env = Env::start().await;
    let spki_pem = idprov_oob::generate::rs256(2048).expect("rsa").public_pem;
    let key = idprov_proto::PublicKey::from_pem(&spki_pem, None).expect("spki");
    let pkcs1_pem = idprov_proto::keys::pem_encode("RSA PUBLIC KEY", key.verify_bytes());
    let file = env.write(
        "pkcs1.csv",
        &format!("device_id,public_key\nrsa-1,{}\n", cell(&pkcs1_pem)),
    );
    let out = env.oob(&["import", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = env.entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].key_fingerprint.as_deref(),
        Some(key.thumbprint())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_sizes_outside_1_to_10000_are_refused() {
    let env = Env::start().await;
    let file = env.write("one.csv", "device_id,mac\nc-1,02:00:00:00:00:01\n");
    for bad in ["0", "10001", "-1"] {
        let out = env
            .oob(&["import", "--chunk", bad, file.to_str().unwrap()])
            .await;
        assert_eq!(out.status.code(), Some(2), "--chunk {bad}");
    }
    assert!(env.entries().await.is_empty());
}

/// SIGTERM in the middle of an upload ends the daemon's session at once:
/// all four import slots are free right afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_gives_its_session_back() {
    let env = Env::start().await;
    let path = env.path("big.csv");
    // MAC-only rows: cheap to write, and still a long upload.
    let mut text = String::from("device_id,mac\n");
    for i in 0..40_000u32 {
        let b = i.to_be_bytes();
        text.push_str(&format!(
            "sig-{i:06},02:00:{:02x}:{:02x}:{:02x}:{:02x}\n",
            b[0], b[1], b[2], b[3]
        ));
    }
    std::fs::write(&path, text).unwrap();

    // Find a moment inside the upload: the tool says it was interrupted
    // only when the signal came after the session started.
    let mut interrupted = false;
    for step in 1..=20u64 {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idprov-oob"))
            .arg("--profile")
            .arg(&env.profile)
            .args(["import", "--chunk", "200"])
            .arg(&path)
            .env_remove("IDPROV_PROFILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100 * step)).await;
        let pid = child.id().expect("running") as i32;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let out = child.wait_with_output().await.unwrap();
        let err = stderr(&out);
        if err.contains("interrupted by SIGTERM") {
            assert!(err.contains("nothing was imported"), "{err}");
            assert_eq!(out.status.code(), Some(1));
            interrupted = true;
            break;
        }
        if out.status.success() {
            // Too late: the import finished. Start over on a clean list.
            for e in env.entries().await {
                env.admin().oob_remove(&e.device_id).await.unwrap();
            }
        }
    }
    assert!(interrupted, "never caught the tool inside its upload");
    assert!(env.entries().await.is_empty());
    let admin = env.admin();
    for i in 0..4 {
        admin
            .oob_import_start(&OobImportStart::default())
            .await
            .unwrap_or_else(|e| panic!("slot {i} still taken: {e}"));
    }
}

/// An entry whose only credential is a secret cannot come back from an
/// export (secrets are never exported); export says which ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_names_entries_it_cannot_round_trip() {
    let env = Env::start().await;
    env.import_ok(
        "s.csv",
        "device_id,mac,secret\nmac-1,02:00:00:00:00:01,\nsecret-1,,a-one-time-secret\n",
    )
    .await;
    let out = env.oob(&["export", "--out", "e.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: 1 entries have only a secret") && err.contains("secret-1"),
        "{err}"
    );
    assert!(!err.contains("mac-1"), "{err}");
}

/// `export --out` writes a temporary file next to the target and renames it
/// at the end: a failed export leaves nothing behind (not even a partial
/// file), and a good one replaces the old file whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_leaves_nothing_behind() {
    let env = Env::start().await;
    let out_dir = env.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    // A profile whose daemon does not answer (port 1 on loopback is closed).
    let text = std::fs::read_to_string(&env.profile).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.strip_prefix("server = "))
        .expect("the profile names its server")
        .trim_matches('"')
        .to_string();
    let dead = env.write(
        "dead.profile",
        &text.replace(&server, "https://127.0.0.1:1"),
    );
    let out = run_oob(&dead, env.work.path(), &["export", "--out", "out/e.csv"]).await;
    // 5, as in every idprov tool (docs/operations.md, "Exit codes").
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(listing().is_empty(), "left behind: {:?}", listing());
    // One clear line: what failed, where, and the cause, each said once.
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: out/e.csv was not changed: cannot reach the daemon at https://127.0.0.1:1: "
        ) && err.contains("Connection refused")
            && err.matches("error sending request").count() == 1
            && err.lines().count() == 1,
        "{err}"
    );

    // A good export replaces an existing file and leaves only it.
    std::fs::write(out_dir.join("e.csv"), "old content\n").unwrap();
    env.import_ok("m.csv", "device_id,mac\nmac-1,02:00:00:00:00:01\n")
        .await;
    let out = env.oob(&["export", "--out", "out/e.csv"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listing(), ["e.csv"]);
    let written = std::fs::read_to_string(out_dir.join("e.csv")).unwrap();
    assert!(
        written.starts_with("device_id,") && written.contains("mac-1"),
        "{written}"
    );

    // Modes: a new file gets the usual one (as any file this process
    // creates, under its umask); a replaced file keeps its own.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    std::fs::write(out_dir.join("plain"), "x").unwrap();
    assert!(
        env.oob(&["export", "--out", "out/new.csv"])
            .await
            .status
            .success()
    );
    assert_eq!(mode(&out_dir.join("new.csv")), mode(&out_dir.join("plain")));
    std::fs::set_permissions(
        out_dir.join("e.csv"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    assert!(
        env.oob(&["export", "--out", "out/e.csv"])
            .await
            .status
            .success()
    );
    assert_eq!(mode(&out_dir.join("e.csv")), 0o640);

    // A symbolic link is written through, as `cp` would; one to nothing is
    // refused.
    std::os::unix::fs::symlink("e.csv", out_dir.join("link.csv")).unwrap();
    std::fs::write(out_dir.join("e.csv"), "old\n").unwrap();
    assert!(
        env.oob(&["export", "--out", "out/link.csv"])
            .await
            .status
            .success()
    );
    assert!(
        std::fs::symlink_metadata(out_dir.join("link.csv"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(out_dir.join("e.csv"))
            .unwrap()
            .contains("mac-1")
    );
    std::os::unix::fs::symlink("nowhere.csv", out_dir.join("dangling.csv")).unwrap();
    let out = env.oob(&["export", "--out", "out/dangling.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a symbolic link to nothing usable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        listing(),
        ["dangling.csv", "e.csv", "link.csv", "new.csv", "plain"]
    );
}

/// SIGINT in the middle of `export --out` ends it through the error path:
/// the target is unchanged and the temporary file removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_export_leaves_nothing_behind() {
    let env = Env::start().await;
    // Enough entries that the export takes many page requests.
    for batch in 0..6u32 {
        let entries = (0..10_000u32)
            .map(|i| {
                let b = (batch * 10_000 + i).to_be_bytes();
                let mac = format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]);
                idprov_tests::oob_entry(
                    &format!("x-{batch}-{i:05}"),
                    None,
                    Some(mac.parse().unwrap()),
                    None,
                )
            })
            .collect();
        env.admin()
            .oob_upsert(&idprov_proto::admin::OobUpsertRequest {
                entries,
                replace: false,
                dry_run: false,
            })
            .await
            .unwrap();
    }
    let out_dir = env.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("e.csv"), "old\n").unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idprov-oob"))
        .arg("--profile")
        .arg(&env.profile)
        .args(["export", "--out", "out/e.csv", "--format", "csv"])
        .current_dir(env.work.path())
        .env_remove("IDPROV_PROFILE")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The temporary file exists once the export is under way (signals are
    // watched before it is created).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let temp_exists = || {
        std::fs::read_dir(&out_dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".idprov-export-")
        })
    };
    while !temp_exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary file appeared"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = child.id().expect("running").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    let out = child.wait_with_output().await.unwrap();
    let err = stderr(&out);
    if out.status.success() {
        // The export finished before the signal: nothing to check but that
        // it is whole.
        assert!(
            std::fs::read_to_string(out_dir.join("e.csv"))
                .unwrap()
                .contains("x-5-09999")
        );
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "error: out/e.csv was not changed: interrupted by SIGINT\n"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("e.csv")).unwrap(),
        "old\n"
    );
    assert!(!temp_exists(), "a temporary file was left behind");
}

/// `export | head`: when the reader of standard output goes away the tool
/// stops quietly with success, as Unix filters do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_pipe_ends_export_quietly() {
    let env = Env::start().await;
    env.import_ok("m.csv", "device_id,mac\nmac-1,02:00:00:00:00:01\n")
        .await;
    for args in [
        &["export"][..],
        &["export", "--format", "json"],
        &["list", "--json"],
    ] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idprov-oob"))
            .arg("--profile")
            .arg(&env.profile)
            .args(args)
            .env_remove("IDPROV_PROFILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the tool has anything to write.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

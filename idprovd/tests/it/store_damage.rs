//! Damage to the store file (issue 13 item 5): bytes flipped in the middle
//! of a real store, several seeds, then the real binary started on it. It
//! must refuse to start (exit 4, saying the store is damaged) or, where the
//! damage hit no page the store uses, serve every record (a backup reads
//! them all) without a panic. A record whose JSON does not decode (damage
//! no checksum can see) is a clean error naming it.

use std::path::Path;

use idprov_proto::DeviceId;
use idprovd::store::{OobRecord, RedbStore};

use super::ops_cli::{Daemon, idprovd, out};

const ENTRIES: usize = 2000;

fn daemon_id(dir: &Path) -> String {
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("identity.json")).expect("identity.json"))
            .expect("identity JSON");
    identity["daemon_id"]
        .as_str()
        .expect("daemon_id")
        .to_string()
}

fn oob(i: usize) -> OobRecord {
    let id: DeviceId = format!("sensor-{i:05}").parse().expect("device id");
    OobRecord {
        device_id: id,
        public_key: None,
        key_format: None,
        kid: None,
        mac: None,
        secret_hash: None,
        secret_salt: None,
        secret_consumed_at: None,
        setup: None,
        expires_at: None,
        note: Some(format!("rack {i} ").repeat(8)),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        secret_plain_for_compare: None,
    }
}

/// A stopped daemon's data dir whose store holds `ENTRIES` OOB entries.
fn filled_data_dir(dir: &Path) {
    let (code, _) = Daemon::start(dir, &[], &[]).terminate();
    assert_eq!(code, 0);
    let store = RedbStore::open(dir, &daemon_id(dir), false).expect("store opens");
    store
        .write(|tx| -> Result<(), idprovd::store::StoreError> {
            for i in 0..ENTRIES {
                tx.put_oob(&oob(i))?;
            }
            Ok(())
        })
        .expect("filled");
}

/// A small deterministic generator, so a failing seed can be replayed.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn a_store_damaged_in_its_data_pages_is_refused_or_served_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    filled_data_dir(&dir);
    let db = dir.join("idprov.redb");
    let good = std::fs::read(&db).expect("store file");
    let (lo, hi) = (good.len() / 4, good.len() * 3 / 4);
    let mut refused = 0;
    let seeds = 1..=6u64;
    for seed in seeds.clone() {
        let mut bytes = good.clone();
        let mut st = seed;
        for _ in 0..8 {
            let at = lo + (next(&mut st) as usize) % (hi - lo);
            bytes[at] ^= 0x5a;
        }
        std::fs::write(&db, &bytes).expect("damaged copy");
        match Daemon::try_start(&dir, &[], &[]) {
            Err((code, stderr)) => {
                assert_eq!(code, 4, "seed {seed}: exit code\n{stderr}");
                assert!(
                    stderr.contains("idprov.redb") && stderr.contains("restore a backup"),
                    "seed {seed}: a clear message\n{stderr}"
                );
                assert!(!stderr.contains("panicked"), "seed {seed}\n{stderr}");
                refused += 1;
            }
            Ok(d) => {
                // Damage in pages the store does not use: every record
                // must still read (the backup copies them all).
                let backup = tmp.path().join(format!("b{seed}.tar"));
                let (code, o, e) = out(idprovd(&dir)
                    .args(["backup", "--server", &d.url, "--out"])
                    .arg(&backup));
                assert_eq!(code, 0, "seed {seed}: started, so it must serve\n{o}{e}");
                let (code, logs) = d.terminate();
                let logs = logs.join("\n");
                assert!(!logs.contains("panicked"), "seed {seed}\n{logs}");
                assert_eq!(code, 0, "seed {seed}\n{logs}");
            }
        }
    }
    // The seeds hit pages in use: a check that never refused checks nothing.
    assert!(
        refused >= 4,
        "only {refused} of {} damaged stores were refused",
        seeds.count()
    );
}

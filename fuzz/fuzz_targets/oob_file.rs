//! The bulk tool's readers for OOB files (CSV, JSON, JSON Lines), run as
//! `idprov-oob validate` and `import` run them: pass one (`validate`:
//! every row read and checked), pass two (`read_entries`: what would be
//! uploaded), then the daemon's own entry rules (`oob::validate_oob`) on
//! those entries, as `POST /admin/oob` and an import chunk apply them.
//!
//! Input: one selector byte (format: CSV, JSON, JSON Lines), then the file.
//! The file is written to a temporary directory that also holds `key.pem`,
//! so rows may name a key file as real files do.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use idprov_fuzz::{DEVICE_ES256_PUB, NOW};
use idprov_oob::source::{Format, Input};
use idprov_oob::validate;
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    if let Err(e) = std::fs::write(dir.path().join("key.pem"), DEVICE_ES256_PUB) {
        panic!("key.pem: {e}");
    }
    dir
});

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let (format, name) = match sel % 3 {
        0 => (Format::Csv, "in.csv"),
        1 => (Format::Json, "in.json"),
        _ => (Format::Jsonl, "in.jsonl"),
    };
    let path: PathBuf = DIR.path().join(name);
    if let Err(e) = std::fs::write(&path, file) {
        panic!("write {}: {e}", path.display());
    }
    let inputs = [Input { path, format }];
    let Ok(summary) = validate::validate(&inputs, &|_| {}) else {
        return;
    };
    if !summary.problems.is_empty() {
        return;
    }
    // Pass two must see exactly what pass one checked.
    let mut entries = Vec::new();
    let digest = validate::read_entries(&inputs, |_, e| {
        entries.push(e);
        Ok(())
    });
    let digest = match digest {
        Ok(d) => d,
        Err(e) => panic!("pass one accepted the file, pass two refused it: {e:#}"),
    };
    assert_eq!(digest, summary.digest);
    assert_eq!(entries.len() as u64, summary.entries);
    let _ = idprovd_core::oob::validate_oob(&entries, NOW);
});

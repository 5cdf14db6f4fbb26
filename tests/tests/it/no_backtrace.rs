//! The `device` example's ordinary errors are one line, never a backtrace,
//! whatever RUST_BACKTRACE says (issue 18 item 4). The example is the one
//! this test run built (see readme_walkthrough.rs).

use anyhow::Result;

use crate::readme_walkthrough::built_binaries;

#[test]
fn the_device_example_prints_no_backtrace() -> Result<()> {
    let device = built_binaries()?.join("examples/device");
    let tmp = tempfile::tempdir()?;
    let out = std::process::Command::new(device)
        .args(["--id", "sensor-1", "--key"])
        .arg(tmp.path().join("no/such/dir/key.pem"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--server", "https://127.0.0.1:9", "--tofu", "--once"])
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("device: error: "), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
    Ok(())
}

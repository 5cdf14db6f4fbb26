//! An independent implementation as the device and as the hub service:
//! PyJWT + cryptography sign the proofs, and PyJWT verifies the daemon's
//! token against its JWKS. Needs `pip install -r tests/python/requirements.txt`
//! (`.ci/run` does it); a missing module fails the test, it never skips.

use idprov_tests::{TestDaemon, oob_entry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_device_is_accepted_and_verifies_the_token() -> anyhow::Result<()> {
    let d = TestDaemon::start().await?;
    d.oob(vec![
        oob_entry("py-es256", None, Some("02:00:00:00:00:01".parse()?), None),
        oob_entry("py-rs256", None, Some("02:00:00:00:00:02".parse()?), None),
    ])
    .await?;
    let ca = d.dir.join("ca.pem");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/interop.py");
    let url = d.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(ca)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python interop failed (pip install -r tests/python/requirements.txt?)\n{stdout}\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(v["ok"], true);
    // The daemon recorded the keys Python computed the thumbprints of.
    let dev = d.admin()?.device_get(&"py-rs256".parse()?).await?;
    assert_eq!(dev.keys[0].kid, v["rs256_kid"].as_str().unwrap_or(""));
    Ok(())
}

//! Inputs the fuzz targets (fuzz/, docs/fuzzing.md) found, replayed through
//! the real interface: each fails without its fix.

use idprov_proto::device::{ProofEndpoint, paths, proof_audience};
use idprov_tests::{DeviceKey, TestDaemon, post_json, random_jti};
use serde_json::json;

type R = anyhow::Result<()>;

/// `fuzz/corpus/proof/regression-lifetime-overflow`: a proof whose
/// `exp - iat` overflows i64 (iat far in the past, exp far in the future).
/// The lifetime check then panicked (debug) or wrapped negative and passed
/// (release), accepting a proof valid for ever whose replay-cache entry
/// (`exp + skew`) also wrapped, i.e. a replayable proof. It must be an
/// `invalid_proof` like any over-long proof, and the daemon serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_proof_lifetime_overflow_is_refused() -> R {
    let d = TestDaemon::start().await?;
    let k = DeviceKey::es256();
    d.oob_key("p-1", &k).await?;
    let now = d.now();
    let aud = proof_audience(&d.daemon_id(), ProofEndpoint::Provision);
    let url = d.endpoint(paths::PROVISION);
    let http = d.http();
    for (iat, exp) in [(-2, i64::MAX), (i64::MIN, now + 60), (i64::MIN, i64::MAX)] {
        let claims = json!({"sub": "p-1", "aud": aud, "iat": iat, "exp": exp, "jti": random_jti()});
        let proof = k.sign_raw(&k.proof_header(), &claims);
        let a = post_json(&http, &url, &k.request("p-1", proof)).await?;
        assert_eq!(
            (a.status, a.code()),
            (401, "invalid_proof"),
            "iat {iat} exp {exp}: {:?}",
            a.body
        );
    }
    // The daemon serves on: a well-formed request gets a normal answer
    // (admitted, or held after the failed proofs from this source).
    let k2 = DeviceKey::es256();
    d.oob_key("p-2", &k2).await?;
    let ok = d.provision("p-2", &k2).await?;
    assert!(matches!(ok.status, 200 | 202), "{:?}", ok.body);
    Ok(())
}

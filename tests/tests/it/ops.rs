//! Operations through the real interfaces: `/metrics` counts what a small
//! scenario did, `/readyz` says why it is not ready, and a backup taken
//! through the admin API restores into a daemon that renews a device
//! provisioned before the backup.

use std::collections::HashMap;

use idprov_proto::admin::ProvisioningState;
use idprov_proto::device::{PROOF_TYP, ProofEndpoint, proof_audience};
use idprov_tests::{DeviceKey, TestDaemon, post_json, random_jti};

/// `name{labels}` → value, from OpenMetrics text.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(d: &TestDaemon) -> HashMap<String, f64> {
    let addr = d.metrics_addr.expect("metrics enabled in tests");
    // The pinned client speaks plain HTTP too.
    let resp = d
        .http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.expect("body");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    parse(&text)
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_a_small_scenario() {
    let d = TestDaemon::start().await.expect("daemon");
    let before = scrape(&d).await;
    assert_eq!(get(&before, "idprov_tokens_issued_total"), 0.0);
    assert!(
        before.keys().any(|k| k.starts_with("idprov_build_info{")),
        "{before:?}"
    );

    // Admitted by its OOB key, then renewed.
    let a = DeviceKey::es256();
    d.oob_key("dev-a", &a).await.expect("oob");
    let ans = d.provision("dev-a", &a).await.expect("provision");
    assert_eq!(ans.status, 200, "{:?}", ans.body);
    let ans = d.renew("dev-a", &a, ans.token()).await.expect("renew");
    assert_eq!(ans.status, 200, "{:?}", ans.body);
    // Provisioning again with a CSR also issues a client certificate.
    let csr = idprov_tests::x509::csr(&a, "dev-a").expect("csr");
    let ans = d
        .provision_with("dev-a", &a, |r| r.csr = Some(csr))
        .await
        .expect("provision with CSR");
    assert_eq!(ans.status, 200, "{:?}", ans.body);
    assert!(ans.body["certificate"].is_string(), "{:?}", ans.body);

    // Unknown: pending, then too soon again (slow_down, rate limited).
    let b = DeviceKey::es256();
    assert_eq!(d.provision("dev-b", &b).await.expect("p").status, 202);
    assert_eq!(d.provision("dev-b", &b).await.expect("p").status, 429);

    // Listed with one key, presents another: refused and an alert.
    let c = DeviceKey::es256();
    d.oob_key("dev-c", &DeviceKey::es256()).await.expect("oob");
    assert_eq!(d.provision("dev-c", &c).await.expect("p").status, 403);

    // An expired proof.
    let now = d.now();
    let claims = serde_json::json!({
        "sub": "dev-x",
        "aud": proof_audience(&d.daemon_id(), ProofEndpoint::Provision),
        "iat": now - 2000,
        "exp": now - 1900,
        "jti": random_jti(),
    });
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.typ = Some(PROOF_TYP.to_string());
    let proof = c.sign_raw(&h, &claims);
    let ans = post_json(
        &d.http(),
        &d.endpoint(idprov_proto::device::paths::PROVISION),
        &c.request("dev-x", proof),
    )
    .await
    .expect("post");
    assert_eq!(ans.code(), "invalid_proof");

    let m = scrape(&d).await;
    let prov = "/idprov/v1/provision";
    for (key, want) in [
        (
            format!("idprov_http_requests_total{{endpoint=\"{prov}\",outcome=\"ok\"}}"),
            2.0,
        ),
        (
            format!("idprov_http_requests_total{{endpoint=\"{prov}\",outcome=\"pending\"}}"),
            1.0,
        ),
        (
            format!("idprov_http_requests_total{{endpoint=\"{prov}\",outcome=\"slow_down\"}}"),
            1.0,
        ),
        (
            format!("idprov_http_requests_total{{endpoint=\"{prov}\",outcome=\"refused\"}}"),
            1.0,
        ),
        (
            format!("idprov_http_requests_total{{endpoint=\"{prov}\",outcome=\"invalid_proof\"}}"),
            1.0,
        ),
        (
            "idprov_http_requests_total{endpoint=\"/idprov/v1/renew\",outcome=\"ok\"}".into(),
            1.0,
        ),
        (
            "idprov_provisioning_decisions_total{decision=\"approved\",rule=\"oob_key\"}".into(),
            1.0,
        ),
        (
            "idprov_provisioning_decisions_total{decision=\"approved\",rule=\"device_key\"}".into(),
            1.0,
        ),
        ("idprov_certificates_issued_total".into(), 1.0),
        (
            "idprov_provisioning_decisions_total{decision=\"pending\",rule=\"new\"}".into(),
            1.0,
        ),
        (
            "idprov_provisioning_decisions_total{decision=\"refused\",rule=\"oob_mismatch\"}"
                .into(),
            1.0,
        ),
        ("idprov_tokens_issued_total".into(), 3.0),
        ("idprov_renewals_total{kind=\"token\"}".into(), 1.0),
        ("idprov_proof_failures_total{class=\"expired\"}".into(), 1.0),
        (
            "idprov_rate_limited_total{reason=\"slow_down\"}".into(),
            1.0,
        ),
        ("idprov_alerts_total{kind=\"oob_mismatch\"}".into(), 1.0),
        ("idprov_pending_devices".into(), 1.0),
        ("idprov_devices".into(), 1.0),
        ("idprov_oob_entries".into(), 2.0),
        ("idprov_provisioning_paused".into(), 0.0),
    ] {
        assert_eq!(get(&m, &key), want, "{key} in {m:#?}");
    }
    // OOB upserts, provision, renew, pending: every one a durable commit.
    let commits = get(&m, "idprov_store_commit_seconds_count");
    assert!(commits >= 5.0, "{commits}");
    assert!(get(&m, "idprov_store_commit_seconds_sum") > 0.0);
}

#[tokio::test]
async fn readyz_says_why_it_is_not_ready() {
    let d = TestDaemon::start().await.expect("daemon");
    let metrics = format!("http://{}/readyz", d.metrics_addr.expect("metrics"));
    let main = d.endpoint("/readyz");
    for (client, url) in [(d.http(), &metrics), (d.http(), &main)] {
        let r = client.get(url).send().await.expect("readyz");
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["ready"], true, "{v}");
        assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
        assert_eq!(v["checks"]["ca"]["ok"], true, "{v}");
    }

    d.admin()
        .expect("admin")
        .set_provisioning(&ProvisioningState {
            paused: true,
            reason: Some("rogue advertiser seen".into()),
        })
        .await
        .expect("pause");
    for (client, url) in [(d.http(), &metrics), (d.http(), &main)] {
        let r = client.get(url).send().await.expect("readyz");
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["ready"], false, "{v}");
        assert_eq!(v["checks"]["provisioning"]["paused"], true, "{v}");
        assert_eq!(
            v["checks"]["provisioning"]["reason"], "rogue advertiser seen",
            "{v}"
        );
        assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    }
    let m = scrape(&d).await;
    assert_eq!(get(&m, "idprov_provisioning_paused"), 1.0);
    // /metrics is never served on the HTTPS listener.
    let r = d
        .http()
        .get(d.endpoint("/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_restored_backup_renews_a_device_provisioned_before_it() {
    let mut d = TestDaemon::start().await.expect("daemon");
    let key = DeviceKey::es256();
    d.oob_key("dev-1", &key).await.expect("oob");
    let first = d.provision("dev-1", &key).await.expect("provision");
    assert_eq!(first.status, 200, "{:?}", first.body);
    let token = first.token().to_string();
    let pending = DeviceKey::es256();
    assert_eq!(d.provision("dev-2", &pending).await.expect("p").status, 202);

    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("backup.tar");
    let mut out = tokio::fs::File::create(&file).await.expect("create");
    let n = d
        .admin()
        .expect("admin")
        .backup_to(&mut out)
        .await
        .expect("backup");
    drop(out);
    assert_eq!(std::fs::metadata(&file).expect("meta").len(), n);
    let manifest = idprovd::backup::verify(&file).expect("backup verifies");
    assert_eq!(manifest.daemon_id, d.daemon_id());
    assert_eq!(manifest.counts.devices, 1);
    assert_eq!(manifest.counts.pending, 1);
    assert_eq!(manifest.counts.tokens, 1);
    // The export is audited.
    let audit = d
        .admin()
        .expect("admin")
        .audit(&Default::default())
        .await
        .expect("audit");
    assert!(
        audit.items.iter().any(|e| e.action == "backup_exported"),
        "{audit:?}"
    );

    // The live data dir is refused even with --force.
    let err = idprovd::backup::restore(&file, &d.dir, true).expect_err("in use");
    assert!(
        matches!(err, idprovd::backup::BackupError::InUse(_)),
        "{err}"
    );

    let restored = tmp.path().join("restored");
    idprovd::backup::restore(&file, &restored, false).expect("restore");
    let err = idprovd::backup::restore(&file, &restored, false).expect_err("not empty");
    assert!(
        matches!(err, idprovd::backup::BackupError::NotEmpty(_)),
        "{err}"
    );
    idprovd::backup::restore(&file, &restored, true).expect("forced restore");

    // The original stops; the restored one takes over.
    d.stop().await.expect("stop");
    let r = TestDaemon::start_in(&restored)
        .await
        .expect("restored daemon");
    assert_eq!(r.daemon_id(), manifest.daemon_id);
    assert_eq!(r.daemon.pki.ca_fingerprint, manifest.ca_fingerprint);
    let ans = r.renew("dev-1", &key, &token).await.expect("renew");
    assert_eq!(ans.status, 200, "{:?}", ans.body);
    let pending_list = r
        .admin()
        .expect("admin")
        .pending_list(&Default::default())
        .await
        .expect("pending");
    assert_eq!(pending_list.items.len(), 1);

    // A damaged archive is refused, whatever byte is hit.
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let bad = tmp.path().join("bad.tar");
    std::fs::write(&bad, &bytes).expect("write");
    assert!(idprovd::backup::verify(&bad).is_err());
    let target = tmp.path().join("never");
    assert!(idprovd::backup::restore(&bad, &target, false).is_err());
    assert!(!target.exists(), "nothing is left behind");
}

//! Revocation (F12) and renewal over mutual TLS (F11), with openssl and curl
//! as independent clients: the CRL reads in `openssl crl`, `openssl verify
//! -crl_check` reports revoked serials, curl renews with a client
//! certificate and is refused once it is revoked, on a resumed connection
//! too; the CRL is regenerated on change and before nextUpdate, and
//! survives a restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use idprov_proto::DeviceId;
use idprov_proto::device::paths;
use idprov_tests::x509::{csr, mtls_client, openssl, serial_of};
use idprov_tests::{DeviceKey, TestDaemon};

type R = anyhow::Result<()>;

fn id(s: &str) -> DeviceId {
    s.parse().expect("valid test id")
}

/// Provision `device` with a CSR; write its key, certificate and the CA to
/// `dir`; return the certificate's serial.
async fn certified(
    d: &TestDaemon,
    dir: &Path,
    device: &str,
) -> anyhow::Result<(DeviceKey, String)> {
    let key = DeviceKey::es256();
    d.oob_key(device, &key).await?;
    let a = d
        .provision_csr(device, &key, Some(csr(&key, device)?))
        .await?;
    anyhow::ensure!(a.status == 200, "provision: {:?}", a.body);
    std::fs::write(dir.join("ca.pem"), d.ca_pem())?;
    std::fs::write(dir.join(format!("{device}.key")), &key.private_pem)?;
    std::fs::write(
        dir.join(format!("{device}.pem")),
        a.body["certificate"].as_str().unwrap_or(""),
    )?;
    let serial = serial_of(dir, &format!("{device}.pem"))?;
    Ok((key, serial))
}

async fn save_crl(d: &TestDaemon, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("crl.der"), d.crl_der().await?)?;
    let pem = d
        .http()
        .get(format!("{}?format=pem", d.endpoint(paths::CRL)))
        .send()
        .await?
        .text()
        .await?;
    std::fs::write(dir.join("crl.pem"), pem)?;
    Ok(())
}

fn verify_with_crl(dir: &Path, cert: &str) -> anyhow::Result<(bool, String)> {
    openssl(
        dir,
        &[
            "verify",
            "-crl_check",
            "-purpose",
            "sslclient",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            "crl.pem",
            cert,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_reads_the_crl_and_sees_revoked_serials() -> R {
    let d = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (_, s_cert) = certified(&d, dir, "by-serial").await?;
    let (k_key, s_key) = certified(&d, dir, "by-key").await?;
    let (_, s_dev) = certified(&d, dir, "by-device").await?;
    let (_, s_keep) = certified(&d, dir, "kept").await?;

    // Before any revocation: an empty CRL that openssl reads; all verify.
    save_crl(&d, dir).await?;
    let (ok, text) = openssl(
        dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    )?;
    assert!(ok, "{text}");
    assert!(text.contains("No Revoked Certificates"), "{text}");
    let n0 = d.admin()?.crl_info().await?.number;
    for f in ["by-serial.pem", "by-key.pem", "by-device.pem", "kept.pem"] {
        let (ok, out) = verify_with_crl(dir, f)?;
        assert!(ok, "{f}: {out}");
    }

    // Revoke one certificate by serial (as openssl prints it), one key, one
    // device.
    let admin = d.admin()?;
    let upper = s_cert.to_ascii_uppercase();
    let v = admin
        .certificate_revoke(&upper, Some("lost".into()))
        .await?;
    assert_eq!(v.serial, s_cert);
    assert!(
        admin.certificate_revoke(&s_cert, None).await.is_err(),
        "twice"
    );
    admin
        .key_revoke(&id("by-key"), k_key.kid(), Some("compromised".into()))
        .await?;
    admin.device_revoke(&id("by-device"), None, None).await?;

    save_crl(&d, dir).await?;
    let info = admin.crl_info().await?;
    assert_eq!(info.revoked, 3);
    assert!(
        info.number >= n0 + 3,
        "regenerated on every change: {info:?}"
    );
    let (ok, text) = openssl(
        dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    )?;
    assert!(ok, "{text}");
    let listed = text.to_ascii_lowercase();
    for s in [&s_cert, &s_key, &s_dev] {
        assert!(listed.contains(s.as_str()), "{s} not in CRL:\n{text}");
    }
    assert!(!listed.contains(s_keep.as_str()));
    assert!(text.contains("Key Compromise"), "{text}");
    // The CRL is signed by the CA.
    let (ok, out) = openssl(
        dir,
        &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
    )?;
    assert!(ok && out.contains("verify OK"), "{out}");

    for f in ["by-serial.pem", "by-key.pem", "by-device.pem"] {
        let (ok, out) = verify_with_crl(dir, f)?;
        assert!(!ok && out.contains("certificate revoked"), "{f}: {out}");
    }
    let (ok, out) = verify_with_crl(dir, "kept.pem")?;
    assert!(ok, "{out}");

    // PEM by Accept header too.
    let pem = d
        .http()
        .get(d.endpoint(paths::CRL))
        .header("accept", "application/x-pem-file")
        .send()
        .await?;
    assert_eq!(
        pem.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-pem-file")
    );
    assert!(pem.text().await?.starts_with("-----BEGIN X509 CRL-----"));
    let bad = d
        .http()
        .get(format!("{}?format=xml", d.endpoint(paths::CRL)))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);

    // It survives a restart: same CRL, same serials, and nothing revoked
    // comes back (I4).
    let before = d.crl_der().await?;
    let d = d.restart().await?;
    assert_eq!(d.crl_der().await?, before);
    assert_eq!(d.admin()?.crl_info().await?.revoked, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crl_is_re_signed_before_its_next_update() -> R {
    let d = TestDaemon::start_with(|c| {
        c.certificates.crl_validity = Duration::from_secs(8);
    })
    .await?;
    let admin = d.admin()?;
    let first = admin.crl_info().await?;
    assert_eq!(first.next_update - first.this_update, 8);
    // Past half of its validity (daemon time), the maintenance task signs a
    // new one well before nextUpdate.
    d.clock.advance(5);
    let mut info = admin.crl_info().await?;
    for _ in 0..50 {
        if info.number > first.number {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = admin.crl_info().await?;
    }
    assert!(info.number > first.number, "not re-signed: {info:?}");
    assert_eq!(info.this_update, first.this_update + 5);
    assert!(info.next_update > first.next_update);
    Ok(())
}

fn curl(dir: &Path, url: &str, device: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let out = Command::new("curl")
        .current_dir(dir)
        .args([
            "-sS",
            "--cacert",
            "ca.pem",
            "--cert",
            &format!("{device}.pem"),
            "--key",
            &format!("{device}.key"),
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Ok((code.trim().parse().unwrap_or(0), json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_renews_over_mutual_tls_until_the_certificate_is_revoked() -> R {
    let d = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (key, serial) = certified(&d, dir, "mtls-dev").await?;
    let url = d.endpoint(paths::RENEW_MTLS);

    // curl with the client certificate: a new token and a new certificate
    // for the same key.
    let (code, body) = curl(dir, &url, "mtls-dev")?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["key_id"], key.kid());
    let renewed = body["certificate"].as_str().unwrap_or("").to_string();
    assert!(renewed.starts_with("-----BEGIN CERTIFICATE-----"), "{body}");
    std::fs::write(dir.join("renewed.pem"), &renewed)?;
    assert_ne!(serial_of(dir, "renewed.pem")?, serial);
    // The token works like any other.
    let r = d
        .renew("mtls-dev", &key, body["token"].as_str().unwrap_or(""))
        .await?;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Without a client certificate: refused.
    let plain = d.http().post(&url).send().await?;
    assert_eq!(plain.status(), 401);
    // With a CSR in the body (rcgen client, kept-alive connection).
    let client = mtls_client(&d.ca_pem(), &renewed, &key.private_pem)?;
    let r = client
        .post(&url)
        .json(&serde_json::json!({ "csr": csr(&key, "mtls-dev")? }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    // A certificate from another CA does not even get through TLS.
    let foreign = rcgen::generate_simple_self_signed(vec!["mtls-dev".to_string()])?;
    std::fs::write(dir.join("foreign.pem"), foreign.cert.pem())?;
    std::fs::write(dir.join("foreign.key"), foreign.signing_key.serialize_pem())?;
    let (code, _) = curl(dir, &url, "foreign")?;
    assert_eq!(code, 0, "TLS must fail for a certificate of another CA");

    // Revoke the renewed certificate: curl is refused at once, and so is
    // the client whose TLS connection (and session) predates the revocation.
    let ok_before = client.post(&url).send().await?;
    assert_eq!(ok_before.status(), 200);
    d.admin()?
        .certificate_revoke(&serial_of(dir, "renewed.pem")?, None)
        .await?;
    std::fs::copy(dir.join("renewed.pem"), dir.join("revoked.pem"))?;
    std::fs::copy(dir.join("mtls-dev.key"), dir.join("revoked.key"))?;
    let (code, body) = curl(dir, &url, "revoked")?;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["code"], "invalid_token");
    let after = client.post(&url).send().await?;
    assert_eq!(after.status(), 401);

    // The first certificate is still good until its device is revoked.
    let (code, _) = curl(dir, &url, "mtls-dev")?;
    assert_eq!(code, 200);
    d.admin()?
        .device_revoke(&id("mtls-dev"), None, None)
        .await?;
    let (code, _) = curl(dir, &url, "mtls-dev")?;
    assert_eq!(code, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_key_or_the_device_ends_its_certificates() -> R {
    let d = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (key, serial) = certified(&d, dir, "short-lived").await?;
    let url = d.endpoint(paths::RENEW_MTLS);
    let admin = d.admin()?;
    // A second key, so removing the first leaves the device usable.
    let k2 = DeviceKey::es256();
    assert_eq!(d.add_key("short-lived", &key, &k2, None).await?.status, 200);
    admin.key_remove(&id("short-lived"), key.kid()).await?;
    let (code, _) = curl(dir, &url, "short-lived")?;
    assert_eq!(code, 401);
    let cert = admin.certificate(&serial).await?;
    assert!(cert.revoked_at.is_some());

    // Device removal: its certificates go on the CRL.
    let (_, s2) = certified(&d, dir, "removed").await?;
    admin.device_remove(&id("removed")).await?;
    let (code, _) = curl(dir, &url, "removed")?;
    assert_eq!(code, 401);
    save_crl(&d, dir).await?;
    let (ok, out) = verify_with_crl(dir, "removed.pem")?;
    assert!(
        !ok && out.contains("certificate revoked"),
        "{out}; serial {s2}"
    );
    Ok(())
}

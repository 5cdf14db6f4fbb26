//! Client certificates from CSRs (F11), checked with openssl as an
//! independent verifier: what the certificate says comes from policy, never
//! from the CSR (security rule 6); hostile CSRs are refused or overridden.

use idprov_proto::DeviceId;
use idprov_tests::x509::{csr, csr_with, openssl, serial_of};
use idprov_tests::{DeviceKey, TestDaemon};
use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};

type R = anyhow::Result<()>;

fn write(dir: &std::path::Path, name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(name), text)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_certificates_pass_openssl_as_client_certificates() -> R {
    let d = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    write(dir, "ca.pem", &d.ca_pem())?;
    for (id, key) in [
        ("cert-ec", DeviceKey::es256()),
        ("cert-rsa", DeviceKey::rs256()),
    ] {
        d.oob_key(id, &key).await?;
        let a = d.provision_csr(id, &key, Some(csr(&key, id)?)).await?;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let cert = a.body["certificate"].as_str().unwrap_or("").to_string();
        assert!(
            cert.starts_with("-----BEGIN CERTIFICATE-----"),
            "{:?}",
            a.body
        );
        assert_eq!(a.body["ca_chain"][0].as_str(), Some(d.ca_pem().as_str()));
        let file = format!("{id}.pem");
        write(dir, &file, &cert)?;

        let (ok, out) = openssl(
            dir,
            &[
                "verify",
                "-purpose",
                "sslclient",
                "-CAfile",
                "ca.pem",
                &file,
            ],
        )?;
        assert!(ok && out.contains(": OK"), "openssl verify: {out}");

        let (ok, text) = openssl(dir, &["x509", "-in", &file, "-noout", "-text"])?;
        assert!(ok, "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("Digital Signature"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(
            text.contains(&format!("URI:urn:idprov:device:{id}")),
            "{text}"
        );
        assert!(text.contains(&format!("CN = {id}")), "{text}");
        assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        // The certificate certifies the device's key.
        let (_, pubkey) = openssl(dir, &["x509", "-in", &file, "-noout", "-pubkey"])?;
        let certified = idprov_proto::PublicKey::from_pem(&pubkey, None)?;
        assert_eq!(certified.thumbprint(), key.kid());

        // Recorded in the store (invariant I2), under the serial openssl sees.
        let serial = serial_of(dir, &file)?;
        let certs = d
            .admin()?
            .device_certificates(&id.parse::<DeviceId>()?)
            .await?;
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].serial, serial);
        assert_eq!(certs[0].kid, key.kid());
        assert_eq!(certs[0].not_after - d.now(), 30 * 24 * 3600);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_a_csr_issues_a_fresh_certificate_and_without_one_none() -> R {
    let d = TestDaemon::start_with(|c| {
        c.certificates.lifetime = std::time::Duration::from_secs(3600);
    })
    .await?;
    let key = DeviceKey::es256();
    d.oob_key("renewer", &key).await?;
    let first = d
        .provision_csr("renewer", &key, Some(csr(&key, "renewer")?))
        .await?;
    assert_eq!(first.status, 200, "{:?}", first.body);
    d.clock.advance(600);
    let plain = d.renew_csr("renewer", &key, first.token(), None).await?;
    assert_eq!(plain.status, 200, "{:?}", plain.body);
    assert!(plain.body.get("certificate").is_none(), "{:?}", plain.body);
    let again = d
        .renew_csr("renewer", &key, plain.token(), Some(csr(&key, "renewer")?))
        .await?;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_ne!(again.body["certificate"], first.body["certificate"]);
    let certs = d
        .admin()?
        .device_certificates(&"renewer".parse::<DeviceId>()?)
        .await?;
    assert_eq!(certs.len(), 2);
    assert!(certs.iter().all(|c| c.not_after - c.issued_at == 3600));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_csrs_are_refused_or_overridden() -> R {
    let d = TestDaemon::start().await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    write(dir, "ca.pem", &d.ca_pem())?;
    let key = DeviceKey::es256();
    d.oob_key("victim", &key).await?;
    d.oob_key("other", &DeviceKey::es256()).await?;

    // CA:TRUE, keyCertSign, serverAuth asked for: the certificate follows
    // policy instead (CA:FALSE, digitalSignature, clientAuth).
    let greedy = csr_with(&key, Some("victim"), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    })?;
    let a = d.provision_csr("victim", &key, Some(greedy)).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    write(
        dir,
        "greedy.pem",
        a.body["certificate"].as_str().unwrap_or(""),
    )?;
    let (_, text) = openssl(dir, &["x509", "-in", "greedy.pem", "-noout", "-text"])?;
    assert!(
        text.contains("CA:FALSE") && !text.contains("CA:TRUE"),
        "{text}"
    );
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");

    // Names another device, by CN or by SAN: refused, nothing issued.
    let by_cn = csr(&key, "other")?;
    let by_san = csr_with(&key, Some("victim"), |p| {
        p.subject_alt_names = vec![SanType::URI(
            "urn:idprov:device:other".try_into().expect("uri"),
        )];
    })?;
    let by_dns = csr_with(&key, None, |p| {
        p.subject_alt_names = vec![SanType::DnsName("other".try_into().expect("dns"))];
    })?;
    for hostile in [by_cn, by_san, by_dns] {
        let a = d.provision_csr("victim", &key, Some(hostile)).await?;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{:?}", a.body);
        assert!(a.body["message"].as_str().unwrap_or("").contains("other"));
    }

    // Signed by a key that is not the device's: refused.
    let stranger = DeviceKey::es256();
    let a = d
        .provision_csr("victim", &key, Some(csr(&stranger, "victim")?))
        .await?;
    assert_eq!((a.status, a.code()), (400, "bad_request"), "{:?}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a registered"),
        "{:?}",
        a.body
    );

    // A signature that does not verify (one bit of the signature flipped).
    let good = csr(&key, "victim")?;
    let der = pem_body(&good)?;
    let mut broken = der.clone();
    let last = broken.len() - 2;
    broken[last] ^= 0x01;
    let a = d
        .provision_csr("victim", &key, Some(pem("CERTIFICATE REQUEST", &broken)))
        .await?;
    assert_eq!(a.status, 400, "{:?}", a.body);

    // A P-256 key with a SHA-384 signature: the hash does not fit the curve.
    write(dir, "victim.key", &key.private_pem)?;
    let (ok, out) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "victim.key",
            "-subj",
            "/CN=victim",
            "-sha384",
            "-out",
            "sha384.csr",
        ],
    )?;
    assert!(ok, "{out}");
    let sha384 = std::fs::read_to_string(dir.join("sha384.csr"))?;
    let a = d.provision_csr("victim", &key, Some(sha384)).await?;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not fit"),
        "{:?}",
        a.body
    );
    // The same key with SHA-256 through openssl is fine.
    let (ok, out) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "victim.key",
            "-subj",
            "/CN=victim",
            "-sha256",
            "-out",
            "sha256.csr",
        ],
    )?;
    assert!(ok, "{out}");
    let sha256 = std::fs::read_to_string(dir.join("sha256.csr"))?;
    let a = d.provision_csr("victim", &key, Some(sha256)).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);

    // Garbage, a certificate instead of a CSR, an oversized one.
    for junk in [
        "not a csr".to_string(),
        d.ca_pem(),
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            "QUFB".repeat(5000)
        ),
    ] {
        let a = d.provision_csr("victim", &key, Some(junk)).await?;
        assert_eq!(a.status, 400, "{:?}", a.body);
    }

    // Refused CSRs issued nothing and consumed nothing: one certificate per
    // accepted request only.
    let certs = d
        .admin()?
        .device_certificates(&"victim".parse::<DeviceId>()?)
        .await?;
    assert_eq!(certs.len(), 2);
    Ok(())
}

fn pem_body(pem: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

fn pem(label: &str, der: &[u8]) -> String {
    idprov_proto::keys::pem_encode(label, der)
}

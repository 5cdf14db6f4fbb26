//! Helpers for the X.509 tests: CSRs made with rcgen (or openssl for the
//! shapes rcgen will not make), mutual-TLS clients, openssl and curl runs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use idprov_proto::device::{ProofEndpoint, paths};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::{Answer, DeviceKey, TestDaemon, post_json};

/// A CSR signed by `key`, with CN `cn` (if any); `tweak` may ask for more.
pub fn csr_with(
    key: &DeviceKey,
    cn: Option<&str>,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Result<String> {
    let kp = KeyPair::from_pem(&key.private_pem).context("device key into rcgen")?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    p.distinguished_name = dn;
    tweak(&mut p);
    Ok(p.serialize_request(&kp)?.pem()?)
}

/// The plain CSR a device sends: CN = its id.
pub fn csr(key: &DeviceKey, device: &str) -> Result<String> {
    csr_with(key, Some(device), |_| {})
}

/// Run openssl; Ok(stdout+stderr) whatever the exit status.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (is it installed?)")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Serial of a PEM certificate, lower-case hex, as the daemon records it.
pub fn serial_of(dir: &Path, cert_file: &str) -> Result<String> {
    let (ok, out) = openssl(dir, &["x509", "-in", cert_file, "-noout", "-serial"])?;
    if !ok {
        bail!("openssl x509 -serial failed: {out}");
    }
    Ok(out
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase())
}

/// A client that presents `cert_pem`/`key_pem` and trusts only `ca_pem`.
/// Each call gets its own connection pool; TLS resumption stays on (rustls'
/// default), so a revoked certificate is also tested on resumed sessions.
pub fn mtls_client(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<reqwest::Client> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()?)
}

impl TestDaemon {
    /// Provision with a CSR (or none).
    pub async fn provision_csr(
        &self,
        device: &str,
        key: &DeviceKey,
        csr: Option<String>,
    ) -> Result<Answer> {
        self.provision_with(device, key, |r| r.csr = csr).await
    }

    pub async fn renew_csr(
        &self,
        device: &str,
        key: &DeviceKey,
        token: &str,
        csr: Option<String>,
    ) -> Result<Answer> {
        let proof = key.proof(device, &self.daemon_id(), ProofEndpoint::Renew, self.now());
        let mut body = serde_json::json!({ "token": token, "proof": proof });
        if let Some(c) = csr {
            body["csr"] = c.into();
        }
        post_json(&self.http(), &self.endpoint(paths::RENEW), &body).await
    }

    /// `POST /keys`: `current` vouches for `new`.
    pub async fn add_key(
        &self,
        device: &str,
        current: &DeviceKey,
        new: &DeviceKey,
        expires_at: Option<i64>,
    ) -> Result<Answer> {
        let did = self.daemon_id();
        let now = self.now();
        let mut body = serde_json::json!({
            "device_id": device,
            "proof": current.proof(device, &did, ProofEndpoint::AddKey, now),
            "public_key": new.public_pem,
            "key_proof": new.proof(device, &did, ProofEndpoint::AddKey, now),
        });
        if let Some(e) = expires_at {
            body["expires_at"] = e.into();
        }
        post_json(&self.http(), &self.endpoint(paths::KEYS), &body).await
    }

    /// The CRL, DER.
    pub async fn crl_der(&self) -> Result<Vec<u8>> {
        let r = self.http().get(self.endpoint(paths::CRL)).send().await?;
        if !r.status().is_success() {
            bail!("GET crl: HTTP {}", r.status());
        }
        Ok(r.bytes().await?.to_vec())
    }
}

//! Helpers for the workspace integration tests: a real daemon started
//! in-process on 127.0.0.1:0 with its own data dir (mDNS off), device keys
//! that sign real proofs, and HTTPS clients pinned to the daemon's CA.

pub mod bench;
pub mod mountns;
pub mod netns;
pub mod relay;
pub mod security;
pub mod site;
pub mod x509;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use idprov_admin_client::AdminClient;
use idprov_proto::device::{
    InfoResponse, PROOF_TYP, ProofClaims, ProofEndpoint, ProvisionRequest, proof_audience,
};
use idprov_proto::{DeviceId, MacAddr, PublicKey, Secret};
use idprovd::{Clock, Config, ManualClock};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio_util::sync::CancellationToken;

/// A daemon running in this process.
pub struct TestDaemon {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub cfg: Config,
    pub clock: ManualClock,
    pub addr: SocketAddr,
    pub url: String,
    /// The plain-HTTP metrics listener (`/metrics`, `/readyz`).
    pub metrics_addr: Option<SocketAddr>,
    pub daemon: Arc<idprovd::Daemon>,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// A configuration for tests: loopback, port 0, short waits.
pub fn test_config(dir: &Path) -> Config {
    let mut cfg = Config {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.pending.retry_after = Duration::from_secs(2);
    // Never advertise on the machine's real interfaces.
    cfg.mdns.enabled = false;
    // Tests send many requests, good and bad, from 127.0.0.1; the security
    // tests turn the limits back on.
    cfg.rate_limit.enabled = false;
    // Metrics on a port of its own: tests run many daemons at once.
    cfg.metrics.listen = "127.0.0.1:0".parse().expect("literal address");
    cfg
}

impl TestDaemon {
    /// Start a daemon with a fresh data dir and default test config.
    pub async fn start() -> Result<TestDaemon> {
        Self::start_with(|_| {}).await
    }

    /// Start with a config tweak.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<TestDaemon> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        let mut cfg = test_config(&dir);
        tweak(&mut cfg);
        let clock = ManualClock::starting_now();
        let mut d = Self::boot(cfg, clock).await?;
        d._tmp = Some(tmp);
        Ok(d)
    }

    /// Start on a data dir the caller owns (it outlives the daemon).
    pub async fn start_in(dir: &Path) -> Result<TestDaemon> {
        Self::boot(test_config(dir), ManualClock::starting_now()).await
    }

    /// Keep a temporary directory alive as long as the daemon.
    pub fn keep_tmp(&mut self, tmp: tempfile::TempDir) {
        self._tmp = Some(tmp);
    }

    pub async fn boot(cfg: Config, clock: ManualClock) -> Result<TestDaemon> {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let shutdown = CancellationToken::new();
        let running = idprovd::start(
            cfg.clone(),
            Arc::new(clock.clone()),
            idprovd::Listeners { https: listener },
            shutdown.clone(),
        )
        .await?;
        Ok(TestDaemon {
            dir: cfg.data_dir.clone(),
            _tmp: None,
            url: idprovd::server_url(running.addr),
            addr: running.addr,
            metrics_addr: running.metrics_addr,
            daemon: running.daemon,
            cfg,
            clock,
            shutdown,
            task: Some(running.task),
        })
    }

    /// Stop the daemon (waits for it to close its store).
    pub async fn stop(&mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }

    /// Stop and start again on the same data dir (a new port), keeping the
    /// clock.
    pub async fn restart(mut self) -> Result<TestDaemon> {
        self.stop().await?;
        let tmp = self._tmp.take();
        let cfg = self.cfg.clone();
        let clock = self.clock.clone();
        drop(self);
        // The store is closed when the last handle is dropped; give spawned
        // blocking tasks a moment to release theirs.
        let mut last = None;
        for _ in 0..50 {
            match Self::boot(cfg.clone(), clock.clone()).await {
                Ok(mut d) => {
                    d._tmp = tmp;
                    return Ok(d);
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn daemon_id(&self) -> String {
        self.daemon.daemon_id().to_string()
    }

    pub fn ca_pem(&self) -> String {
        self.daemon.pki.ca_cert_pem.clone()
    }

    /// The first administrator's profile, written on first start.
    pub fn profile_path(&self) -> PathBuf {
        self.dir.join("admin.profile")
    }

    pub fn admin(&self) -> Result<AdminClient> {
        let (_, mut profile) = idprov_admin_client::load_profile(Some(&self.profile_path()))?;
        // The profile names the address of the first start; after a restart
        // the port differs.
        profile.server = self.url.clone();
        Ok(AdminClient::new(&profile)?)
    }

    /// An HTTPS client that trusts only this daemon's CA.
    pub fn http(&self) -> reqwest::Client {
        pinned_client(&self.ca_pem())
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// The value of one unlabelled sample (`name value`) on `/metrics`.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let url = format!("http://{}/metrics", self.metrics_addr.context("metrics")?);
        let text = self.http().get(&url).send().await?.text().await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .with_context(|| format!("{name} in /metrics"))
    }

    pub async fn info(&self) -> Result<InfoResponse> {
        Ok(self
            .http()
            .get(self.endpoint(idprov_proto::device::paths::INFO))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// reqwest client with the given CA as the only root.
pub fn pinned_client(ca_pem: &str) -> reqwest::Client {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// A device key pair that signs proofs.
pub struct DeviceKey {
    pub alg: Algorithm,
    pub private_pem: String,
    pub public_pem: String,
    pub public: PublicKey,
    encoding: EncodingKey,
}

impl DeviceKey {
    pub fn es256() -> DeviceKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("P-256 key generation");
        Self::from_pems(Algorithm::ES256, kp.serialize_pem(), kp.public_key_pem())
    }

    pub fn rs256() -> DeviceKey {
        let kp =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("RSA key generation");
        Self::from_pems(Algorithm::RS256, kp.serialize_pem(), kp.public_key_pem())
    }

    pub fn from_pems(alg: Algorithm, private_pem: String, public_pem: String) -> DeviceKey {
        let encoding = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        }
        .expect("private key loads");
        let public = PublicKey::from_pem(&public_pem, None).expect("public key parses");
        DeviceKey {
            alg,
            private_pem,
            public_pem,
            public,
            encoding,
        }
    }

    pub fn kid(&self) -> &str {
        self.public.thumbprint()
    }

    /// Sign arbitrary claims with an arbitrary header (for hostile tests).
    pub fn sign_raw(&self, header: &Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("signing works")
    }

    /// A well-formed proof for `endpoint` at time `now`.
    pub fn proof(
        &self,
        device: &str,
        daemon_id: &str,
        endpoint: ProofEndpoint,
        now: i64,
    ) -> String {
        let claims = ProofClaims {
            sub: device.to_string(),
            aud: proof_audience(daemon_id, endpoint),
            iat: now,
            exp: now + 120,
            jti: random_jti(),
            nbf: None,
            iss: None,
            cbt: None,
        };
        let mut h = Header::new(self.alg);
        h.typ = Some(PROOF_TYP.to_string());
        h.kid = Some(self.kid().to_string());
        jsonwebtoken::encode(&h, &claims, &self.encoding).expect("signing works")
    }

    pub fn proof_header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.typ = Some(PROOF_TYP.to_string());
        h.kid = Some(self.kid().to_string());
        h
    }

    pub fn request(&self, device: &str, proof: String) -> ProvisionRequest {
        ProvisionRequest {
            device_id: device.parse().expect("test device id is valid"),
            public_key: self.public_pem.clone(),
            key_format: None,
            mac: None,
            secret: None,
            proof,
            csr: None,
        }
    }
}

pub fn random_jti() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

/// A device's view of one exchange: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn token(&self) -> &str {
        self.body["token"].as_str().unwrap_or("")
    }
}

/// POST JSON and collect the answer, whatever its status.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> Result<Answer> {
    let resp = client.post(url).json(body).send().await.context("POST")?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await?;
    let body = serde_json::from_str(&text)
        .with_context(|| format!("answer is not JSON (HTTP {status}): {text}"))?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

impl TestDaemon {
    /// Provision `device` with `key` using a fresh, valid proof.
    pub async fn provision(&self, device: &str, key: &DeviceKey) -> Result<Answer> {
        self.provision_with(device, key, |_| {}).await
    }

    pub async fn provision_with(
        &self,
        device: &str,
        key: &DeviceKey,
        tweak: impl FnOnce(&mut ProvisionRequest),
    ) -> Result<Answer> {
        let proof = key.proof(
            device,
            &self.daemon_id(),
            ProofEndpoint::Provision,
            self.now(),
        );
        let mut req = key.request(device, proof);
        tweak(&mut req);
        post_json(
            &self.http(),
            &self.endpoint(idprov_proto::device::paths::PROVISION),
            &req,
        )
        .await
    }

    pub async fn renew(&self, device: &str, key: &DeviceKey, token: &str) -> Result<Answer> {
        let proof = key.proof(device, &self.daemon_id(), ProofEndpoint::Renew, self.now());
        post_json(
            &self.http(),
            &self.endpoint(idprov_proto::device::paths::RENEW),
            &serde_json::json!({ "token": token, "proof": proof }),
        )
        .await
    }

    /// Add OOB entries through the admin API.
    pub async fn oob_key(&self, device: &str, key: &DeviceKey) -> Result<()> {
        self.oob(vec![oob_entry(device, Some(key), None, None)])
            .await
    }

    pub async fn oob(&self, entries: Vec<idprov_proto::admin::OobEntryInput>) -> Result<()> {
        self.admin()?
            .oob_upsert(&idprov_proto::admin::OobUpsertRequest {
                entries,
                replace: false,
                dry_run: false,
            })
            .await?;
        Ok(())
    }
}

pub fn oob_entry(
    device: &str,
    key: Option<&DeviceKey>,
    mac: Option<MacAddr>,
    secret: Option<&str>,
) -> idprov_proto::admin::OobEntryInput {
    idprov_proto::admin::OobEntryInput {
        device_id: device.parse::<DeviceId>().expect("valid test id"),
        public_key: key.map(|k| k.public_pem.clone()),
        key_format: None,
        mac,
        secret: secret.map(Secret::new),
        setup_verifier: None,
        expires_at: None,
        note: None,
    }
}

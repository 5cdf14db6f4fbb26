//! The daemon's key material in its data dir: the CA (P-256), the server
//! certificate it issues itself, and the token-signing key. Created on the
//! first start in an empty dir, never again: an initialised dir missing or
//! holding other key material is refused ([`KeyMaterialError`]); private
//! keys are written 0600 (in a 0700 dir).
//!
//! ```text
//! ca.pem  ca.key          the CA devices pin (fingerprint = SHA-256 of DER)
//! server.pem  server.key  TLS; the certificate is re-issued at every start
//!                         so its SANs follow the host's names and addresses;
//!                         a missing server.key is made again (derived)
//! signing.key             ES256 key of daemon tokens (kid = RFC 7638)
//! identity.json           the daemon id, CA fingerprint and signing kid
//!                         (written last: the dir was initialised)
//! ```

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idprov_proto::keys::sha256_hex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const SIGNING_KEY: &str = "signing.key";
pub const IDENTITY: &str = "identity.json";

/// The store's file name (the backend owns the file; the data dir's rules
/// below need its name).
pub const STORE_FILE: &str = "idprov.redb";

/// A data dir holding any of these is initialised: its key material is
/// loaded and checked, never created again (issue 13).
const INITIALISED_BY: [&str; 6] = [
    IDENTITY,
    STORE_FILE,
    CA_KEY,
    CA_CERT,
    SIGNING_KEY,
    SERVER_KEY,
];

/// Written when the data dir is initialised (last, so its presence means
/// the key material was complete), with what the keys must match at every
/// later start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub daemon_id: String,
    pub created_at: i64,
    /// SHA-256 of the CA certificate devices pinned. Absent in data dirs
    /// from before it was recorded: recorded at their next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// The kid (RFC 7638) of `signing.key`, which every issued token names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_kid: Option<String>,
}

/// Key material of an initialised data dir that is missing, damaged or not
/// the one the dir was created with. The daemon refuses to start (exit 4)
/// rather than create new material: a new CA voids every device's pin, a
/// new signing key every issued token.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path}: {problem}. idprovd never creates key material in an initialised data dir; restore the data dir from a backup (stop the daemon, then: idprovd --data-dir {dir} restore BACKUP.tar --force; see docs/operations.md)",
    path = path.display(),
    dir = path.parent().unwrap_or(Path::new(".")).display()
)]
pub struct KeyMaterialError {
    pub path: PathBuf,
    pub problem: Problem,
}

/// What is wrong with a file of key material.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("missing, although the data dir is initialised ({0} exists)")]
    Missing(&'static str),
    #[error("damaged ({0})")]
    Damaged(String),
    #[error("does not match {0}")]
    Mismatch(String),
}

fn key_error(dir: &Path, file: &str, problem: Problem) -> anyhow::Error {
    KeyMaterialError {
        path: dir.join(file),
        problem,
    }
    .into()
}

/// Everything cryptographic the daemon holds.
pub struct Pki {
    pub identity: Identity,
    pub ca_cert_pem: String,
    pub ca_cert_der: CertificateDer<'static>,
    /// Lower-case hex SHA-256 of the CA certificate DER.
    pub ca_fingerprint: String,
    ca_key: KeyPair,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    pub signing: SigningKey,
    /// True when this start created the data dir contents.
    pub created: bool,
}

/// The ES256 key daemon tokens are signed with.
pub struct SigningKey {
    pub kid: String,
    /// Parsed once at start: `jsonwebtoken::encode` re-parses a PKCS#8 key
    /// (with aws-lc's key check) on every signature, which showed up in the
    /// issuance profile.
    signer: aws_lc_rs::signature::EcdsaKeyPair,
    pub decoding: jsonwebtoken::DecodingKey,
    /// Public JWK (for the JWKS document).
    pub jwk: serde_json::Value,
}

impl Pki {
    /// Load the data dir, or initialise an empty one. An initialised dir
    /// (any of [`INITIALISED_BY`] exists) must hold all its key material,
    /// matching what `identity.json` recorded; nothing is written until it
    /// has been checked. `extra_names`/`extra_addrs` are added to the
    /// server certificate.
    pub fn load_or_create(
        dir: &Path,
        now: i64,
        extra_names: &[String],
        extra_addrs: &[IpAddr],
    ) -> Result<Pki> {
        Self::load_or_create_for(dir, now, extra_names, extra_addrs, true)
    }

    /// [`Pki::load_or_create`] for a daemon whose records may live outside
    /// the data dir: `store_file` is false with the PostgreSQL backend, whose
    /// missing database the store itself reports.
    pub fn load_or_create_for(
        dir: &Path,
        now: i64,
        extra_names: &[String],
        extra_addrs: &[IpAddr],
        store_file: bool,
    ) -> Result<Pki> {
        ensure_private_dir(dir)?;
        // `marker` is what makes the dir initialised, for the messages.
        let (marker, created) = match INITIALISED_BY.into_iter().find(|f| dir.join(f).exists()) {
            Some(m) => (m, false),
            None => {
                Self::create(dir, now)?;
                (IDENTITY, true)
            }
        };
        let identity_path = dir.join(IDENTITY);
        let bytes = read_material(dir, IDENTITY, marker)?;
        let mut identity: Identity = serde_json::from_slice(&bytes)
            .map_err(|e| key_error(dir, IDENTITY, Problem::Damaged(e.to_string())))?;
        let ca_key = load_key(dir, CA_KEY, marker)?;
        let ca_cert_pem = String::from_utf8(read_material(dir, CA_CERT, marker)?)
            .map_err(|_| key_error(dir, CA_CERT, Problem::Damaged("not text".into())))?;
        let ca_cert_der = pem_cert(&ca_cert_pem)
            .ok_or_else(|| key_error(dir, CA_CERT, Problem::Damaged("no certificate".into())))?;
        if let Err(e) = ca_key_signs_for(&ca_key, &ca_cert_der) {
            return Err(key_error(
                dir,
                CA_KEY,
                Problem::Mismatch(format!("{CA_CERT} ({e})")),
            ));
        }
        let ca_fingerprint = sha256_hex(&ca_cert_der);
        if let Some(recorded) = identity.ca_fingerprint.as_deref()
            && recorded != ca_fingerprint
        {
            return Err(key_error(
                dir,
                CA_CERT,
                Problem::Mismatch(format!(
                    "the CA recorded in {IDENTITY} (fingerprint {recorded}, found {ca_fingerprint}): devices pinned the recorded one"
                )),
            ));
        }
        let signing = SigningKey::from_keypair(&load_key(dir, SIGNING_KEY, marker)?)?;
        if let Some(recorded) = identity.signing_kid.as_deref()
            && recorded != signing.kid
        {
            return Err(key_error(
                dir,
                SIGNING_KEY,
                Problem::Mismatch(format!(
                    "the signing key recorded in {IDENTITY} (kid {recorded}, found {}): issued tokens name the recorded one",
                    signing.kid
                )),
            ));
        }
        // Checked here, before the server certificate is written: a lost
        // store must leave the dir as it was too.
        if store_file && !created && !dir.join(STORE_FILE).exists() {
            return Err(crate::store::StoreError::Missing(dir.join(STORE_FILE)).into());
        }
        // The server key is derived material: devices pin the CA, not it,
        // and its certificate is issued from the (checked) CA at every
        // start. A missing one is made again; a damaged one is left for a
        // human to look at.
        let server_key = match load_key(dir, SERVER_KEY, marker) {
            Ok(k) => k,
            Err(e) if !dir.join(SERVER_KEY).exists() => {
                tracing::warn!(error = %e, "server.key was missing; a new one is made, its certificate issued from the intact CA");
                create_key(&dir.join(SERVER_KEY))?
            }
            Err(e) => return Err(e),
        };
        if identity.ca_fingerprint.is_none() || identity.signing_kid.is_none() {
            // A data dir from before these were recorded: record them now,
            // so the next start can check them.
            identity.ca_fingerprint = Some(ca_fingerprint.clone());
            identity.signing_kid = Some(signing.kid.clone());
            write_atomic(
                &identity_path,
                &serde_json::to_vec_pretty(&identity)?,
                0o644,
            )?;
            tracing::info!(ca_fingerprint = %ca_fingerprint, signing_kid = %signing.kid, "recorded the CA fingerprint and signing kid in identity.json");
        }
        let (server_chain, server_key) = issue_server_cert(
            dir,
            &identity,
            &ca_cert_der,
            &ca_key,
            &server_key,
            extra_names,
            extra_addrs,
        )?;
        Ok(Pki {
            identity,
            ca_cert_pem,
            ca_cert_der,
            ca_fingerprint,
            ca_key,
            server_chain,
            server_key,
            signing,
            created,
        })
    }

    /// Initialise an empty data dir: keys, CA, then `identity.json` last.
    /// The caller loads it like any other.
    fn create(dir: &Path, now: i64) -> Result<()> {
        let daemon_id = format!("idprovd-{}", hex::encode(rand::random::<[u8; 6]>()));
        let ca_key = create_key(&dir.join(CA_KEY))?;
        let ca_cert = ca_params(&daemon_id)
            .self_signed(&ca_key)
            .context("creating the CA")?;
        write_atomic(&dir.join(CA_CERT), ca_cert.pem().as_bytes(), 0o644)?;
        let signing = SigningKey::from_keypair(&create_key(&dir.join(SIGNING_KEY))?)?;
        create_key(&dir.join(SERVER_KEY))?;
        let identity = Identity {
            daemon_id,
            created_at: now,
            ca_fingerprint: Some(sha256_hex(ca_cert.der())),
            signing_kid: Some(signing.kid),
        };
        write_atomic(
            &dir.join(IDENTITY),
            serde_json::to_vec_pretty(&identity)?.as_slice(),
            0o644,
        )
    }

    /// An issuer for certificates signed by the daemon CA (admin and, later,
    /// device client certificates).
    pub fn ca_issuer(&self) -> Result<Issuer<'_, &KeyPair>> {
        Issuer::from_ca_cert_der(&self.ca_cert_der, &self.ca_key)
            .context("the CA certificate does not match ca.key")
    }

    /// That the CA key signs what the CA certificate's key verifies (what
    /// `/readyz` reports as the CA check).
    pub fn check_ca(&self) -> Result<()> {
        ca_key_signs_for(&self.ca_key, &self.ca_cert_der)
    }
}

/// Sign a probe with `key` and verify it with the public key of `cert`.
fn ca_key_signs_for(key: &KeyPair, cert: &CertificateDer<'_>) -> Result<()> {
    use rcgen::SigningKey as _;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| anyhow!("the certificate does not parse: {e}"))?;
    let public = parsed.public_key().subject_public_key.data.as_ref();
    let probe = rand::random::<[u8; 32]>();
    let sig = key
        .sign(&probe)
        .map_err(|e| anyhow!("the key cannot sign: {e}"))?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        public,
    )
    .verify(&probe, &sig)
    .map_err(|_| anyhow!("a signature by the key does not verify with the certificate's key"))
}

/// Issue this start's server certificate from the CA and write it.
fn issue_server_cert(
    dir: &Path,
    identity: &Identity,
    ca_cert_der: &CertificateDer<'static>,
    ca_key: &KeyPair,
    server_key: &KeyPair,
    extra_names: &[String],
    extra_addrs: &[IpAddr],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let issuer = Issuer::from_ca_cert_der(ca_cert_der, ca_key)
        .context("the CA certificate does not match ca.key")?;
    let server_cert = server_params(&identity.daemon_id, extra_names, extra_addrs)?
        .signed_by(server_key, &issuer)
        .context("issuing the server certificate")?;
    write_atomic(&dir.join(SERVER_CERT), server_cert.pem().as_bytes(), 0o644)?;
    let chain = vec![server_cert.der().clone(), ca_cert_der.clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    Ok((chain, key))
}

/// A file of key material an initialised data dir must hold.
fn read_material(dir: &Path, file: &str, marker: &'static str) -> Result<Vec<u8>> {
    match fs::read(dir.join(file)) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(key_error(dir, file, Problem::Missing(marker)))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(file).display())),
    }
}

/// A private key an initialised data dir must hold.
fn load_key(dir: &Path, file: &str, marker: &'static str) -> Result<KeyPair> {
    let path = dir.join(file);
    if path.exists() {
        check_private_mode(&path)?;
    }
    let bytes = read_material(dir, file, marker)?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|pem| KeyPair::from_pem(pem).ok())
        .ok_or_else(|| key_error(dir, file, Problem::Damaged("not a PEM private key".into())))
}

/// Read only the CA certificate and its fingerprint (for `ca fingerprint`,
/// which must not touch anything else).
pub fn read_ca(dir: &Path) -> Result<(String, String)> {
    let path = dir.join(CA_CERT);
    let pem = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (has idprovd been started with this data dir?)",
            path.display()
        )
    })?;
    let der = pem_cert(&pem).with_context(|| format!("{} holds no certificate", path.display()))?;
    Ok((pem, sha256_hex(&der)))
}

impl SigningKey {
    fn from_keypair(kp: &KeyPair) -> Result<SigningKey> {
        let raw = kp.public_key_raw(); // 0x04 || x || y
        if raw.len() != 65 {
            return Err(anyhow!("signing.key is not a P-256 key"));
        }
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..65]);
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "use": "sig", "alg": "ES256", "kid": kid,
        });
        SigningKey::from_pkcs8(kid, kp.serialized_der(), jwk)
    }

    /// A P-256 key from its PKCS#8 DER, parsed here once.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8], jwk: serde_json::Value) -> Result<SigningKey> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| anyhow!("the token signing key is not a P-256 key: {e}"))?;
        let decoding = jsonwebtoken::DecodingKey::from_ec_der(signer.public_key().as_ref());
        Ok(SigningKey {
            kid,
            signer,
            decoding,
            jwk,
        })
    }

    /// The ES256 signature (r || s, 64 bytes) of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        Ok(self.signer.sign(&rng, message)?.as_ref().to_vec())
    }
}

fn ca_params(daemon_id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("idprov CA {daemon_id}"));
    dn.push(DnType::OrganizationName, "idprov");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365 * 20);
    p
}

fn server_params(
    daemon_id: &str,
    extra_names: &[String],
    extra_addrs: &[IpAddr],
) -> Result<CertificateParams> {
    let mut names: Vec<String> = vec!["localhost".into()];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_string();
        if !h.is_empty() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
    }
    names.extend(extra_names.iter().cloned());
    let mut addrs: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    if let Ok(ifs) = if_addrs::get_if_addrs() {
        addrs.extend(ifs.into_iter().map(|i| i.ip()));
    }
    addrs.extend(extra_addrs.iter().copied());
    names.sort();
    names.dedup();
    addrs.sort();
    addrs.dedup();

    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, daemon_id);
    p.distinguished_name = dn;
    for n in names {
        let ia5 = n
            .clone()
            .try_into()
            .with_context(|| format!("server name {n:?} is not a valid DNS name"))?;
        p.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for a in addrs {
        p.subject_alt_names.push(SanType::IpAddress(a));
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(397);
    p.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
    Ok(p)
}

fn pem_cert(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(|r| r.ok())
}

fn create_key(path: &Path) -> Result<KeyPair> {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
    write_atomic(path, kp.serialize_pem().as_bytes(), 0o600)?;
    Ok(kp)
}

/// Refuse a private key that others can read: someone changed it, and a
/// daemon that kept going would hide that.
fn check_private_mode(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(anyhow!(
            "{} is readable by others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// The name of the lock file a running daemon holds in its data dir.
pub const DATA_DIR_LOCK: &str = ".idprovd.lock";

/// A running daemon's hold on its data dir (an exclusive lock on
/// [`DATA_DIR_LOCK`], released when the daemon ends, even by a crash).
/// Taken before anything in the directory is read or written, so a second
/// daemon on the same directory changes nothing before it is refused.
#[derive(Debug)]
pub struct DataDirLock {
    _file: fs::File,
}

impl DataDirLock {
    /// Lock `dir` (creating it, private, if it does not exist). Another
    /// daemon holding it is `StoreError::Locked`.
    pub fn acquire(dir: &Path) -> Result<DataDirLock> {
        ensure_private_dir(dir)?;
        let path = dir.join(DATA_DIR_LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {
                Err(crate::store::StoreError::Locked(dir.to_path_buf()).into())
            }
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", dir.display()))?;
    }
    if !dir.is_dir() {
        return Err(anyhow!("{} is not a directory", dir.display()));
    }
    Ok(())
}

/// Write a file completely or not at all: temp file in the same dir, fsync,
/// rename, fsync the dir. `mode` is applied at creation.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    let result = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

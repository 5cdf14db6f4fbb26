//! The daemon's key material in its data dir: the CA (P-256), the server
//! certificate it issues itself, and the token-signing key. Created on first
//! start, reused afterwards; private keys are written 0600 (in a 0700 dir).
//!
//! ```text
//! ca.pem  ca.key          the CA devices pin (fingerprint = SHA-256 of DER)
//! server.pem  server.key  TLS; the certificate is re-issued at every start
//!                         so its SANs follow the host's names and addresses
//! signing.key             ES256 key of daemon tokens (kid = RFC 7638)
//! identity.json           the daemon id, and that a store was created
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

/// Written once, when the data dir is initialised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub daemon_id: String,
    pub created_at: i64,
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
    pub encoding: jsonwebtoken::EncodingKey,
    pub decoding: jsonwebtoken::DecodingKey,
    /// Public JWK (for the JWKS document).
    pub jwk: serde_json::Value,
}

impl Pki {
    /// Load the data dir, creating what is missing on first start.
    /// `extra_names`/`extra_addrs` are added to the server certificate.
    pub fn load_or_create(
        dir: &Path,
        now: i64,
        extra_names: &[String],
        extra_addrs: &[IpAddr],
    ) -> Result<Pki> {
        ensure_private_dir(dir)?;
        let identity_path = dir.join(IDENTITY);
        let created = !identity_path.exists();
        if created && dir.join(CA_KEY).exists() {
            return Err(anyhow!(
                "{} has a CA key but no {IDENTITY}; refusing to guess. Restore the data dir or move it away",
                dir.display()
            ));
        }

        let ca_key = load_or_create_key(&dir.join(CA_KEY))?;
        let identity = if created {
            let id = Identity {
                daemon_id: format!("idprovd-{}", hex::encode(rand::random::<[u8; 6]>())),
                created_at: now,
            };
            write_atomic(
                &identity_path,
                serde_json::to_vec_pretty(&id)?.as_slice(),
                0o644,
            )?;
            id
        } else {
            let bytes = fs::read(&identity_path)
                .with_context(|| format!("reading {}", identity_path.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid", identity_path.display()))?
        };

        let ca_path = dir.join(CA_CERT);
        let ca_params = ca_params(&identity.daemon_id);
        let ca_cert_pem = if ca_path.exists() {
            fs::read_to_string(&ca_path)
                .with_context(|| format!("reading {}", ca_path.display()))?
        } else {
            let cert = ca_params.self_signed(&ca_key).context("creating the CA")?;
            write_atomic(&ca_path, cert.pem().as_bytes(), 0o644)?;
            cert.pem()
        };
        let ca_cert_der = pem_cert(&ca_cert_pem)
            .with_context(|| format!("{} holds no certificate", ca_path.display()))?;
        let ca_fingerprint = sha256_hex(&ca_cert_der);

        let server_key = load_or_create_key(&dir.join(SERVER_KEY))?;
        let issuer = Issuer::from_ca_cert_der(&ca_cert_der, &ca_key)
            .context("the CA certificate does not match ca.key")?;
        let server_cert = server_params(&identity.daemon_id, extra_names, extra_addrs)?
            .signed_by(&server_key, &issuer)
            .context("issuing the server certificate")?;
        write_atomic(&dir.join(SERVER_CERT), server_cert.pem().as_bytes(), 0o644)?;
        let server_chain = vec![server_cert.der().clone(), ca_cert_der.clone()];
        let server_key_der =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));

        let signing = SigningKey::from_keypair(&load_or_create_key(&dir.join(SIGNING_KEY))?)?;

        Ok(Pki {
            identity,
            ca_cert_pem,
            ca_cert_der,
            ca_fingerprint,
            ca_key,
            server_chain,
            server_key: server_key_der,
            signing,
            created,
        })
    }

    /// An issuer for certificates signed by the daemon CA (admin and, later,
    /// device client certificates).
    pub fn ca_issuer(&self) -> Result<Issuer<'_, &KeyPair>> {
        Issuer::from_ca_cert_der(&self.ca_cert_der, &self.ca_key)
            .context("the CA certificate does not match ca.key")
    }
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
        Ok(SigningKey {
            kid,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(kp.serialized_der()),
            decoding: jsonwebtoken::DecodingKey::from_ec_der(raw),
            jwk,
        })
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

fn load_or_create_key(path: &Path) -> Result<KeyPair> {
    if path.exists() {
        check_private_mode(path)?;
        let pem =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return KeyPair::from_pem(&pem).with_context(|| format!("{} is not a key", path.display()));
    }
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

//! What the store keeps — OOB entries, devices, pending requests, tokens,
//! certificates, retired keys, registry CAs, the CRL's state — and how each
//! is shown on the admin API. Backends store these records; only their
//! encoding is theirs.

use idprov_proto::admin::{
    DeviceKeyView, DeviceStatus, DeviceView, OobEntryView, OobHold, PendingView, SetupCodeState,
};
use idprov_proto::keys::verification_code;
use idprov_proto::x509::{CertificateView, RegistryCaView};
use idprov_proto::{DeviceId, KeyFormat, MacAddr, Secret};
use serde::{Deserialize, Serialize};

use crate::flags::Flag;

/// One OOB list entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OobRecord {
    pub device_id: DeviceId,
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub key_format: Option<KeyFormat>,
    /// RFC 7638 thumbprint of `public_key`.
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Hex SHA-256 of `salt || secret`; the secret itself is never stored.
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub secret_salt: Option<String>,
    #[serde(default)]
    pub secret_consumed_at: Option<i64>,
    /// The setup code's verifier and its use (issue 17).
    #[serde(default)]
    pub setup: Option<SetupRecord>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub note: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The plaintext of a secret being uploaded, held only in memory so an
    /// upload can compare it with a stored (salted) one. Never stored.
    #[serde(skip)]
    pub secret_plain_for_compare: Option<Secret>,
}

impl OobRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    pub fn view(&self) -> OobEntryView {
        OobEntryView {
            device_id: self.device_id.clone(),
            public_key: self.public_key.clone(),
            key_format: self.key_format,
            key_fingerprint: self.kid.clone(),
            mac: self.mac,
            has_secret: self.secret_hash.is_some(),
            secret_consumed: self.secret_consumed_at.is_some(),
            setup_code: self.setup.as_ref().map(|s| SetupCodeState {
                consumed: s.consumed_at.is_some(),
                failures: s.failures,
                locked: s.locked_at.is_some(),
            }),
            expires_at: self.expires_at,
            note: self.note.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// An OOB entry's setup code: its SPAKE2+ verifier (never the code) and
/// what became of it. Kept whole inside the entry, so a backend stores it
/// with the entry (`Change::PutOob`) and needs nothing new.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupRecord {
    /// `idprov_pake::StoredVerifier` text: KDF cost, salt, w0 and L.
    pub verifier: String,
    #[serde(default)]
    pub consumed_at: Option<i64>,
    /// Exchanges started (confirmV sent) that did not end in an admission:
    /// each is one guess of the code, wherever it failed.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub locked_at: Option<i64>,
}

impl std::fmt::Debug for SetupRecord {
    // w0 lets its holder answer as the daemon: not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupRecord")
            .field("consumed_at", &self.consumed_at)
            .field("failures", &self.failures)
            .field("locked_at", &self.locked_at)
            .finish_non_exhaustive()
    }
}

/// Whether `new` keeps the setup code of `old`: the same verifier, or none
/// while key and MAC stay (an export leaves verifiers out, like secrets).
/// A kept code keeps its use (consumed, failures, lock): every backend's
/// upsert and import apply this rule.
pub fn same_setup(old: &OobRecord, new: &OobRecord) -> bool {
    match (&old.setup, &new.setup) {
        (None, None) => true,
        (Some(_), None) => old.kid == new.kid && old.mac == new.mac,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a.verifier == b.verifier,
    }
}

/// What an import commit does with a staged entry whose id is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportMerge {
    /// Nothing differs: leave the stored entry.
    Unchanged,
    /// Other credentials without `replace`: the whole import is refused.
    Refused(String),
    /// Store `new` (it now carries what it keeps of the stored entry).
    Changed,
}

/// The one rule every backend's import commit applies to a staged entry
/// `new` meeting the stored `old`, counted in `result`. `same_secret(h)`
/// says whether the staged secret is the stored one (hash `h`); it is
/// asked only when both have one (backends keep staged secrets apart).
pub fn merge_import<E>(
    old: &OobRecord,
    new: &mut OobRecord,
    same_secret: impl FnOnce(&str) -> Result<bool, E>,
    replace: bool,
    now: i64,
    result: &mut idprov_proto::oob_import::OobImportResult,
) -> Result<ImportMerge, E> {
    let key_mac_same = old.kid == new.kid && old.mac == new.mac;
    // An entry that leaves the secret out keeps the stored one as long as
    // its key and MAC stay: the daemon never gives a secret back, so an
    // exported list could not say it again.
    let secret_same = match (&old.secret_hash, &new.secret_hash) {
        (None, None) => true,
        (Some(_), None) => key_mac_same,
        (None, Some(_)) => false,
        (Some(h), Some(_)) => same_secret(h)?,
    };
    let setup_same = same_setup(old, new);
    let creds_same = key_mac_same && secret_same && setup_same;
    if creds_same && old.expires_at == new.expires_at && old.note == new.note {
        result.unchanged += 1;
        return Ok(ImportMerge::Unchanged);
    }
    if !creds_same && !replace {
        return Ok(ImportMerge::Refused(
            "an entry with other credentials (key, MAC or secret) exists; import with --replace to change it"
                .into(),
        ));
    }
    if secret_same {
        new.secret_hash = old.secret_hash.clone();
        new.secret_salt = old.secret_salt.clone();
        new.secret_consumed_at = old.secret_consumed_at;
    }
    if setup_same {
        new.setup = old.setup.clone();
    }
    new.created_at = old.created_at;
    new.updated_at = now;
    result.changed += 1;
    if result.changed_ids.len() < idprov_proto::oob_import::MAX_LISTED_IDS {
        result.changed_ids.push(new.device_id.clone());
    }
    Ok(ImportMerge::Changed)
}

/// Hash a one-time secret with its salt.
pub fn secret_hash(salt: &str, secret: &str) -> String {
    let mut v = Vec::with_capacity(salt.len() + secret.len() + 1);
    v.extend_from_slice(salt.as_bytes());
    v.push(0);
    v.extend_from_slice(secret.as_bytes());
    idprov_proto::keys::sha256_hex(&v)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub kid: String,
    pub format: KeyFormat,
    pub pem: String,
    pub added_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl KeyRecord {
    pub fn is_usable(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// How `admitted_by` names an administrator: `admin:NAME`.
pub const ADMIN_PREFIX: &str = "admin:";

/// An admitted (or rejected) device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub status: DeviceStatus,
    /// A random number chosen when the record is created. Tokens carry it, so
    /// a device removed and admitted again never revives old tokens.
    pub epoch: u64,
    pub keys: Vec<KeyRecord>,
    #[serde(default)]
    pub mac: Option<MacAddr>,
    pub admitted_by: String,
    pub created_at: i64,
    #[serde(default)]
    pub last_issued_at: Option<i64>,
    #[serde(default)]
    pub tokens_issued: u64,
    #[serde(default)]
    pub flags: Vec<String>,
    pub revision: u64,
    #[serde(default)]
    pub status_reason: Option<String>,
}

impl DeviceRecord {
    pub fn key(&self, kid: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn add_flag(&mut self, flag: Flag) {
        if !self.flags.iter().any(|f| f == flag.as_str()) {
            self.flags.push(flag.as_str().to_string());
        }
    }

    /// Was the device admitted by an administrator's approval (`admin:NAME`)
    /// rather than by a rule?
    pub fn approved_by_admin(&self) -> bool {
        self.admitted_by.starts_with(ADMIN_PREFIX)
    }

    pub fn view(&self) -> DeviceView {
        DeviceView {
            device_id: self.device_id.clone(),
            status: self.status,
            keys: self
                .keys
                .iter()
                .map(|k| DeviceKeyView {
                    kid: k.kid.clone(),
                    key_format: k.format,
                    public_key: k.pem.clone(),
                    added_at: k.added_at,
                    expires_at: k.expires_at,
                })
                .collect(),
            mac: self.mac,
            admitted_by: self.admitted_by.clone(),
            created_at: self.created_at,
            last_issued_at: self.last_issued_at,
            tokens_issued: self.tokens_issued,
            flags: self.flags.clone(),
            revision: self.revision,
        }
    }
}

/// An unknown device waiting for an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingRecord {
    pub device_id: DeviceId,
    pub key_format: KeyFormat,
    pub kid: String,
    pub public_key: String,
    #[serde(default)]
    pub mac: Option<MacAddr>,
    pub source: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub attempts: u64,
    #[serde(default)]
    pub flags: Vec<String>,
    /// How a listed device matched its OOB entry and the flags that held it
    /// (as of its latest request); `None` for a device the list does not name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oob_hold: Option<Box<OobHold>>,
    pub revision: u64,
}

impl PendingRecord {
    pub fn add_flag(&mut self, flag: Flag) {
        if !self.flags.iter().any(|f| f == flag.as_str()) {
            self.flags.push(flag.as_str().to_string());
        }
    }

    pub fn view(&self) -> PendingView {
        PendingView {
            device_id: self.device_id.clone(),
            key_format: self.key_format,
            key_fingerprint: self.kid.clone(),
            public_key: self.public_key.clone(),
            verification_code: verification_code(&self.kid),
            mac: self.mac,
            source: self.source.clone(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            attempts: self.attempts,
            flags: self.flags.clone(),
            oob_hold: self.oob_hold.clone(),
            revision: self.revision,
        }
    }
}

/// Every issued token (invariant I2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub jti: String,
    pub device_id: DeviceId,
    pub device_epoch: u64,
    /// Thumbprint of the device key the token is bound to.
    pub kid: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Every issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertRecord {
    pub serial: String,
    pub device_id: DeviceId,
    pub device_epoch: u64,
    pub kid: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub not_after: i64,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    #[serde(default)]
    pub revocation_reason: Option<String>,
    pub pem: String,
}

impl CertRecord {
    pub fn view(&self) -> CertificateView {
        CertificateView {
            serial: self.serial.clone(),
            device_id: self.device_id.clone(),
            kid: self.kid.clone(),
            issued_at: self.issued_at,
            not_before: self.not_before,
            not_after: self.not_after,
            revoked_at: self.revoked_at,
            revocation_reason: self.revocation_reason.clone(),
            pem: self.pem.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetiredKey {
    pub device_id: DeviceId,
    pub at: i64,
    /// `removed`, `revoked`, `expired`, `reprovisioned`, `device_revoked`.
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryCaRecord {
    pub fingerprint: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub added_at: i64,
    pub added_by: String,
    pub pem: String,
}

impl RegistryCaRecord {
    pub fn view(&self) -> RegistryCaView {
        RegistryCaView {
            fingerprint: self.fingerprint.clone(),
            subject: self.subject.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            added_at: self.added_at,
            added_by: self.added_by.clone(),
            pem: self.pem.clone(),
        }
    }
}

/// What the stored CRL is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrlState {
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
    /// The revocation generation it was built from.
    pub version: u64,
    pub revoked: u64,
}

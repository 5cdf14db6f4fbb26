//! One row of an OOB file, as read (all strings), and its conversion into the
//! wire type [`OobEntryInput`]. Everything here looks at one row only; checks
//! across rows (duplicates) live in [`crate::validate`].

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use idprov_proto::admin::OobEntryInput;
use idprov_proto::keys::MAX_PEM_LEN;
use idprov_proto::time::MAX_UNIX;
use idprov_proto::{DeviceId, KeyFormat, MacAddr, PublicKey, Secret};
use serde::{Deserialize, Serialize};

/// The columns of the CSV format, in the order `export` writes them.
/// `docs/oob-format.md` describes each one.
pub const COLUMNS: [&str; 8] = [
    "device_id",
    "public_key",
    "key_format",
    "mac",
    "secret",
    "expires",
    "note",
    "setup_verifier",
];

/// Longest note the daemon accepts (bytes of UTF-8).
pub const MAX_NOTE_BYTES: usize = 256;
/// Bounds of a one-time secret (bytes).
pub const MIN_SECRET_LEN: usize = 8;
pub const MAX_SECRET_LEN: usize = 256;

/// A row as read from any of the three formats. Empty CSV cells and absent
/// JSON fields are both `None`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expires>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A setup code's verifier (`spake2+p256$argon2id$…`), never the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_verifier: Option<String>,
}

/// `expires` is a string in CSV; JSON may also give unix seconds as a number.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Expires {
    Unix(i64),
    Text(String),
}

/// By hand rather than `untagged`, so that a wrong type is reported as what
/// `expires` takes instead of "did not match any variant".
impl<'de> Deserialize<'de> for Expires {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Expires;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 time as a string, or unix seconds as an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Expires, E> {
                Ok(Expires::Unix(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Expires, E> {
                i64::try_from(n)
                    .map(Expires::Unix)
                    .map_err(|_| E::custom(format!("unix time {n} is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Expires, E> {
                Ok(Expires::Text(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// How much of a row to check. `Full` parses the public key (the expensive
/// part); `Light` only loads it, for the second pass over a file that the
/// first pass already checked in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Full,
    Light,
}

/// A row turned into what goes on the wire, plus what the cross-row checks
/// need.
#[derive(Debug)]
pub struct Checked {
    pub entry: OobEntryInput,
    /// RFC 7638 thumbprint; only with [`Check::Full`].
    pub thumbprint: Option<String>,
}

/// Convert and check one row. `base` is the directory of the file the row
/// came from (a `public_key` that is not inline PEM is a path relative to it).
/// All problems of the row are returned, not just the first.
pub fn check_record(raw: &RawRecord, base: &Path, check: Check) -> Result<Checked, Vec<String>> {
    let mut errors = Vec::new();

    let id_text = raw.device_id.trim();
    let device_id = if id_text.is_empty() {
        errors.push("device_id is empty".to_string());
        None
    } else {
        match id_text.parse::<DeviceId>() {
            Ok(id) => Some(id),
            Err(e) => {
                errors.push(format!("device_id {}: {e}", quoted(&raw.device_id)));
                None
            }
        }
    };

    let key_format = match nonempty(&raw.key_format) {
        None => None,
        Some(s) => match s.parse::<KeyFormat>() {
            Ok(f) => Some(f),
            Err(e) => {
                errors.push(format!("key_format {}: {e}", quoted(s)));
                None
            }
        },
    };

    let mut thumbprint = None;
    let public_key = match nonempty(&raw.public_key) {
        None => None,
        Some(cell) => match load_pem(cell, base) {
            Err(e) => {
                errors.push(e);
                None
            }
            Ok(pem) => {
                if check == Check::Full {
                    match PublicKey::from_pem(&pem, key_format) {
                        Ok(key) => thumbprint = Some(key.thumbprint().to_string()),
                        Err(e) => errors.push(format!("public_key: {e}")),
                    }
                }
                Some(pem)
            }
        },
    };
    if key_format.is_some() && public_key.is_none() {
        errors.push("key_format is given but public_key is empty".to_string());
    }

    let mac = match nonempty(&raw.mac) {
        None => None,
        Some(s) => match s.parse::<MacAddr>() {
            Ok(m) if m.is_zero() => {
                errors.push(format!(
                    "mac {s}: the all-zero address is not a device address"
                ));
                None
            }
            Ok(m) if m.is_multicast() => {
                errors.push(format!(
                    "mac {s}: a multicast address is not a device address"
                ));
                None
            }
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(format!("mac {}: {e}", quoted(s)));
                None
            }
        },
    };

    let secret = match raw.secret.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            if s.len() < MIN_SECRET_LEN || s.len() > MAX_SECRET_LEN {
                errors.push(format!(
                    "secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes long"
                ));
            } else if s.chars().any(char::is_control) {
                errors.push("secret must not contain control characters".to_string());
            }
            Some(Secret::new(s))
        }
    };

    let expires_at = match &raw.expires {
        None => None,
        Some(e) => match parse_expires(e) {
            Ok(v) => v,
            Err(msg) => {
                errors.push(msg);
                None
            }
        },
    };

    let note = match raw.note.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(n) => {
            if n.len() > MAX_NOTE_BYTES {
                errors.push(format!("note is longer than {MAX_NOTE_BYTES} bytes"));
            } else if n.chars().any(char::is_control) {
                errors.push("note must not contain control characters (line breaks, tabs)".into());
            }
            Some(n.to_string())
        }
    };

    let setup_verifier = match raw.setup_verifier.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => {
            if let Err(e) = idprov_pake::StoredVerifier::parse(v) {
                errors.push(e.to_string());
            }
            Some(v.to_string())
        }
    };

    if public_key.is_none()
        && mac.is_none()
        && secret.is_none()
        && setup_verifier.is_none()
        && errors.is_empty()
    {
        errors.push("give at least one of public_key, mac, secret, setup_verifier".to_string());
    }

    match device_id {
        Some(device_id) if errors.is_empty() => Ok(Checked {
            entry: OobEntryInput {
                device_id,
                public_key,
                key_format,
                mac,
                secret,
                setup_verifier,
                expires_at,
                note,
            },
            thumbprint,
        }),
        _ => Err(errors),
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Show a bad value in an error message: quoted, escaped, and cut short, so a
/// hostile file cannot paint the terminal.
pub fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(60).collect();
    let more = if s.chars().count() > 60 { "…" } else { "" };
    format!("{:?}{more}", cut)
}

/// Inline PEM, or the path of a PEM file (relative to the importing file).
fn load_pem(cell: &str, base: &Path) -> Result<String, String> {
    if cell.contains("-----BEGIN") {
        return Ok(cell.to_string());
    }
    if cell.contains('\n') || cell.len() > 4096 {
        return Err("public_key is neither PEM text nor the path of a PEM file".to_string());
    }
    let path = base.join(cell);
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("public_key file {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("public_key file {} is not a file", path.display()));
    }
    if meta.len() > MAX_PEM_LEN as u64 {
        return Err(format!(
            "public_key file {} is longer than {MAX_PEM_LEN} bytes",
            path.display()
        ));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| format!("public_key file {}: {e}", path.display()))?;
    String::from_utf8(bytes)
        .map_err(|_| format!("public_key file {} is not text (PEM)", path.display()))
}

/// `expires`: unix seconds, an RFC 3339 time (`2027-03-01T12:00:00Z`), or a
/// date (`2027-03-01`, midnight UTC). Empty means never.
pub fn parse_expires(e: &Expires) -> Result<Option<i64>, String> {
    let t = parse_expires_unbounded(e)?;
    match t {
        Some(t) if t > MAX_UNIX => Err(format!(
            "expires {} is after 9999-12-31T23:59:59Z (leave it empty for no expiry)",
            match e {
                Expires::Unix(n) => n.to_string(),
                Expires::Text(s) => quoted(s.trim()),
            }
        )),
        t => Ok(t),
    }
}

fn parse_expires_unbounded(e: &Expires) -> Result<Option<i64>, String> {
    match e {
        Expires::Unix(n) if *n > 0 => Ok(Some(*n)),
        Expires::Unix(n) => Err(format!("expires {n} is not a positive unix time")),
        Expires::Text(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            if s.bytes().all(|b| b.is_ascii_digit()) {
                return s
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| format!("expires {}: not a valid unix time", quoted(s)));
            }
            let full;
            let text = if s.len() == 10 {
                full = format!("{s}T00:00:00Z");
                full.as_str()
            } else {
                s
            };
            let t = humantime::parse_rfc3339_weak(text).map_err(|_| {
                format!(
                    "expires {}: use an RFC 3339 time (2027-03-01T12:00:00Z), a date (2027-03-01) or unix seconds",
                    quoted(s)
                )
            })?;
            let secs = t
                .duration_since(UNIX_EPOCH)
                .map_err(|_| format!("expires {} is before 1970", quoted(s)))?
                .as_secs();
            i64::try_from(secs)
                .map(Some)
                .map_err(|_| format!("expires {} is out of range", quoted(s)))
        }
    }
}

/// RFC 3339 (UTC, seconds) for export.
pub fn format_expires(unix: i64) -> String {
    idprov_proto::time::rfc3339(unix)
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_forms() {
        let t = |s: &str| parse_expires(&Expires::Text(s.into()));
        assert_eq!(t(""), Ok(None));
        assert_eq!(t("1800000000"), Ok(Some(1_800_000_000)));
        assert_eq!(t("2027-01-01"), Ok(Some(1_798_761_600)));
        assert_eq!(t("2027-01-01T00:00:00Z"), Ok(Some(1_798_761_600)));
        assert!(t("next week").is_err());
        assert_eq!(format_expires(1_798_761_600), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn needs_one_credential() {
        let raw = RawRecord {
            device_id: "dev-1".into(),
            ..Default::default()
        };
        let err = check_record(&raw, Path::new("."), Check::Full).err();
        assert_eq!(
            err,
            Some(vec![
                "give at least one of public_key, mac, secret, setup_verifier".into()
            ])
        );
    }
}

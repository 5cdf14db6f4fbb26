//! The OOB list's entry rules (F5): what an uploaded entry may hold, checked
//! in full before anything touches the store. Pure: no I/O.

use std::collections::{HashMap, HashSet};

use idprov_proto::PublicKey;
use idprov_proto::admin::OobEntryInput;
use idprov_proto::error::EntryError;

use crate::error::Error;
use crate::store::{OobRecord, SetupRecord, secret_hash};

const MAX_NOTE: usize = 256;
const MAX_SECRET: usize = 256;
const MIN_SECRET: usize = 8;

/// Parse and check every entry before anything touches the store; report
/// all problems at once.
pub fn validate_oob(entries: &[OobEntryInput], now: i64) -> Result<Vec<OobRecord>, Error> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(entries.len());
    let mut seen_ids = HashSet::new();
    let mut seen_macs: HashMap<String, String> = HashMap::new();
    for (index, e) in entries.iter().enumerate() {
        let id = e.device_id.to_string();
        let mut err = |m: String| {
            errors.push(EntryError {
                index,
                device_id: Some(id.clone()),
                message: m,
            })
        };
        if !seen_ids.insert(id.clone()) {
            err("duplicate device_id in this request".into());
            continue;
        }
        if e.public_key.is_none()
            && e.mac.is_none()
            && e.secret.is_none()
            && e.setup_verifier.is_none()
        {
            err("give at least one of public_key, mac, secret, setup_verifier".into());
            continue;
        }
        if let Some(v) = &e.setup_verifier
            && let Err(ve) = idprov_pake::StoredVerifier::parse(v)
        {
            err(ve.to_string());
            continue;
        }
        let key = match &e.public_key {
            Some(pem) => match PublicKey::from_pem(pem, e.key_format) {
                Ok(k) => Some(k),
                Err(ke) => {
                    err(format!("public_key: {ke}"));
                    continue;
                }
            },
            None if e.key_format.is_some() => {
                err("key_format given without public_key".into());
                continue;
            }
            None => None,
        };
        if let Some(mac) = e.mac {
            if mac.is_multicast() || mac.is_zero() {
                err(format!("MAC {mac} is a multicast or all-zero address"));
                continue;
            }
            if let Some(other) = seen_macs.insert(mac.to_string(), id.clone()) {
                err(format!("MAC {mac} is also given for device {other}"));
                continue;
            }
        }
        if let Some(s) = &e.secret
            && (s.expose().len() < MIN_SECRET
                || s.expose().len() > MAX_SECRET
                || s.expose().chars().any(char::is_control))
        {
            err(format!(
                "secret must be {MIN_SECRET}-{MAX_SECRET} bytes without control characters"
            ));
            continue;
        }
        if let Some(n) = &e.note
            && (n.len() > MAX_NOTE || n.chars().any(char::is_control))
        {
            err(format!(
                "note must be at most {MAX_NOTE} bytes without control characters"
            ));
            continue;
        }
        if let Some(exp) = e.expires_at
            && exp <= now
        {
            err("expires_at is in the past".into());
            continue;
        }
        if e.expires_at
            .is_some_and(|exp| exp > idprov_proto::time::MAX_UNIX)
        {
            err("expires_at is after 9999-12-31T23:59:59Z (leave it out for no expiry)".into());
            continue;
        }
        let salt = e
            .secret
            .as_ref()
            .map(|_| hex::encode(rand::random::<[u8; 16]>()));
        out.push(OobRecord {
            device_id: e.device_id.clone(),
            public_key: key.as_ref().map(|k| k.pem().to_string()),
            key_format: key.as_ref().map(|k| k.format()),
            kid: key.as_ref().map(|k| k.thumbprint().to_string()),
            mac: e.mac,
            secret_hash: match (&salt, &e.secret) {
                (Some(salt), Some(s)) => Some(secret_hash(salt, s.expose())),
                _ => None,
            },
            secret_salt: salt,
            secret_consumed_at: None,
            secret_plain_for_compare: e.secret.clone(),
            setup: e.setup_verifier.as_ref().map(|v| SetupRecord {
                verifier: v.clone(),
                consumed_at: None,
                failures: 0,
                locked_at: None,
            }),
            expires_at: e.expires_at,
            note: e.note.clone(),
            created_at: now,
            updated_at: now,
        });
    }
    if !errors.is_empty() {
        return Err(Error::invalid(
            format!(
                "{} of {} entries are invalid; nothing was stored",
                errors.len(),
                entries.len()
            ),
            errors,
        ));
    }
    Ok(out)
}

//! Deterministic, realistic-looking records for the benchmark and the
//! snapshot tests (no daemon needed). Fingerprints and verification codes
//! are derived the way the daemon derives them, from a pseudo-random
//! thumbprint.

use idprov_proto::admin::{AuditEntry, DeviceKeyView, DeviceStatus, DeviceView, PendingView};
use idprov_proto::keys::verification_code;
use idprov_proto::{DeviceId, KeyFormat, MacAddr};

/// A small xorshift generator: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn b64(&mut self, n: usize) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..n)
            .map(|_| char::from(A[(self.next() % 64) as usize]))
            .collect()
    }
}

fn id(s: String) -> DeviceId {
    // Only called with the fixed formats below, which are valid ids: a
    // failure here is a bug in this file, not bad input.
    match s.parse() {
        Ok(id) => id,
        Err(e) => panic!("synthetic device id {s:?}: {e}"),
    }
}

/// `n` pending requests `sensor-000000`…, seen around `now`, every 50th with
/// a flag, every 3rd an RSA key.
pub fn pending(n: usize, now: i64) -> Vec<PendingView> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let fp = rng.b64(43);
            let key_format = if i % 3 == 0 {
                KeyFormat::RSA_PEM
            } else {
                KeyFormat::ES256_PEM
            };
            let b = (i as u32).to_be_bytes();
            let first_seen = now - (rng.next() % 86_400) as i64;
            PendingView {
                device_id: id(format!("sensor-{i:06}")),
                key_format,
                verification_code: verification_code(&fp),
                public_key: format!(
                    "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                    rng.b64(if key_format == KeyFormat::RSA_PEM {
                        392
                    } else {
                        124
                    })
                ),
                key_fingerprint: fp,
                mac: Some(MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])),
                source: format!("192.0.2.{}:{}", i % 250 + 1, 40_000 + i % 20_000),
                first_seen,
                last_seen: now - (rng.next() % 600) as i64,
                attempts: 1 + rng.next() % 20,
                flags: if i % 50 == 7 {
                    vec!["repeated_request".into()]
                } else {
                    Vec::new()
                },
                oob_hold: None,
                revision: 1 + rng.next() % 5,
            }
        })
        .collect()
}

/// `n` active devices `meter-0000`… with one or two keys.
pub fn devices(n: usize, now: i64) -> Vec<DeviceView> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|i| {
            let keys = (0..1 + i % 2)
                .map(|k| DeviceKeyView {
                    kid: rng.b64(12),
                    key_format: KeyFormat::ES256_PEM,
                    public_key: String::new(),
                    added_at: now - 86_400 * (10 + k as i64),
                    expires_at: Some(now + 86_400 * (20 + k as i64)),
                })
                .collect();
            DeviceView {
                device_id: id(format!("meter-{i:04}")),
                status: if i % 7 == 6 {
                    DeviceStatus::Revoked
                } else {
                    DeviceStatus::Active
                },
                keys,
                mac: None,
                admitted_by: if i % 2 == 0 {
                    "oob_key".into()
                } else {
                    "admin:alice".into()
                },
                created_at: now - 86_400 * 10,
                last_issued_at: Some(now - 3600),
                tokens_issued: 3 + i as u64,
                flags: Vec::new(),
                revision: 1,
            }
        })
        .collect()
}

/// `n` audit entries ending at `now`.
pub fn audit(n: usize, now: i64) -> Vec<AuditEntry> {
    (0..n as u64)
        .map(|i| AuditEntry {
            seq: i + 1,
            at: now - (n as i64 - i as i64) * 60,
            actor: if i % 2 == 0 {
                "admin:alice".into()
            } else {
                "daemon".into()
            },
            action: if i % 2 == 0 {
                "approve".into()
            } else {
                "issue_token".into()
            },
            target: Some(format!("sensor-{i:06}")),
            source: Some("127.0.0.1".into()),
            detail: format!("revision {i}"),
            prev_hash: "0".repeat(64),
            hash: format!("{:064x}", i * 2_654_435_761),
        })
        .collect()
}

//! Proofs of possession, timed by the server's clock.
//!
//! A device may have no real-time clock, or a wrong one. Every answer of the
//! daemon carries its time (`/info.time`, and a `Date` header on every
//! response), so the client keeps the offset between the server's clock and
//! the local one and stamps proofs with server time.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idprov_proto::device::{PROOF_TYP, ProofClaims, ProofEndpoint, proof_audience};
use idprov_proto::{DeviceId, KeyAlg};

use crate::error::Error;
use crate::signer::{Signer, compact_jws};

/// How long a proof is valid. The daemon caps it (`proof_max_lifetime_secs`);
/// a short life limits what a captured proof is worth.
pub const DEFAULT_PROOF_LIFETIME_SECS: u64 = 60;

/// The offset between the server's clock and ours, in milliseconds.
///
/// The explicit time of `/info` is authoritative; a `Date` header is used
/// only until one was seen (the header may come from the HTTP stack rather
/// than from the clock the daemon checks proofs with).
#[derive(Debug, Default)]
pub struct ServerClock {
    offset_ms: Mutex<Option<i64>>,
    explicit: std::sync::atomic::AtomicBool,
}

fn local_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock before 1970: count backwards, the offset still corrects it.
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl ServerClock {
    pub fn new(offset_ms: Option<i64>) -> Self {
        ServerClock {
            offset_ms: Mutex::new(offset_ms),
            explicit: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Record the server's time, in unix seconds (whole seconds: the middle
    /// of the second is the best estimate).
    pub fn observe_unix_secs(&self, server_secs: i64) {
        self.explicit
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.set_from_secs(server_secs);
    }

    fn set_from_secs(&self, server_secs: i64) {
        let server_ms = server_secs.saturating_mul(1000).saturating_add(500);
        self.set(server_ms.saturating_sub(local_ms()));
    }

    /// Record the time of a `Date` header, if it parses.
    pub fn observe_http_date(&self, value: &str) {
        if self.explicit.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Ok(t) = httpdate::parse_http_date(value)
            && let Ok(d) = t.duration_since(UNIX_EPOCH)
            && let Ok(secs) = i64::try_from(d.as_secs())
        {
            self.set_from_secs(secs);
        }
    }

    fn set(&self, offset: i64) {
        if let Ok(mut g) = self.offset_ms.lock() {
            *g = Some(offset);
        }
    }

    /// The last known offset (server minus local), if any answer was seen.
    pub fn offset_ms(&self) -> Option<i64> {
        self.offset_ms.lock().ok().and_then(|g| *g)
    }

    /// Our best estimate of the server's time, unix seconds.
    pub fn now(&self) -> i64 {
        local_ms().saturating_add(self.offset_ms().unwrap_or(0)) / 1000
    }

    /// How long until the server's clock reads `server_secs` (zero if past).
    pub fn until(&self, server_secs: i64) -> Duration {
        let target = server_secs.saturating_mul(1000);
        let now = local_ms().saturating_add(self.offset_ms().unwrap_or(0));
        Duration::from_millis(u64::try_from(target.saturating_sub(now)).unwrap_or(0))
    }
}

/// 32 random hex characters (128 bits): unique per proof.
pub fn random_jti() -> Result<String, Error> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|e| Error::signer_from("no randomness", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A proof for `endpoint` of the daemon `daemon_id`, valid from the server's
/// now for `lifetime_secs`.
pub fn make_proof(
    signer: &dyn Signer,
    device_id: &DeviceId,
    daemon_id: &str,
    endpoint: ProofEndpoint,
    server_now: i64,
    lifetime_secs: u64,
    cbt: Option<&str>,
) -> Result<String, Error> {
    let alg = match signer.alg() {
        KeyAlg::ES256 => "ES256",
        KeyAlg::RS256 => "RS256",
    };
    let header = serde_json::json!({
        "alg": alg,
        "typ": PROOF_TYP,
        "kid": signer.public_key().thumbprint(),
    });
    let claims = ProofClaims {
        sub: device_id.to_string(),
        aud: proof_audience(daemon_id, endpoint),
        iat: server_now,
        exp: server_now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX)),
        jti: random_jti()?,
        nbf: None,
        iss: None,
        cbt: cbt.map(str::to_string),
    };
    compact_jws(signer, &header, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::KeySigner;
    use base64::Engine;

    fn part(jws: &str, i: usize) -> Vec<u8> {
        let p = jws.split('.').nth(i).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap_or_default()
    }

    #[test]
    fn proof_has_the_contract_shape_and_verifies() -> Result<(), Error> {
        let (signer, _) = KeySigner::generate_p256()?;
        let id: DeviceId = "dev-1".parse()?;
        let jws = make_proof(
            &signer,
            &id,
            "d1",
            ProofEndpoint::Renew,
            1_000,
            60,
            Some("cb"),
        )?;
        assert_eq!(jws.split('.').count(), 3);

        let header: serde_json::Value = serde_json::from_slice(&part(&jws, 0))
            .map_err(|e| Error::config_from("test setup", e))?;
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], PROOF_TYP);
        assert_eq!(header["kid"], signer.public_key().thumbprint());

        let claims: ProofClaims = serde_json::from_slice(&part(&jws, 1))
            .map_err(|e| Error::config_from("test setup", e))?;
        assert_eq!(claims.sub, "dev-1");
        assert_eq!(claims.aud, "idprov:d1:renew");
        assert_eq!((claims.iat, claims.exp), (1_000, 1_060));
        assert!((16..=128).contains(&claims.jti.len()));

        // The signature verifies with the public key the daemon will store.
        let input = jws.rsplit_once('.').map(|x| x.0).unwrap_or_default();
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            signer.public_key().verify_bytes(),
        );
        assert!(key.verify(input.as_bytes(), &part(&jws, 2)).is_ok());
        Ok(())
    }

    #[test]
    fn jti_is_unique() -> Result<(), Error> {
        assert_ne!(random_jti()?, random_jti()?);
        Ok(())
    }

    #[test]
    fn clock_follows_the_server() {
        let clock = ServerClock::default();
        let local_now = local_ms() / 1000;
        // Before any explicit time, a Date header sets the clock.
        clock.observe_http_date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert!((clock.now() - 784_111_777).abs() <= 1);
        // A device whose clock is a day behind the server.
        clock.observe_unix_secs(local_now + 86_400);
        assert!((clock.now() - (local_now + 86_400)).abs() <= 1);
        assert!(clock.until(local_now + 86_400 + 10) <= Duration::from_secs(11));
        assert_eq!(clock.until(local_now), Duration::ZERO);
        // After it, Date headers no longer move the clock.
        clock.observe_http_date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert!((clock.now() - (local_now + 86_400)).abs() <= 1);
    }
}

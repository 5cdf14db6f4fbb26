//! The verifier as the OOB list and the daemon's store carry it: one line
//! of text, `spake2+p256$argon2id$m=M,t=T,p=P$SALT$W0$L` (base64url without
//! padding). It holds no code: the code cannot be read back from it, only
//! guessed and tested (docs/security.md says how costly that is).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::setup_code::{CodeError, KdfParams, SetupCode};
use crate::spake2plus::VerifierRecord;

const TAG: &str = "spake2+p256";
const KDF: &str = "argon2id";
/// Longest text accepted (a real one is about 190 bytes).
pub const MAX_LEN: usize = 512;

/// Why a verifier text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setup verifier: {0}")]
pub struct VerifierError(&'static str);

/// A parsed verifier: KDF cost and salt (sent to the device in step 0) and
/// (w0, L) (kept by the daemon). Does not print.
#[derive(Clone)]
pub struct StoredVerifier {
    pub params: KdfParams,
    pub salt: Vec<u8>,
    pub record: VerifierRecord,
}

impl std::fmt::Debug for StoredVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVerifier")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl StoredVerifier {
    /// The verifier of a fresh code for `device_id`, with a new salt.
    pub fn for_code(
        code: &SetupCode,
        device_id: &str,
        params: KdfParams,
    ) -> Result<Self, CodeError> {
        let salt = crate::setup_code::new_salt().to_vec();
        let record = code.verifier(device_id, &salt, &params)?;
        Ok(Self {
            params,
            salt,
            record,
        })
    }

    pub fn encode(&self) -> String {
        let p = &self.params;
        format!(
            "{TAG}${KDF}$m={},t={},p={}${}${}${}",
            p.memory_kib,
            p.iterations,
            p.parallelism,
            B64.encode(&self.salt),
            B64.encode(self.record.w0_bytes()),
            B64.encode(self.record.l_bytes()),
        )
    }

    pub fn parse(s: &str) -> Result<Self, VerifierError> {
        if s.len() > MAX_LEN {
            return Err(VerifierError("longer than 512 bytes"));
        }
        let parts: Vec<&str> = s.split('$').collect();
        let [tag, kdf, cost, salt, w0, l] = parts[..] else {
            return Err(VerifierError(
                "expected spake2+p256$argon2id$m=M,t=T,p=P$SALT$W0$L",
            ));
        };
        if tag != TAG {
            return Err(VerifierError("unknown scheme (spake2+p256 expected)"));
        }
        if kdf != KDF {
            return Err(VerifierError("unknown KDF (argon2id expected)"));
        }
        let mut params = [None::<u32>; 3];
        for kv in cost.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or(VerifierError("cost must be m=M,t=T,p=P"))?;
            let slot = match k {
                "m" => 0,
                "t" => 1,
                "p" => 2,
                _ => return Err(VerifierError("cost must be m=M,t=T,p=P")),
            };
            if params[slot].is_some() {
                return Err(VerifierError("cost parameter given twice"));
            }
            params[slot] = Some(
                v.parse()
                    .map_err(|_| VerifierError("cost is not a number"))?,
            );
        }
        let [Some(memory_kib), Some(iterations), Some(parallelism)] = params else {
            return Err(VerifierError("cost must name m, t and p"));
        };
        let params = KdfParams {
            memory_kib,
            iterations,
            parallelism,
        };
        params
            .check()
            .map_err(|_| VerifierError("KDF cost out of bounds"))?;
        let b = |x: &str, what: &'static str| B64.decode(x).map_err(|_| VerifierError(what));
        let salt = b(salt, "salt is not base64url")?;
        if !(8..=64).contains(&salt.len()) {
            return Err(VerifierError("salt must be 8 to 64 bytes"));
        }
        let record = VerifierRecord::from_bytes(
            &b(w0, "w0 is not base64url")?,
            &b(l, "L is not base64url")?,
        )
        .map_err(|_| VerifierError("w0 or L is not a valid P-256 value"))?;
        Ok(Self {
            params,
            salt,
            record,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let params = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let code = SetupCode::generate();
        let v = StoredVerifier::for_code(&code, "dev-1", params).expect("verifier");
        let text = v.encode();
        let back = StoredVerifier::parse(&text).expect("parses");
        assert_eq!(back.encode(), text);
        // The code is not in the text (12 digits in a row in base64url
        // by chance: about 2^-43).
        assert!(!text.contains(&code.reveal().replace('-', "")));
        for bad in [
            "",
            "spake2+p256$argon2id$m=64,t=1,p=1$AAAA$AAAA",
            &text.replace("argon2id", "pbkdf2"),
            &text.replace("m=64", "m=999999999"),
            &text.replace("m=64,t=1", "m=64,m=1"),
            &format!("{text}$x"),
            &"a".repeat(600),
        ] {
            assert!(StoredVerifier::parse(bad).is_err(), "{bad}");
        }
        let mut l_off = text.clone();
        l_off.truncate(text.len() - 2);
        l_off.push_str("AA");
        assert!(StoredVerifier::parse(&l_off).is_err());
    }
}

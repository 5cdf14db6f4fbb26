//! Setup codes: what a person types or a label carries, and how both sides
//! turn one into SPAKE2+'s (w0, w1) (RFC 9383 §3.2 leaves that to us).
//!
//! Format: 12 decimal digits shown as `1234-5678-9012`: 10 random digits
//! (log2(10^10) ≈ 33.2 bits) and two ISO 7064 MOD 97-10 check digits (the
//! IBAN check), so a typo — any one wrong digit, any two swapped neighbours
//! — is caught on the device before it costs an attempt at the daemon.
//!
//! Derivation: `w0s || w1s = Argon2id(len(pw) || pw || len(idProver) ||
//! idProver || len(idVerifier) || idVerifier, salt)` with 40-byte halves
//! reduced mod the group order (RFC 9383 §3.2), pw the 12 digits without
//! separators, idProver the device ID, idVerifier [`ID_VERIFIER`], and a
//! random 16-byte salt per entry. Argon2id rather than Matter's PBKDF2:
//! someone who steals the OOB list or a backup holds (w0, L) and can test
//! codes offline; memory-hard work per guess makes that slower on GPUs,
//! though with 33 bits it stays feasible for a determined attacker (see
//! docs/security.md).

use crate::spake2plus::{ProverSecrets, VerifierRecord, reduce_wide};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroize;

/// The verifier's identity in the transcript and the derivation.
pub const ID_VERIFIER: &[u8] = b"idprovd";
/// Digits of randomness in a code.
const RANDOM_DIGITS: usize = 10;
/// Digits a code has in all (random + check).
pub const CODE_DIGITS: usize = 12;
/// Salt length the daemon's entries carry.
pub const SALT_LEN: usize = 16;

/// Why a code or KDF parameter set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    #[error("a setup code has 12 digits (dashes and spaces allowed), got {0}")]
    Length(usize),
    #[error("a setup code has only digits, dashes and spaces")]
    NotDigit,
    #[error("the setup code's check digits do not match: a digit is mistyped")]
    Check,
    #[error("KDF parameters out of bounds: {0}")]
    Params(&'static str),
}

/// A setup code. Neither prints nor serializes; the digits are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SetupCode([u8; CODE_DIGITS]);

impl std::fmt::Debug for SetupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetupCode(..)")
    }
}

impl Drop for SetupCode {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// ISO 7064 MOD 97-10 over ASCII digits: the two check digits.
fn check_digits(digits: &[u8]) -> [u8; 2] {
    let r = digits
        .iter()
        .fold(0u32, |acc, d| (acc * 10 + u32::from(d - b'0')) % 97);
    let c = 98 - (r * 100) % 97;
    [b'0' + (c / 10) as u8, b'0' + (c % 10) as u8]
}

impl SetupCode {
    /// A fresh random code.
    pub fn generate() -> Self {
        use rand_core::RngCore;
        let mut digits = [0u8; CODE_DIGITS];
        for d in digits.iter_mut().take(RANDOM_DIGITS) {
            // Rejection sampling keeps every digit uniform.
            *d = loop {
                let b = (rand_core::OsRng.next_u32() & 0xff) as u8;
                if b < 250 {
                    break b'0' + b % 10;
                }
            };
        }
        let check = check_digits(&digits[..RANDOM_DIGITS]);
        digits[RANDOM_DIGITS..].copy_from_slice(&check);
        Self(digits)
    }

    /// Reads a typed code: digits, with any dashes or spaces.
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let mut digits = [0u8; CODE_DIGITS];
        let mut n = 0usize;
        for c in s.bytes() {
            match c {
                b'0'..=b'9' => {
                    if n < CODE_DIGITS {
                        digits[n] = c;
                    }
                    n += 1;
                }
                b'-' | b' ' => {}
                _ => return Err(CodeError::NotDigit),
            }
        }
        if n != CODE_DIGITS {
            return Err(CodeError::Length(n));
        }
        if check_digits(&digits[..RANDOM_DIGITS]) != digits[RANDOM_DIGITS..] {
            return Err(CodeError::Check);
        }
        Ok(Self(digits))
    }

    /// The code as shown to a person: `1234-5678-9012`. Only the tools
    /// that print a new code to its operator call this.
    pub fn reveal(&self) -> String {
        let d = &self.0;
        let s = |r: std::ops::Range<usize>| String::from_utf8_lossy(&d[r]).into_owned();
        format!("{}-{}-{}", s(0..4), s(4..8), s(8..12))
    }

    /// (w0, w1) for this code, device and salt.
    pub fn derive(
        &self,
        device_id: &str,
        salt: &[u8],
        params: &KdfParams,
    ) -> Result<ProverSecrets, CodeError> {
        params.check()?;
        if salt.len() < 8 || salt.len() > 64 {
            return Err(CodeError::Params("salt must be 8 to 64 bytes"));
        }
        let mut input = Vec::with_capacity(64 + device_id.len());
        for field in [&self.0[..], device_id.as_bytes(), ID_VERIFIER] {
            input.extend_from_slice(&(field.len() as u64).to_le_bytes());
            input.extend_from_slice(field);
        }
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(80),
        )
        .map_err(|_| CodeError::Params("rejected by Argon2"))?;
        let mut out = [0u8; 80];
        let res = Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
            .hash_password_into(&input, salt, &mut out);
        input.zeroize();
        res.map_err(|_| CodeError::Params("rejected by Argon2"))?;
        let mut w0s = [0u8; 40];
        let mut w1s = [0u8; 40];
        w0s.copy_from_slice(&out[..40]);
        w1s.copy_from_slice(&out[40..]);
        out.zeroize();
        let secrets = ProverSecrets::new(reduce_wide(&w0s), reduce_wide(&w1s));
        w0s.zeroize();
        w1s.zeroize();
        Ok(secrets)
    }

    /// The daemon-side record for this code: what `idprov-oob generate`
    /// computes and the OOB list carries.
    pub fn verifier(
        &self,
        device_id: &str,
        salt: &[u8],
        params: &KdfParams,
    ) -> Result<VerifierRecord, CodeError> {
        Ok(self.derive(device_id, salt, params)?.verifier())
    }
}

/// A fresh random salt for a new entry.
pub fn new_salt() -> [u8; SALT_LEN] {
    use rand_core::RngCore;
    let mut s = [0u8; SALT_LEN];
    rand_core::OsRng.fill_bytes(&mut s);
    s
}

/// Argon2id's cost parameters, carried with each entry so they can be
/// raised later without invalidating issued codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// RFC 9106 §4's second recommended option scaled to small devices:
    /// OWASP's Argon2id minimum, 19 MiB, 2 passes, 1 lane.
    pub const DEFAULT: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    /// Most a device will spend: a rogue daemon must not be able to make
    /// a device allocate without bound.
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    pub const MAX_ITERATIONS: u32 = 16;
    pub const MAX_PARALLELISM: u32 = 4;

    pub fn check(&self) -> Result<(), CodeError> {
        if self.parallelism == 0 || self.parallelism > Self::MAX_PARALLELISM {
            return Err(CodeError::Params("parallelism must be 1 to 4"));
        }
        if self.iterations == 0 || self.iterations > Self::MAX_ITERATIONS {
            return Err(CodeError::Params("iterations must be 1 to 16"));
        }
        if self.memory_kib < 8 * self.parallelism || self.memory_kib > Self::MAX_MEMORY_KIB {
            return Err(CodeError::Params(
                "memory must be 8 KiB per lane to 256 MiB",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn generated_codes_parse_and_typos_are_caught() {
        for _ in 0..50 {
            let code = SetupCode::generate();
            let shown = code.reveal();
            assert_eq!(shown.len(), 14);
            assert_eq!(SetupCode::parse(&shown), Ok(code.clone()));
            assert_eq!(SetupCode::parse(&shown.replace('-', " ")), Ok(code.clone()));
            let digits: Vec<u8> = shown.bytes().filter(u8::is_ascii_digit).collect();
            for i in 0..CODE_DIGITS {
                let mut typo = digits.clone();
                typo[i] = b'0' + (typo[i] - b'0' + 1) % 10;
                let typo = String::from_utf8(typo).unwrap_or_default();
                assert_eq!(SetupCode::parse(&typo), Err(CodeError::Check), "{typo}");
            }
            for i in 0..CODE_DIGITS - 1 {
                let mut swapped = digits.clone();
                if swapped[i] == swapped[i + 1] {
                    continue;
                }
                swapped.swap(i, i + 1);
                let swapped = String::from_utf8(swapped).unwrap_or_default();
                assert_eq!(
                    SetupCode::parse(&swapped),
                    Err(CodeError::Check),
                    "{swapped}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(SetupCode::parse("1234"), Err(CodeError::Length(4)));
        assert_eq!(SetupCode::parse("1234-5678-901x"), Err(CodeError::NotDigit));
        assert_eq!(
            SetupCode::parse(&"1".repeat(40)),
            Err(CodeError::Length(40))
        );
        assert_eq!(check_digits(b"0000000000"), *b"98");
    }

    #[test]
    fn derivation_binds_code_device_and_salt() {
        let code = SetupCode::generate();
        let salt = new_salt();
        let a = code.verifier("dev-1", &salt, &CHEAP).expect("derive");
        let b = code.verifier("dev-1", &salt, &CHEAP).expect("derive");
        assert_eq!(a.l_bytes(), b.l_bytes());
        let other_dev = code.verifier("dev-2", &salt, &CHEAP).expect("derive");
        assert_ne!(a.l_bytes(), other_dev.l_bytes());
        let other_salt = code.verifier("dev-1", &new_salt(), &CHEAP).expect("derive");
        assert_ne!(a.w0_bytes(), other_salt.w0_bytes());
    }

    #[test]
    fn params_are_bounded() {
        let code = SetupCode::generate();
        let huge = KdfParams {
            memory_kib: KdfParams::MAX_MEMORY_KIB + 1,
            ..CHEAP
        };
        assert!(matches!(
            code.derive("d", &new_salt(), &huge),
            Err(CodeError::Params(_))
        ));
        assert!(matches!(
            code.derive("d", &[0u8; 4], &CHEAP),
            Err(CodeError::Params(_))
        ));
        assert!(KdfParams::DEFAULT.check().is_ok());
    }
}

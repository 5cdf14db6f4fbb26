//! SPAKE2+ as RFC 9383 specifies it, ciphersuite
//! P256-SHA256-HKDF-SHA256-HMAC-SHA256 (the one Matter uses).
//!
//! The prover (the device) knows w0 and w1; the verifier (the daemon) knows
//! only w0 and L = w1·P, so a stolen verifier record does not let its thief
//! play the prover. Messages: the prover sends shareP; the verifier answers
//! shareV and confirmV; the prover checks confirmV and answers confirmP; the
//! verifier checks confirmP. Only then is K_shared used.
//!
//! Nothing here is invented: the transcript TT (§3.3), the key schedule and
//! the confirmation MACs (§3.4) are the RFC's, and the tests check them
//! against the RFC's Appendix C vectors.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::elliptic_curve::{Field, PrimeField};
use p256::{AffinePoint, EncodedPoint, FieldBytes, ProjectivePoint, Scalar, U256};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// An encoded share or L: an uncompressed SEC1 P-256 point.
pub const POINT_LEN: usize = 65;
/// A scalar (w0, w1, x, y) in big-endian bytes.
pub const SCALAR_LEN: usize = 32;
/// A confirmation MAC (HMAC-SHA256).
pub const CONFIRM_LEN: usize = 32;

/// M and N for P-256 (RFC 9383 §4, compressed SEC1).
const M_COMPRESSED: [u8; 33] =
    hex32(b"02886e2f97ace46e55ba9dd7242579f2993b64e16ef3dcab95afd497333d8fa12f");
const N_COMPRESSED: [u8; 33] =
    hex32(b"03d8bbd6c639c62937b04d997f38c3770719c629d7014d49a24b4f98baa1292b49");

const fn hex32(s: &[u8; 66]) -> [u8; 33] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lower-case hex"),
        }
    }
    let mut out = [0u8; 33];
    let mut i = 0;
    while i < 33 {
        out[i] = nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

/// Why an exchange failed. Deliberately coarse: which check failed is
/// all a peer may learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PakeError {
    /// A share or L that is not an uncompressed P-256 point other than the
    /// identity (RFC 9383 §6: abort on any non-member).
    #[error("not a valid P-256 point")]
    BadPoint,
    /// A scalar that is not below the group order.
    #[error("not a valid P-256 scalar")]
    BadScalar,
    /// The peer's confirmation MAC did not match: it does not know the
    /// code (or the verifier), or the two sides saw different transcripts
    /// (another TLS connection, a relay).
    #[error("key confirmation failed")]
    Confirmation,
}

fn point(name: &[u8; 33]) -> ProjectivePoint {
    // M and N are constants checked by the tests; decoding cannot fail.
    EncodedPoint::from_bytes(name)
        .ok()
        .and_then(|e| Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&e)))
        .map(ProjectivePoint::from)
        .unwrap_or(ProjectivePoint::IDENTITY)
}

fn encode(p: &ProjectivePoint) -> [u8; POINT_LEN] {
    let enc = p.to_affine().to_encoded_point(false);
    let mut out = [0u8; POINT_LEN];
    // An identity would encode as one byte; the protocol never produces one
    // from random x, y except with negligible probability, and a peer's
    // identity is refused on decoding.
    let bytes = enc.as_bytes();
    if bytes.len() == POINT_LEN {
        out.copy_from_slice(bytes);
    }
    out
}

/// Decodes a peer's share or L: uncompressed only, on the curve, not the
/// identity (P-256's cofactor is 1, so that is the whole membership check).
pub fn decode_point(bytes: &[u8]) -> Result<ProjectivePoint, PakeError> {
    if bytes.len() != POINT_LEN || bytes[0] != 0x04 {
        return Err(PakeError::BadPoint);
    }
    let enc = EncodedPoint::from_bytes(bytes).map_err(|_| PakeError::BadPoint)?;
    let p: Option<AffinePoint> = AffinePoint::from_encoded_point(&enc).into();
    let p = ProjectivePoint::from(p.ok_or(PakeError::BadPoint)?);
    if bool::from(p.is_identity()) {
        return Err(PakeError::BadPoint);
    }
    Ok(p)
}

/// A scalar from its 32 big-endian bytes; must be below the order.
pub fn decode_scalar(bytes: &[u8]) -> Result<Scalar, PakeError> {
    let arr: [u8; SCALAR_LEN] = bytes.try_into().map_err(|_| PakeError::BadScalar)?;
    Option::from(Scalar::from_repr(FieldBytes::from(arr))).ok_or(PakeError::BadScalar)
}

/// `w mod p` for a PBKDF output half of 40 bytes (RFC 9383 §3.2: the
/// extra 64 bits keep the bias under 2^-64).
pub fn reduce_wide(bytes: &[u8; 40]) -> Scalar {
    let mut hi = [0u8; 8];
    hi.copy_from_slice(&bytes[..8]);
    let mut lo = [0u8; SCALAR_LEN];
    lo.copy_from_slice(&bytes[8..]);
    // 2^256 mod p = ((2^256 - 1) mod p) + 1.
    let two_256 = <Scalar as Reduce<U256>>::reduce(U256::MAX) + Scalar::ONE;
    let lo = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(lo));
    Scalar::from(u64::from_be_bytes(hi)) * two_256 + lo
}

/// The prover's secrets (w0, w1). Neither prints nor serializes.
pub struct ProverSecrets {
    w0: Scalar,
    w1: Scalar,
}

impl ProverSecrets {
    pub fn new(w0: Scalar, w1: Scalar) -> Self {
        Self { w0, w1 }
    }

    /// The verifier's record: w0 and L = w1·P.
    pub fn verifier(&self) -> VerifierRecord {
        VerifierRecord {
            w0: self.w0,
            l: ProjectivePoint::GENERATOR * self.w1,
        }
    }
}

impl Drop for ProverSecrets {
    fn drop(&mut self) {
        self.w0.zeroize();
        self.w1.zeroize();
    }
}

impl std::fmt::Debug for ProverSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProverSecrets(..)")
    }
}

/// What the verifier stores: (w0, L). The code cannot be read back from it,
/// but w0 is still a secret (with it, a party can answer as the verifier),
/// so it does not print.
#[derive(Clone)]
pub struct VerifierRecord {
    w0: Scalar,
    l: ProjectivePoint,
}

impl VerifierRecord {
    pub fn from_bytes(w0: &[u8], l: &[u8]) -> Result<Self, PakeError> {
        Ok(Self {
            w0: decode_scalar(w0)?,
            l: decode_point(l)?,
        })
    }
    pub fn w0_bytes(&self) -> [u8; SCALAR_LEN] {
        self.w0.to_repr().into()
    }
    pub fn l_bytes(&self) -> [u8; POINT_LEN] {
        encode(&self.l)
    }
}

impl std::fmt::Debug for VerifierRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifierRecord(..)")
    }
}

/// The per-exchange inputs both sides put into the transcript.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// Context (§3.3): the application's name and version, and here the
    /// TLS exporter value, so that two TLS connections never share a TT.
    pub context: &'a [u8],
    pub id_prover: &'a [u8],
    pub id_verifier: &'a [u8],
}

/// K_shared: the key both sides hold after confirmation.
pub struct SharedKey([u8; 32]);

impl SharedKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// HMAC-SHA256 of `msg` under a key derived from K_shared for one
    /// purpose (`info`), as §3.4 allows: `HMAC(HKDF-Expand(K_shared, info,
    /// 32), msg)`.
    pub fn mac(&self, info: &[u8], msg: &[u8]) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::from_prk(&self.0).unwrap_or_else(|_| unreachable!());
        let mut k = [0u8; 32];
        // 32 bytes are far below HKDF-SHA256's limit.
        let _ = hk.expand(info, &mut k);
        let out = mac(&k, msg);
        k.zeroize();
        out
    }
}

impl Drop for SharedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

/// The transcript TT of §3.3: each field preceded by its length as an
/// 8-byte little-endian integer.
fn transcript(
    b: &Binding<'_>,
    share_p: &[u8],
    share_v: &[u8],
    z: &[u8],
    v: &[u8],
    w0: &[u8],
) -> Vec<u8> {
    let m = encode(&point(&M_COMPRESSED));
    let n = encode(&point(&N_COMPRESSED));
    let fields: [&[u8]; 10] = [
        b.context,
        b.id_prover,
        b.id_verifier,
        &m,
        &n,
        share_p,
        share_v,
        z,
        v,
        w0,
    ];
    let mut tt = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
    for f in fields {
        tt.extend_from_slice(&(f.len() as u64).to_le_bytes());
        tt.extend_from_slice(f);
    }
    tt
}

/// The key schedule of §3.4.
struct Keys {
    confirm_p: [u8; 32],
    confirm_v: [u8; 32],
    shared: [u8; 32],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.confirm_p.zeroize();
        self.confirm_v.zeroize();
        self.shared.zeroize();
    }
}

fn schedule(tt: &[u8]) -> Keys {
    let mut k_main: [u8; 32] = Sha256::digest(tt).into();
    let hk = Hkdf::<Sha256>::new(None, &k_main);
    let mut confirmation = [0u8; 64];
    let mut shared = [0u8; 32];
    // 64 and 32 bytes are far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(b"ConfirmationKeys", &mut confirmation);
    let _ = hk.expand(b"SharedKey", &mut shared);
    let mut keys = Keys {
        confirm_p: [0; 32],
        confirm_v: [0; 32],
        shared,
    };
    keys.confirm_p.copy_from_slice(&confirmation[..32]);
    keys.confirm_v.copy_from_slice(&confirmation[32..]);
    confirmation.zeroize();
    shared.zeroize();
    k_main.zeroize();
    keys
}

fn mac(key: &[u8; 32], msg: &[u8]) -> [u8; CONFIRM_LEN] {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn random_scalar() -> Scalar {
    Scalar::random(&mut p256::elliptic_curve::rand_core::OsRng)
}

/// The prover after sending shareP.
pub struct Prover {
    secrets: ProverSecrets,
    x: Scalar,
    share_p: [u8; POINT_LEN],
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prover(..)")
    }
}

impl Drop for Prover {
    fn drop(&mut self) {
        self.x.zeroize();
    }
}

/// What the prover sends last, and the key it then holds.
#[derive(Debug)]
pub struct ProverDone {
    pub confirm_p: [u8; CONFIRM_LEN],
    pub key: SharedKey,
}

impl Prover {
    /// X = x·P + w0·M with a fresh random x.
    pub fn start(secrets: ProverSecrets) -> Self {
        Self::start_with(secrets, random_scalar())
    }

    /// For the test vectors only: a given x.
    #[doc(hidden)]
    pub fn start_with(secrets: ProverSecrets, x: Scalar) -> Self {
        let share = ProjectivePoint::GENERATOR * x + point(&M_COMPRESSED) * secrets.w0;
        Self {
            share_p: encode(&share),
            secrets,
            x,
        }
    }

    pub fn share_p(&self) -> &[u8; POINT_LEN] {
        &self.share_p
    }

    /// Checks the verifier's confirmV; only if it is right, returns
    /// confirmP and K_shared.
    pub fn finish(
        self,
        b: &Binding<'_>,
        share_v: &[u8],
        confirm_v: &[u8],
    ) -> Result<ProverDone, PakeError> {
        let y_point = decode_point(share_v)?;
        let w0 = self.secrets.w0;
        let base = y_point - point(&N_COMPRESSED) * w0;
        let z = encode(&(base * self.x));
        let v = encode(&(base * self.secrets.w1));
        let tt = transcript(b, &self.share_p, share_v, &z, &v, &w0.to_repr());
        let keys = schedule(&tt);
        if !ct_eq(&mac(&keys.confirm_v, &self.share_p), confirm_v) {
            return Err(PakeError::Confirmation);
        }
        Ok(ProverDone {
            confirm_p: mac(&keys.confirm_p, share_v),
            key: SharedKey(keys.shared),
        })
    }
}

/// The verifier after answering: what it expects as confirmP.
pub struct Verifier {
    expected_confirm_p: [u8; CONFIRM_LEN],
    shared: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.expected_confirm_p.zeroize();
        self.shared.zeroize();
    }
}

/// The verifier's answer: shareV and confirmV.
#[derive(Debug, Clone)]
pub struct VerifierAnswer {
    pub share_v: [u8; POINT_LEN],
    pub confirm_v: [u8; CONFIRM_LEN],
}

impl Verifier {
    /// Y = y·P + w0·N with a fresh random y; Z = y·(X − w0·M), V = y·L.
    pub fn respond(
        record: &VerifierRecord,
        b: &Binding<'_>,
        share_p: &[u8],
    ) -> Result<(Self, VerifierAnswer), PakeError> {
        Self::respond_with(record, b, share_p, random_scalar())
    }

    /// For the test vectors only: a given y.
    #[doc(hidden)]
    pub fn respond_with(
        record: &VerifierRecord,
        b: &Binding<'_>,
        share_p: &[u8],
        mut y: Scalar,
    ) -> Result<(Self, VerifierAnswer), PakeError> {
        let x_point = decode_point(share_p)?;
        let share_v = encode(&(ProjectivePoint::GENERATOR * y + point(&N_COMPRESSED) * record.w0));
        let z = encode(&((x_point - point(&M_COMPRESSED) * record.w0) * y));
        let v = encode(&(record.l * y));
        y.zeroize();
        let tt = transcript(b, share_p, &share_v, &z, &v, &record.w0.to_repr());
        let keys = schedule(&tt);
        let answer = VerifierAnswer {
            share_v,
            confirm_v: mac(&keys.confirm_v, share_p),
        };
        let me = Self {
            expected_confirm_p: mac(&keys.confirm_p, &share_v),
            shared: keys.shared,
        };
        Ok((me, answer))
    }

    /// Checks confirmP; only then is K_shared released.
    pub fn verify(self, confirm_p: &[u8]) -> Result<SharedKey, PakeError> {
        if !ct_eq(&self.expected_confirm_p, confirm_p) {
            return Err(PakeError::Confirmation);
        }
        Ok(SharedKey(self.shared))
    }
}

#[cfg(test)]
#[path = "spake2plus_tests.rs"]
mod tests;

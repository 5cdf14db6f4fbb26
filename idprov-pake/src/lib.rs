//! The setup-code PAKE shared by idprovd (the verifier) and idprov-client
//! (the prover): SPAKE2+ (RFC 9383) and the setup codes it runs over.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod setup_code;
pub mod spake2plus;
pub mod stored;

pub use setup_code::{CodeError, KdfParams, SetupCode};
pub use spake2plus::{
    Binding, PakeError, Prover, ProverSecrets, SharedKey, Verifier, VerifierRecord,
};
pub use stored::{StoredVerifier, VerifierError};

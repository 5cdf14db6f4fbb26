//! idprov-oob: bulk import, export and key generation for the idprovd
//! out-of-band (OOB) list. The binary is a thin shell over these modules;
//! `docs/oob-format.md` describes the file formats.

pub mod cli;
pub mod export;
pub mod generate;
pub mod lost;
pub mod record;
pub mod source;
pub mod upload;
pub mod validate;

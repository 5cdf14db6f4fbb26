//! `generate`: key pairs for a factory batch. Each private key goes into its
//! own file (mode 0600, never overwritten), and the public halves into one
//! CSV that `import` takes as it is.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use idprov_proto::keys::pem_encode;
use idprov_proto::{DeviceId, KeyFormat};

use crate::export::escape_cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Alg {
    Es256,
    Rs256,
}

/// A generated key pair as PEM: (PKCS#8 private key, SPKI public key).
pub struct Pair {
    pub private_pem: String,
    pub public_pem: String,
}

pub fn es256() -> anyhow::Result<Pair> {
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
    let private = kp
        .to_pkcs8v1()
        .map_err(|_| anyhow::anyhow!("P-256 key encoding failed"))?;
    let public = kp
        .public_key()
        .as_der()
        .map_err(|_| anyhow::anyhow!("P-256 key encoding failed"))?;
    Ok(Pair {
        private_pem: pem_encode("PRIVATE KEY", private.as_ref()),
        public_pem: pem_encode("PUBLIC KEY", public.as_ref()),
    })
}

pub fn rs256(bits: u32) -> anyhow::Result<Pair> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => bail!("RSA keys are 2048, 3072 or 4096 bits"),
    };
    let kp = aws_lc_rs::rsa::KeyPair::generate(size)
        .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
    let private: aws_lc_rs::encoding::Pkcs8V1Der<'_> = kp
        .as_der()
        .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
    let public: aws_lc_rs::encoding::PublicKeyX509Der<'_> = kp
        .public_key()
        .as_der()
        .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
    Ok(Pair {
        private_pem: pem_encode("PRIVATE KEY", private.as_ref()),
        public_pem: pem_encode("PUBLIC KEY", public.as_ref()),
    })
}

/// Most key pairs one `generate` writes: each is a file, and a typo in N
/// must not fill the disk with them.
pub const MAX_GENERATE: u64 = 1_000_000;

pub struct Plan {
    pub count: u64,
    pub prefix: String,
    pub start: u64,
    pub out: PathBuf,
    pub alg: Alg,
    pub rsa_bits: u32,
    pub note: Option<String>,
    /// Issue a setup code for each device (`--setup-codes`), with this KDF cost.
    pub setup_codes: Option<idprov_pake::KdfParams>,
    /// No key pairs: the setup code is the devices' only credential.
    pub no_keys: bool,
}

impl Plan {
    /// Device IDs are the prefix and a zero-padded number, all of one width
    /// so that they sort in order.
    pub fn device_id(&self, i: u64) -> anyhow::Result<DeviceId> {
        let too_big = || anyhow::anyhow!("--start plus N is too large");
        let last = self
            .start
            .checked_add(self.count.saturating_sub(1))
            .ok_or_else(too_big)?;
        let width = last.to_string().len();
        let n = self.start.checked_add(i).ok_or_else(too_big)?;
        let id = format!("{}{n:0width$}", self.prefix);
        id.parse()
            .with_context(|| format!("device id {id:?} is not valid"))
    }

    fn key_format(&self) -> KeyFormat {
        match self.alg {
            Alg::Es256 => KeyFormat::ES256_PEM,
            Alg::Rs256 => KeyFormat::RSA_PEM,
        }
    }
}

/// File names inside the output directory.
pub const CSV_NAME: &str = "oob.csv";
/// The setup codes themselves (mode 0600): for the labels, never imported.
pub const CODES_NAME: &str = "setup-codes.csv";

/// One generated device.
struct Made {
    id: DeviceId,
    public_pem: Option<String>,
    /// The verifier text (for the OOB list) and the code (for the label).
    setup: Option<(String, String)>,
}
pub fn key_file_name(id: &DeviceId) -> String {
    format!("{id}.key.pem")
}

/// Generate the batch; `progress` gets the number of keys done. Returns the
/// path of the CSV.
pub fn run(plan: &Plan, progress: &(dyn Fn(u64) + Sync)) -> anyhow::Result<PathBuf> {
    if plan.count == 0 {
        bail!("nothing to generate (N is 0)");
    }
    if plan.count > MAX_GENERATE {
        bail!(
            "at most {MAX_GENERATE} key pairs per batch (N is {}); generate several batches with --start",
            plan.count
        );
    }
    if plan.no_keys && plan.setup_codes.is_none() {
        bail!("--no-keys needs --setup-codes: a device needs some credential");
    }
    if let Some(p) = &plan.setup_codes {
        p.check()
            .map_err(|e| anyhow::anyhow!("setup-code KDF: {e}"))?;
    }
    if plan.alg == Alg::Rs256 && ![2048, 3072, 4096].contains(&plan.rsa_bits) {
        bail!("--rsa-bits must be 2048, 3072 or 4096");
    }
    // Check the first and last ID before making anything.
    plan.device_id(0)?;
    plan.device_id(plan.count - 1)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    let csv_path = plan.out.join(CSV_NAME);
    if csv_path.exists() {
        bail!(
            "{} exists already; use another --out directory (nothing is overwritten)",
            csv_path.display()
        );
    }
    // Written under a temporary name and renamed at the end, so a batch that
    // failed half-way never leaves an importable CSV behind.
    let partial = plan.out.join(format!("{CSV_NAME}.partial"));
    let file = create_new(&partial, 0o600)?;
    let mut csv = BufWriter::new(file);
    csv.write_all(b"device_id,public_key,key_format,setup_verifier,note\r\n")?;
    // The codes go to their own file, created before any is made: an
    // existing one stops the batch (nothing is overwritten).
    let mut codes = match plan.setup_codes {
        Some(_) => {
            let mut f = BufWriter::new(create_new(&plan.out.join(CODES_NAME), 0o600)?);
            f.write_all(b"device_id,setup_code\r\n")?;
            Some(f)
        }
        None => None,
    };

    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16) as u64;
    let batch = 256 * threads;
    let mut done = 0u64;
    while done < plan.count {
        let n = batch.min(plan.count - done);
        let per = n.div_ceil(threads);
        let results: Vec<anyhow::Result<Vec<Made>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let from = done + t * per;
                    let to = (from + per).min(done + n);
                    s.spawn(move || make_range(plan, from, to))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a key generation thread failed")))
                })
                .collect()
        });
        for part in results {
            for m in part? {
                let note = plan.note.as_deref().unwrap_or("");
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(Vec::new());
                let (verifier, code) = m
                    .setup
                    .as_ref()
                    .map_or(("", ""), |(v, c)| (v.as_str(), c.as_str()));
                w.write_record([
                    escape_cell(m.id.as_str()).as_ref(),
                    escape_cell(m.public_pem.as_deref().unwrap_or("")).as_ref(),
                    if m.public_pem.is_some() {
                        plan.key_format().as_str()
                    } else {
                        ""
                    },
                    verifier,
                    escape_cell(note).as_ref(),
                ])?;
                csv.write_all(&w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
                if let Some(f) = codes.as_mut() {
                    f.write_all(format!("{},{code}\r\n", m.id).as_bytes())?;
                }
            }
        }
        done += n;
        progress(done);
    }
    let file = csv
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", partial.display(), e.error()))?;
    file.sync_all()?;
    if let Some(f) = codes {
        f.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {CODES_NAME}: {}", e.error()))?
            .sync_all()?;
    }
    fs::rename(&partial, &csv_path)?;
    Ok(csv_path)
}

/// Devices `from..to`: write each private key, return the public halves
/// and the setup codes with their verifiers.
fn make_range(plan: &Plan, from: u64, to: u64) -> anyhow::Result<Vec<Made>> {
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    for i in from..to {
        let id = plan.device_id(i)?;
        let public_pem = if plan.no_keys {
            None
        } else {
            let pair = match plan.alg {
                Alg::Es256 => es256()?,
                Alg::Rs256 => rs256(plan.rsa_bits)?,
            };
            let path = plan.out.join(key_file_name(&id));
            let mut f = create_new(&path, 0o600)?;
            f.write_all(pair.private_pem.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Some(pair.public_pem)
        };
        let setup = match plan.setup_codes {
            Some(params) => {
                let code = idprov_pake::SetupCode::generate();
                let v = idprov_pake::StoredVerifier::for_code(&code, id.as_str(), params)
                    .map_err(|e| anyhow::anyhow!("setup code for {id}: {e}"))?;
                Some((v.encode(), code.reveal()))
            }
            None => None,
        };
        out.push(Made {
            id,
            public_pem,
            setup,
        });
    }
    Ok(out)
}

/// Create a file that must not exist yet, with `mode` from the start (no
/// window in which a private key is readable by others).
fn create_new(path: &Path, mode: u32) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

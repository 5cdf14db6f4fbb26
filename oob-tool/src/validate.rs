//! The two passes over the input files.
//!
//! Pass one ([`validate`]) checks every row in full — keys are parsed with
//! `idprov_proto` on all cores — plus the checks across rows (a device ID
//! twice, one MAC or one key under two IDs), and collects every problem with
//! its line. It keeps only 8-byte hashes of what it has seen, never the
//! entries (see [`Seen`]), so memory stays small however large the files
//! are.
//!
//! Pass two ([`read_entries`]) reads the same files again and hands out the
//! entries for upload. Both passes fold every entry into a SHA-256 digest;
//! the upload is committed only if the digests agree, so a file that changed
//! in between is never half-imported.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use anyhow::bail;
use aws_lc_rs::digest;
use idprov_proto::admin::OobEntryInput;

use crate::record::{Check, Checked, RawRecord, check_record, format_expires, now_unix};
use crate::source::{Input, Row};

/// Rows checked per parallel batch.
const BATCH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub file: usize,
    pub line: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub loc: Loc,
    pub message: String,
}

#[derive(Debug)]
pub struct Summary {
    /// Rows that passed every check.
    pub entries: u64,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub digest: [u8; 32],
}

/// `file.csv:12`
pub fn loc_label(inputs: &[Input], loc: Loc) -> String {
    let path = inputs
        .get(loc.file)
        .map_or_else(|| "?".to_string(), |i| i.path.display().to_string());
    format!("{path}:{}", loc.line)
}

/// Pass one. `progress` is called with the number of rows read so far.
pub fn validate(inputs: &[Input], progress: &dyn Fn(u64)) -> anyhow::Result<Summary> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut seen = Seen::new();
    let mut out = Summary {
        entries: 0,
        problems: Vec::new(),
        warnings: Vec::new(),
        digest: [0; 32],
    };
    let mut ctx = digest::Context::new(&digest::SHA256);
    let now = now_unix();
    let mut rows_read = 0u64;

    for (file, input) in inputs.iter().enumerate() {
        let base = input.base_dir();
        let mut rows = input.open()?;
        let mut batch = read_batch(&mut rows);
        while !batch.is_empty() {
            rows_read += batch.len() as u64;
            // Check this batch on all cores while this thread reads the next.
            let (checked, next) = std::thread::scope(|s| {
                let per = batch.len().div_ceil(threads);
                let handles: Vec<_> = batch
                    .chunks(per)
                    .map(|chunk| {
                        let base = &base;
                        s.spawn(move || {
                            chunk
                                .iter()
                                .map(|row| match &row.record {
                                    Ok(raw) => check_record(raw, base, Check::Full),
                                    Err(e) => Err(vec![e.clone()]),
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let next = read_batch(&mut rows);
                let mut checked = Vec::with_capacity(batch.len());
                for h in handles {
                    match h.join() {
                        Ok(part) => checked.extend(part),
                        Err(_) => bail!("a validation thread failed"),
                    }
                }
                Ok((checked, next))
            })?;
            for (row, result) in batch.iter().zip(checked) {
                let loc = Loc {
                    file,
                    line: row.line,
                };
                match result {
                    Err(messages) => out
                        .problems
                        .extend(messages.into_iter().map(|message| Problem { loc, message })),
                    Ok(checked) => {
                        seen.note(&checked);
                        // The daemon refuses entries that expired already.
                        if let Some(at) = checked.entry.expires_at
                            && at <= now
                        {
                            out.problems.push(Problem {
                                loc,
                                message: format!("expires {} is in the past", format_expires(at)),
                            });
                            continue;
                        }
                        fold(&mut ctx, &checked.entry);
                        out.entries += 1;
                    }
                }
            }
            progress(rows_read);
            batch = next;
        }
    }
    if seen.has_suspects() {
        out.problems.extend(confirm(inputs, &seen)?);
        out.problems.sort_by_key(|p| (p.loc.file, p.loc.line));
    }
    out.digest = finish(ctx);
    Ok(out)
}

fn read_batch(rows: &mut impl Iterator<Item = Row>) -> Vec<Row> {
    rows.take(BATCH).collect()
}

/// Pass two: every entry, in file order, to `sink`. Returns the digest of
/// what was handed out. Any row that fails now (it passed pass one) means a
/// file changed in between.
pub fn read_entries(
    inputs: &[Input],
    mut sink: impl FnMut(Loc, OobEntryInput) -> anyhow::Result<()>,
) -> anyhow::Result<[u8; 32]> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for (file, input) in inputs.iter().enumerate() {
        let base = input.base_dir();
        for row in input.open()? {
            let loc = Loc {
                file,
                line: row.line,
            };
            let checked = row
                .record
                .map_err(|e| vec![e])
                .and_then(|raw: RawRecord| check_record(&raw, &base, Check::Light));
            match checked {
                Ok(c) => {
                    fold(&mut ctx, &c.entry);
                    sink(loc, c.entry)?;
                }
                Err(_) => bail!(
                    "{} changed while it was being imported; nothing was imported",
                    loc_label(inputs, loc)
                ),
            }
        }
    }
    Ok(finish(ctx))
}

/// Fold one entry into the digest; every field length-prefixed so that no
/// two different entries feed the same bytes.
fn fold(ctx: &mut digest::Context, e: &OobEntryInput) {
    let mut field = |tag: u8, bytes: &[u8]| {
        ctx.update(&[tag]);
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(bytes);
    };
    field(b'i', e.device_id.as_str().as_bytes());
    if let Some(k) = &e.public_key {
        field(b'k', k.as_bytes());
    }
    if let Some(f) = e.key_format {
        field(b'f', f.as_str().as_bytes());
    }
    if let Some(m) = e.mac {
        field(b'm', &m.0);
    }
    if let Some(s) = &e.secret {
        field(b's', s.expose().as_bytes());
    }
    if let Some(x) = e.expires_at {
        field(b'x', &x.to_le_bytes());
    }
    if let Some(n) = &e.note {
        field(b'n', n.as_bytes());
    }
    field(b'.', &[]);
}

fn finish(ctx: digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The checks across rows, in two steps so that memory stays small. Pass
/// one keeps only a keyed 64-bit hash of each device ID and key, and each
/// MAC (8 bytes apiece, no strings, no line numbers). A value seen twice
/// makes a suspect. Only if there are suspects does [`confirm`] read the
/// files once more, compare the real values of the suspect rows, and report
/// the true duplicates with the line of the first occurrence.
struct Seen {
    hasher: RandomState,
    ids: HashSet<u64>,
    macs: HashSet<u64>,
    keys: HashSet<u64>,
    suspect_ids: HashSet<u64>,
    suspect_macs: HashSet<u64>,
    suspect_keys: HashSet<u64>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            hasher: RandomState::new(),
            ids: HashSet::new(),
            macs: HashSet::new(),
            keys: HashSet::new(),
            suspect_ids: HashSet::new(),
            suspect_macs: HashSet::new(),
            suspect_keys: HashSet::new(),
        }
    }

    fn id_hash(&self, c: &Checked) -> u64 {
        self.hasher.hash_one(c.entry.device_id.as_str())
    }
    fn key_hash(&self, c: &Checked) -> Option<u64> {
        c.thumbprint.as_deref().map(|t| self.hasher.hash_one(t))
    }
    fn mac_bits(c: &Checked) -> Option<u64> {
        c.entry
            .mac
            .map(|m| m.0.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn note(&mut self, c: &Checked) {
        let id = self.id_hash(c);
        if !self.ids.insert(id) {
            self.suspect_ids.insert(id);
        }
        if let Some(mac) = Self::mac_bits(c)
            && !self.macs.insert(mac)
        {
            self.suspect_macs.insert(mac);
        }
        if let Some(key) = self.key_hash(c)
            && !self.keys.insert(key)
        {
            self.suspect_keys.insert(key);
        }
    }

    fn has_suspects(&self) -> bool {
        !(self.suspect_ids.is_empty()
            && self.suspect_macs.is_empty()
            && self.suspect_keys.is_empty())
    }
}

/// The second look at suspect rows (see [`Seen`]): exact values, first
/// occurrence first. A row whose device ID is a duplicate is reported for
/// that alone and does not count as using its MAC or key.
fn confirm(inputs: &[Input], seen: &Seen) -> anyhow::Result<Vec<Problem>> {
    let check = if seen.suspect_keys.is_empty() {
        Check::Light
    } else {
        Check::Full
    };
    let mut first_ids: HashMap<String, Loc> = HashMap::new();
    let mut first_macs: HashMap<u64, Loc> = HashMap::new();
    let mut first_keys: HashMap<String, Loc> = HashMap::new();
    let mut problems = Vec::new();
    for (file, input) in inputs.iter().enumerate() {
        let base = input.base_dir();
        for row in input.open()? {
            let loc = Loc {
                file,
                line: row.line,
            };
            let Ok(raw) = row.record else { continue };
            let Ok(c) = check_record(&raw, &base, check) else {
                continue;
            };
            let where_ = |first: Loc| {
                if first.file == loc.file {
                    format!("line {}", first.line)
                } else {
                    loc_label(inputs, first)
                }
            };
            if seen.suspect_ids.contains(&seen.id_hash(&c)) {
                let id = c.entry.device_id.as_str();
                if let Some(first) = first_ids.get(id) {
                    problems.push(Problem {
                        loc,
                        message: format!("device id {id} is already listed on {}", where_(*first)),
                    });
                    continue;
                }
                first_ids.insert(id.to_string(), loc);
            }
            if let Some(bits) = Seen::mac_bits(&c)
                && seen.suspect_macs.contains(&bits)
            {
                if let (Some(first), Some(mac)) = (first_macs.get(&bits), c.entry.mac) {
                    problems.push(Problem {
                        loc,
                        message: format!(
                            "mac {mac} is already given to another device on {}",
                            where_(*first)
                        ),
                    });
                    continue;
                }
                first_macs.insert(bits, loc);
            }
            if let (Some(hash), Some(thumb)) = (seen.key_hash(&c), c.thumbprint.as_deref())
                && seen.suspect_keys.contains(&hash)
            {
                if let Some(first) = first_keys.get(thumb) {
                    problems.push(Problem {
                        loc,
                        message: format!(
                            "the same public key is already given to another device on {}",
                            where_(*first)
                        ),
                    });
                    continue;
                }
                first_keys.insert(thumb.to_string(), loc);
            }
        }
    }
    Ok(problems)
}

/// Print problems the way compilers do: `file:line: message`.
pub fn print_problems(inputs: &[Input], kind: &str, problems: &[Problem]) {
    for p in problems {
        eprintln!("{}: {kind}: {}", loc_label(inputs, p.loc), p.message);
    }
}

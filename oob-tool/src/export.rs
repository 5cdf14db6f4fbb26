//! `export` and `list`: read the daemon's OOB list page by page and write it
//! as CSV or JSON (import-ready), or as a table / JSON for people and scripts.

use std::io::Write;
use std::path::{Path, PathBuf};

use idprov_admin_client::AdminClient;
use idprov_proto::admin::{ListQuery, MAX_PAGE, OobEntryView};

use crate::record::{COLUMNS, Expires, RawRecord, format_expires};
use crate::source::Format;

/// Every page of the list, in device-ID order, to `each`.
pub async fn for_each_entry(
    client: &AdminClient,
    q: Option<String>,
    mut each: impl FnMut(OobEntryView) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut after = None;
    let mut n = 0;
    loop {
        let page = client
            .oob_list(&ListQuery {
                after: after.take(),
                limit: Some(MAX_PAGE),
                q: q.clone(),
            })
            .await?;
        for e in page.items {
            n += 1;
            each(e)?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(n),
        }
    }
}

/// The import form of a stored entry. The daemon keeps only a hash of a
/// one-time secret, and never gives a setup code's verifier back, so the
/// secret and setup_verifier columns are always empty.
pub fn to_record(e: &OobEntryView) -> RawRecord {
    RawRecord {
        device_id: e.device_id.to_string(),
        public_key: e.public_key.clone(),
        key_format: e.key_format.map(|f| f.to_string()),
        mac: e.mac.map(|m| m.to_string()),
        secret: None,
        expires: e.expires_at.map(|t| Expires::Text(format_expires(t))),
        note: e.note.clone(),
        setup_verifier: None,
    }
}

/// Keep a spreadsheet from running a cell as a formula: a cell that starts
/// with `= + - @`, a tab or a carriage return gets an apostrophe in front
/// (OWASP "CSV injection"). A cell that already starts with an apostrophe
/// gets one too, so import can always remove exactly one.
///
/// PEM text is left as it is (tools that flash devices read these files):
/// it starts with `-`, but a cell made only of PEM characters has no
/// function call, reference or DDE link in it, so there is nothing to run.
pub fn escape_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if is_plain_pem(cell) {
        return cell.into();
    }
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn is_plain_pem(cell: &str) -> bool {
    cell.starts_with("-----BEGIN ")
        && cell.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'-' | b' ' | b'\n' | b'\r')
        })
}

pub struct Writer<W: Write> {
    format: Format,
    csv: Option<csv::Writer<W>>,
    json: Option<W>,
    first: bool,
    /// Entries whose one-time secret could not be exported.
    pub secrets_left_out: u64,
    /// Entries whose setup code's verifier was not exported.
    pub setup_codes_left_out: u64,
    /// Entries with a secret as their only credential: with the secret
    /// left out they cannot be imported again (the first few, and a count).
    pub secret_only: Vec<String>,
    pub secret_only_count: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(format: Format, out: W) -> anyhow::Result<Self> {
        let mut w = Writer {
            format,
            csv: None,
            json: None,
            first: true,
            secrets_left_out: 0,
            setup_codes_left_out: 0,
            secret_only: Vec::new(),
            secret_only_count: 0,
        };
        match format {
            Format::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(out);
                csv.write_record(COLUMNS)?;
                w.csv = Some(csv);
            }
            Format::Json | Format::Jsonl => {
                let mut out = out;
                if format == Format::Json {
                    out.write_all(b"[")?;
                }
                w.json = Some(out);
            }
        }
        Ok(w)
    }

    pub fn write(&mut self, e: &OobEntryView) -> anyhow::Result<()> {
        if e.has_secret && !e.secret_consumed {
            self.secrets_left_out += 1;
        }
        if e.setup_code.is_some() {
            self.setup_codes_left_out += 1;
        }
        if (e.has_secret || e.setup_code.is_some()) && e.public_key.is_none() && e.mac.is_none() {
            self.secret_only_count += 1;
            if self.secret_only.len() < 10 {
                self.secret_only.push(printable(e.device_id.as_str()));
            }
        }
        let r = to_record(e);
        if let Some(csv) = &mut self.csv {
            let expires = match &r.expires {
                Some(Expires::Text(t)) => t.clone(),
                Some(Expires::Unix(n)) => n.to_string(),
                None => String::new(),
            };
            let cells = [
                r.device_id.as_str(),
                r.public_key.as_deref().unwrap_or(""),
                r.key_format.as_deref().unwrap_or(""),
                r.mac.as_deref().unwrap_or(""),
                "",
                expires.as_str(),
                r.note.as_deref().unwrap_or(""),
                // Never exported, like secrets: the daemon gives verifiers
                // back to no one, and an import without one keeps the stored one.
                "",
            ];
            csv.write_record(cells.iter().map(|c| escape_cell(c).into_owned()))?;
        } else if let Some(out) = &mut self.json {
            match self.format {
                Format::Json => {
                    out.write_all(if self.first { b"\n  " } else { b",\n  " })?;
                    serde_json::to_writer(&mut *out, &r)?;
                }
                _ => {
                    serde_json::to_writer(&mut *out, &r)?;
                    out.write_all(b"\n")?;
                }
            }
        }
        self.first = false;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        if let Some(mut csv) = self.csv {
            csv.flush()?;
        }
        if let Some(mut out) = self.json {
            if self.format == Format::Json {
                out.write_all(if self.first { b"]\n" } else { b"\n]\n" })?;
            }
            out.flush()?;
        }
        Ok(())
    }
}

/// Make a string from the daemon safe to print on a terminal: control
/// characters (escape sequences, line breaks) are shown escaped.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// One line of the `list` table.
pub fn table_row(e: &OobEntryView) -> String {
    let key = match (&e.key_format, &e.key_fingerprint) {
        (Some(f), Some(fp)) => format!("{f} {}", &fp[..fp.len().min(16)]),
        (Some(f), None) => f.to_string(),
        _ => "-".to_string(),
    };
    let mac = e.mac.map_or_else(|| "-".to_string(), |m| m.to_string());
    let secret = match (e.has_secret, e.secret_consumed) {
        (false, _) => "-",
        (true, false) => "yes",
        (true, true) => "used",
    };
    let expires = e.expires_at.map_or_else(|| "-".to_string(), format_expires);
    let note = e.note.as_deref().map(printable).unwrap_or_default();
    format!(
        "{:<32} {:<31} {:<17} {:<6} {:<20} {}",
        e.device_id, key, mac, secret, expires, note
    )
    .trim_end()
    .to_string()
}

pub fn table_header() -> String {
    format!(
        "{:<32} {:<31} {:<17} {:<6} {:<20} {}",
        "DEVICE ID", "KEY", "MAC", "SECRET", "EXPIRES", "NOTE"
    )
}

/// The file `export --out` writes: a new temporary file next to the target,
/// renamed over it by [`OutFile::commit`] once complete and on disk. Until
/// then the target is untouched, and a temporary file that is dropped (an
/// error, a signal) is removed.
pub struct OutFile {
    temp: tempfile::NamedTempFile,
    /// Where the rename goes: the target, or what it links to (writing
    /// through a symbolic link, as `cp` and a shell redirection do).
    target: PathBuf,
}

impl OutFile {
    pub fn create(path: &Path) -> anyhow::Result<OutFile> {
        use std::os::unix::fs::PermissionsExt;
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let target = if is_link {
            std::fs::canonicalize(path).map_err(|e| {
                anyhow::anyhow!(
                    "{}: a symbolic link to nothing usable: {}",
                    path.display(),
                    plain(&e)
                )
            })?
        } else {
            path.to_path_buf()
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "cannot write {}: {} is not a directory",
                path.display(),
                dir.display()
            );
        }
        // A new file gets the usual mode (0666 less the umask); a file that
        // is replaced keeps its mode.
        let mode = match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => anyhow::bail!("{} is a directory", path.display()),
            Ok(m) => Some(m.permissions()),
            Err(_) => None,
        };
        let temp = tempfile::Builder::new()
            .prefix(".idprov-export-")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(|e| {
                anyhow::anyhow!("cannot create a file in {}: {}", dir.display(), plain(&e))
            })?;
        if let Some(mode) = mode {
            temp.as_file()
                .set_permissions(mode)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), plain(&e)))?;
        }
        Ok(OutFile { temp, target })
    }

    pub fn file(&self) -> &std::fs::File {
        self.temp.as_file()
    }

    /// Flush to disk, rename over the target, and flush the directory so
    /// the rename survives a crash.
    pub fn commit(self) -> anyhow::Result<()> {
        let target = self.target;
        let fail =
            |e: &std::io::Error| anyhow::anyhow!("cannot write {}: {}", target.display(), plain(e));
        self.temp.as_file().sync_all().map_err(|e| fail(&e))?;
        self.temp.persist(&target).map_err(|e| fail(&e.error))?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Best effort: some file systems cannot sync a directory.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

/// An I/O error without the temporary file's name that tempfile adds.
fn plain(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::unescape_cell;

    #[test]
    fn formula_cells_round_trip() {
        for cell in [
            "=1+1",
            "+cmd",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\n-2+3+cmd|' /C calc'!A0\n",
            "-1",
            "@SUM(A1)",
            "\tx",
            "'quoted",
            "plain",
            "",
        ] {
            let escaped = escape_cell(cell);
            assert!(
                !escaped.starts_with(['=', '+', '-', '@', '\t', '\r']) || is_plain_pem(&escaped),
                "{cell:?}"
            );
            assert_eq!(unescape_cell(&escaped), cell);
        }
    }
}

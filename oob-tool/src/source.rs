//! Readers for the three input formats. Each yields rows one at a time with
//! the line the row starts on, so a file of any size is read in constant
//! memory and every problem can be reported with its line number.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::record::{COLUMNS, RawRecord};

/// Largest single entry accepted: a CSV row, a JSON entry or a JSON Lines
/// line. Real entries are far smaller (an RSA-4096 PEM is about 800 bytes);
/// the bound keeps one hostile row from taking the tool's memory.
pub const MAX_ENTRY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Jsonl,
}

impl Format {
    /// By file extension: `.csv`, `.json`, `.jsonl` / `.ndjson`.
    pub fn from_path(path: &Path) -> anyhow::Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("json") => Ok(Format::Json),
            Some("jsonl") | Some("ndjson") => Ok(Format::Jsonl),
            _ => bail!(
                "{}: cannot tell the format from the file name; pass --format csv|json|jsonl",
                path.display()
            ),
        }
    }
}

/// One input file with its format decided.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
}

impl Input {
    pub fn new(path: PathBuf, format: Option<Format>) -> anyhow::Result<Input> {
        let format = match format {
            Some(f) => f,
            None => Format::from_path(&path)?,
        };
        Ok(Input { path, format })
    }

    /// Directory that relative key paths in this file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn open(&self) -> anyhow::Result<Rows> {
        let file = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        // Files are read twice (check, then upload), and the second read
        // must see what the first one checked: a pipe or a device would give
        // nothing the second time.
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        if !meta.is_file() {
            bail!(
                "{}: not a regular file (idprov-oob reads its input twice; save a pipe's output to a file first)",
                self.path.display()
            );
        }
        let reader = BufReader::with_capacity(256 * 1024, file);
        Ok(match self.format {
            Format::Csv => Rows::Csv(CsvRows::new(reader)),
            Format::Json => Rows::Json(JsonRows::new(reader)),
            Format::Jsonl => Rows::Jsonl(JsonlRows::new(reader)),
        })
    }
}

/// A row and the line it starts on; `Err` holds the problem with the row.
#[derive(Debug)]
pub struct Row {
    pub line: u64,
    pub record: Result<RawRecord, String>,
}

pub enum Rows {
    Csv(CsvRows),
    Json(JsonRows),
    Jsonl(JsonlRows),
}

impl Iterator for Rows {
    type Item = Row;
    fn next(&mut self) -> Option<Row> {
        match self {
            Rows::Csv(r) => r.next(),
            Rows::Json(r) => r.next(),
            Rows::Jsonl(r) => r.next(),
        }
    }
}

// ---------------------------------------------------------------- CSV

pub struct CsvRows {
    reader: csv::Reader<CrlfToLf<BufReader<File>>>,
    /// Column index → field of [`RawRecord`] (index into [`COLUMNS`]).
    columns: Option<Vec<usize>>,
    done: bool,
    record: csv::StringRecord,
}

impl CsvRows {
    fn new(reader: BufReader<File>) -> CsvRows {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(CSV_BUFFER)
            .from_reader(CrlfToLf::new(reader));
        CsvRows {
            reader,
            columns: None,
            done: false,
            record: csv::StringRecord::new(),
        }
    }

    fn fail(&mut self, line: u64, message: String) -> Option<Row> {
        self.done = true;
        Some(Row {
            line,
            record: Err(message),
        })
    }

    /// Read the next record into `self.record`, bounded: the parser may not
    /// be handed more than [`CSV_CUT`] bytes past where it starts looking
    /// for the row, so a row without end stops with an error instead of
    /// growing in memory. The exact limit, [`MAX_ENTRY`], is checked on the
    /// row once read.
    fn read_bounded(&mut self) -> ReadRow {
        let start = self.reader.position().clone();
        self.reader
            .get_mut()
            .allow_until(start.byte() + CSV_CUT as u64);
        let read = self.reader.read_record(&mut self.record);
        let end = self.reader.position().clone();
        match read {
            Ok(false) => ReadRow::End,
            Ok(true) => {
                // The parser skips blank lines before a row and reports the
                // position where it started looking, so count back from the
                // end instead: the row's own line breaks are those inside
                // its cells plus its terminator (none at the end of the
                // file). Each skipped blank line is one byte ("\n").
                let inside = self
                    .record
                    .as_byte_record()
                    .as_slice()
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
                let terminator = u64::from(!self.reader.get_ref().ends_unterminated_at(end.byte()));
                let line = end
                    .line()
                    .saturating_sub(inside + terminator)
                    .max(start.line());
                let skipped = line - start.line();
                let length = (end.byte() - start.byte()).saturating_sub(skipped + terminator);
                if length > MAX_ENTRY as u64 {
                    ReadRow::TooLong { line }
                } else {
                    ReadRow::Record { line }
                }
            }
            Err(e) if is_row_too_long(&e) => ReadRow::Cut { line: start.line() },
            Err(e) => ReadRow::Error(e),
        }
    }

    /// The header row names the columns; any order, any subset that
    /// includes device_id. Unknown or repeated names stop the file.
    fn read_header(&mut self) -> Result<(), (u64, String)> {
        let err = |line, message| (line, message);
        match self.read_bounded() {
            ReadRow::Record { .. } => {}
            ReadRow::End => return Err(err(1, "the file is empty (no header row)".into())),
            ReadRow::TooLong { line } => return Err(err(line, RowTooLong.to_string())),
            ReadRow::Cut { line } => return Err(err(line, cut_message())),
            ReadRow::Error(e) => return Err(err(csv_line(&e), csv_message(&e))),
        }
        let mut columns = Vec::new();
        let mut problems = Vec::new();
        for name in self.record.iter() {
            let clean = name
                .trim_start_matches('\u{feff}')
                .trim()
                .to_ascii_lowercase();
            match COLUMNS.iter().position(|c| *c == clean) {
                Some(i) if columns.contains(&i) => {
                    problems.push(format!("column {clean} appears twice"))
                }
                Some(i) => columns.push(i),
                None => problems.push(format!(
                    "unknown column {} (known columns: {})",
                    crate::record::quoted(name),
                    COLUMNS.join(", ")
                )),
            }
        }
        if problems.is_empty() && !columns.contains(&0) {
            problems.push("the header has no device_id column".into());
        }
        if !problems.is_empty() {
            return Err(err(1, problems.join("; ")));
        }
        self.columns = Some(columns);
        Ok(())
    }
}

impl Iterator for CsvRows {
    type Item = Row;
    fn next(&mut self) -> Option<Row> {
        if self.done {
            return None;
        }
        if self.columns.is_none()
            && let Err((line, message)) = self.read_header()
        {
            return self.fail(line, message);
        }
        match self.read_bounded() {
            ReadRow::End => {
                self.done = true;
                None
            }
            ReadRow::Error(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => Some(Row {
                line: csv_line(&e),
                record: Err(csv_message(&e)),
            }),
            ReadRow::Error(e) => {
                let (line, msg) = (csv_line(&e), csv_message(&e));
                self.fail(line, msg)
            }
            // Cut off while reading: the parser lost its place, stop here.
            ReadRow::Cut { line } => self.fail(line, cut_message()),
            // Read whole but too long: report it and go on.
            ReadRow::TooLong { line } => Some(Row {
                line,
                record: Err(RowTooLong.to_string()),
            }),
            ReadRow::Record { line } => {
                let columns = self.columns.as_ref()?;
                if self.record.len() != columns.len() {
                    return Some(Row {
                        line,
                        record: Err(format!(
                            "the row has {} fields but the header has {}",
                            self.record.len(),
                            columns.len()
                        )),
                    });
                }
                let mut raw = RawRecord::default();
                for (cell, col) in self.record.iter().zip(columns) {
                    let value = unescape_cell(cell).to_string();
                    let slot = match col {
                        0 => {
                            raw.device_id = value;
                            continue;
                        }
                        1 => &mut raw.public_key,
                        2 => &mut raw.key_format,
                        3 => &mut raw.mac,
                        4 => &mut raw.secret,
                        5 => {
                            raw.expires = Some(crate::record::Expires::Text(value))
                                .filter(|_| !cell.is_empty());
                            continue;
                        }
                        6 => &mut raw.note,
                        _ => &mut raw.setup_verifier,
                    };
                    *slot = Some(value).filter(|v| !v.is_empty());
                }
                Some(Row {
                    line,
                    record: Ok(raw),
                })
            }
        }
    }
}

/// Turns CRLF into LF before the CSV parser sees it. The parser takes CRLF
/// fine, but it counts a record that follows one as starting a line early,
/// and every error message carries that line number.
pub struct CrlfToLf<R> {
    inner: R,
    raw: Vec<u8>,
    /// Converted bytes not handed out yet: `ready[pos..]`.
    ready: Vec<u8>,
    pos: usize,
    /// A CR at the end of the last raw read; what follows decides its fate.
    held_cr: bool,
    eof: bool,
    /// Bytes handed out so far, and how far [`Self::allow_until`] lets
    /// reads go (see [`CsvRows::read_bounded`]).
    handed: u64,
    allowed: u64,
    /// The last byte handed out.
    last: Option<u8>,
}

impl<R: Read> CrlfToLf<R> {
    fn new(inner: R) -> Self {
        CrlfToLf {
            inner,
            raw: vec![0; 64 * 1024],
            ready: Vec::with_capacity(64 * 1024),
            pos: 0,
            held_cr: false,
            eof: false,
            handed: 0,
            allowed: u64::MAX,
            last: None,
        }
    }

    /// Whether the stream ends at `offset` (everything was handed out and
    /// the input is exhausted) without a final line break: a row that ends
    /// there has no terminator.
    fn ends_unterminated_at(&self, offset: u64) -> bool {
        self.eof
            && self.pos == self.ready.len()
            && self.handed == offset
            && self.last != Some(b'\n')
    }

    /// Reads past this offset (of the converted stream) fail with
    /// [`RowTooLong`].
    fn allow_until(&mut self, offset: u64) {
        self.allowed = offset;
    }

    fn fill(&mut self) -> std::io::Result<()> {
        self.ready.clear();
        self.pos = 0;
        while self.ready.is_empty() && !self.eof {
            let n = self.inner.read(&mut self.raw)?;
            if n == 0 {
                self.eof = true;
                if std::mem::take(&mut self.held_cr) {
                    self.ready.push(b'\r');
                }
                break;
            }
            // Copy the runs between CRs whole; look closer only at a CR.
            let mut rest = &self.raw[..n];
            while !rest.is_empty() {
                if std::mem::take(&mut self.held_cr) && rest[0] != b'\n' {
                    self.ready.push(b'\r');
                }
                match rest.iter().position(|&b| b == b'\r') {
                    Some(at) => {
                        self.ready.extend_from_slice(&rest[..at]);
                        self.held_cr = true;
                        rest = &rest[at + 1..];
                    }
                    None => {
                        self.ready.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.ready.len() {
            self.fill()?;
        }
        let room = usize::try_from(self.allowed.saturating_sub(self.handed)).unwrap_or(usize::MAX);
        let n = out.len().min(self.ready.len() - self.pos).min(room);
        if room == 0 && self.pos < self.ready.len() && !out.is_empty() {
            return Err(row_too_long_io());
        }
        out[..n].copy_from_slice(&self.ready[self.pos..self.pos + n]);
        self.pos += n;
        self.handed += n as u64;
        if n > 0 {
            self.last = Some(out[n - 1]);
        }
        Ok(n)
    }
}

/// Export protects cells from spreadsheet formula injection by putting an
/// apostrophe in front of any cell that starts with `= + - @ TAB CR` or an
/// apostrophe (see [`crate::export::escape_cell`]); import takes it off again.
pub fn unescape_cell(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// What [`CsvRows::read_bounded`] found; `line` is where the row starts.
enum ReadRow {
    Record {
        line: u64,
    },
    End,
    /// The row is over [`MAX_ENTRY`] bytes.
    TooLong {
        line: u64,
    },
    /// Reading was stopped [`CSV_CUT`] bytes after `line` with no row
    /// ended.
    Cut {
        line: u64,
    },
    Error(csv::Error),
}

/// The CSV parser's own buffer.
const CSV_BUFFER: usize = 64 * 1024;

/// How far the parser may read, from where it starts looking for a row,
/// before the file is given up: well past [`MAX_ENTRY`] and the parser's
/// read-ahead, so that runs of blank lines before a row do not count, and
/// still a small bound on memory.
const CSV_CUT: usize = 1024 * 1024;

fn cut_message() -> String {
    format!(
        "no row ends within {} MiB from here (a row is at most {MAX_ENTRY} bytes); the rest of the file was not read",
        CSV_CUT >> 20
    )
}

#[derive(Debug, thiserror::Error)]
#[error("the row is longer than {MAX_ENTRY} bytes")]
struct RowTooLong;

fn row_too_long_io() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, RowTooLong)
}

fn is_row_too_long(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io)
        if io.get_ref().is_some_and(|inner| inner.is::<RowTooLong>()))
}

fn csv_line(e: &csv::Error) -> u64 {
    e.position().map_or(0, |p| p.line())
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("field {} is not valid UTF-8", err.field() + 1)
        }
        csv::ErrorKind::Io(io) => format!("read error: {io}"),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------- JSON Lines

pub struct JsonlRows {
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl JsonlRows {
    fn new(reader: BufReader<File>) -> JsonlRows {
        JsonlRows {
            reader,
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }
}

impl Iterator for JsonlRows {
    type Item = Row;
    fn next(&mut self) -> Option<Row> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            // Read at most one entry's worth (plus the newline) so a file
            // without line breaks cannot exhaust memory.
            let limit = (MAX_ENTRY + 2) as u64;
            let read = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf);
            self.line += 1;
            let line = self.line;
            match read {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Row {
                        line,
                        record: Err(format!("read error: {e}")),
                    });
                }
                Ok(_) => {}
            }
            if self.buf.len() as u64 >= limit && self.buf.last() != Some(&b'\n') {
                // Skip the rest of the over-long line.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    match (&mut self.reader)
                        .take(1 << 20)
                        .read_until(b'\n', &mut sink)
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) if sink.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
                return Some(Row {
                    line,
                    record: Err(format!("the line is longer than {MAX_ENTRY} bytes")),
                });
            }
            let mut text: &[u8] = &self.buf;
            if line == 1 {
                text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Row {
                line,
                record: parse_json(text),
            });
        }
    }
}

/// One JSON entry. A problem names the field it is in ("mac: invalid type:
/// integer `7`, expected a string"); serde_json's "at line L column C" is
/// left off, the caller reports the line itself.
fn parse_json(text: &[u8]) -> Result<RawRecord, String> {
    // serde would accept an array for a struct and name the type otherwise.
    if !idprov_proto::json::is_object(text) {
        return Err("an entry must be a JSON object ({\"device_id\": ..., ...})".into());
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let record = serde_path_to_error::deserialize::<_, RawRecord>(&mut de).map_err(|e| {
        let message = e.inner().to_string();
        let message = match message.rfind(" at line ") {
            Some(i) => &message[..i],
            None => &message,
        };
        match e.path().to_string().as_str() {
            // Only a value of the wrong type needs its field named: syntax
            // errors have no field, "unknown field `x`" names it already.
            _ if !e.inner().is_data() || message.starts_with("unknown field") => {
                message.to_string()
            }
            "." | "?" | "" => message.to_string(),
            path => format!("{path}: {message}"),
        }
    })?;
    de.end()
        .map_err(|_| "unexpected data after the entry".to_string())?;
    Ok(record)
}

// ---------------------------------------------------------------- JSON array

/// A JSON file is one array of entry objects. It is cut into elements by a
/// small scanner (strings, escapes and nesting only) so that each element
/// can be parsed on its own, with its line number, in constant memory.
pub struct JsonRows {
    bytes: std::io::Bytes<BufReader<File>>,
    peeked: Option<u8>,
    line: u64,
    state: JsonState,
    buf: Vec<u8>,
    /// A problem found after the last element, reported after it.
    pending: Option<Row>,
}

#[derive(PartialEq)]
enum JsonState {
    Start,
    Elements,
    Done,
}

impl JsonRows {
    fn new(reader: BufReader<File>) -> JsonRows {
        JsonRows {
            bytes: reader.bytes(),
            peeked: None,
            line: 1,
            state: JsonState::Start,
            buf: Vec::new(),
            pending: None,
        }
    }

    fn byte(&mut self) -> Result<Option<u8>, String> {
        if let Some(b) = self.peeked.take() {
            return Ok(Some(b));
        }
        match self.bytes.next() {
            None => Ok(None),
            Some(Err(e)) => Err(format!("read error: {e}")),
            Some(Ok(b)) => {
                if b == b'\n' {
                    self.line += 1;
                }
                Ok(Some(b))
            }
        }
    }

    fn skip_ws(&mut self) -> Result<Option<u8>, String> {
        loop {
            match self.byte()? {
                Some(b) if b.is_ascii_whitespace() => {}
                other => return Ok(other),
            }
        }
    }

    fn fail(&mut self, line: u64, message: String) -> Option<Row> {
        self.state = JsonState::Done;
        Some(Row {
            line,
            record: Err(message),
        })
    }

    /// Read one element whose first byte is `first`; stops after the `,` or
    /// `]` that follows it. Returns whether the array ended.
    fn element(&mut self, first: u8) -> Result<bool, String> {
        self.buf.clear();
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut b = first;
        loop {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b']' => return Ok(true),
                    b',' if depth == 0 => return Ok(false),
                    _ => {}
                }
            }
            if self.buf.len() <= MAX_ENTRY {
                self.buf.push(b);
            }
            b = match self.byte()? {
                Some(b) => b,
                None => return Err("unexpected end of file: the array is not closed".into()),
            };
        }
    }
}

impl Iterator for JsonRows {
    type Item = Row;
    fn next(&mut self) -> Option<Row> {
        if let Some(row) = self.pending.take() {
            return Some(row);
        }
        loop {
            match self.state {
                JsonState::Done => return None,
                JsonState::Start => {
                    let first = match self.skip_ws() {
                        Ok(b) => b,
                        Err(e) => return self.fail(self.line, e),
                    };
                    // A UTF-8 byte order mark is allowed before the array.
                    let first = if first == Some(0xef) {
                        let bom = (self.byte(), self.byte());
                        if bom != (Ok(Some(0xbb)), Ok(Some(0xbf))) {
                            return self
                                .fail(1, "the file does not start with a JSON array".into());
                        }
                        match self.skip_ws() {
                            Ok(b) => b,
                            Err(e) => return self.fail(self.line, e),
                        }
                    } else {
                        first
                    };
                    if first != Some(b'[') {
                        return self.fail(
                            self.line,
                            "the file does not start with a JSON array ([ {...}, ... ])".into(),
                        );
                    }
                    self.state = JsonState::Elements;
                    // An empty array.
                    match self.skip_ws() {
                        Ok(Some(b']')) => {
                            self.state = JsonState::Done;
                            return self.trailing();
                        }
                        Ok(Some(b)) => self.peeked = Some(b),
                        Ok(None) => {
                            return self.fail(
                                self.line,
                                "unexpected end of file: the array is not closed".into(),
                            );
                        }
                        Err(e) => return self.fail(self.line, e),
                    }
                }
                JsonState::Elements => {
                    let first = match self.skip_ws() {
                        Ok(Some(b)) => b,
                        Ok(None) => {
                            return self.fail(
                                self.line,
                                "unexpected end of file: the array is not closed".into(),
                            );
                        }
                        Err(e) => return self.fail(self.line, e),
                    };
                    let line = self.line;
                    let ended = match self.element(first) {
                        Ok(ended) => ended,
                        Err(e) => return self.fail(line, e),
                    };
                    let text = std::mem::take(&mut self.buf);
                    let record = if text.iter().all(u8::is_ascii_whitespace) {
                        Err("empty array element (stray comma?)".to_string())
                    } else if text.len() > MAX_ENTRY {
                        Err(format!("the entry is longer than {MAX_ENTRY} bytes"))
                    } else {
                        parse_json(&text)
                    };
                    self.buf = text;
                    if ended {
                        self.state = JsonState::Done;
                        self.pending = self.trailing();
                    }
                    return Some(Row { line, record });
                }
            }
        }
    }
}

impl JsonRows {
    /// After the closing bracket only whitespace may follow.
    fn trailing(&mut self) -> Option<Row> {
        match self.skip_ws() {
            Ok(None) => None,
            Ok(Some(_)) => Some(Row {
                line: self.line,
                record: Err("unexpected data after the closing ]".into()),
            }),
            Err(e) => Some(Row {
                line: self.line,
                record: Err(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(input: &[u8], step: usize) -> Vec<u8> {
        // A reader that returns at most `step` bytes per call, to split
        // CRLF pairs across reads.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(out.len()).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = CrlfToLf::new(Trickle(input, step));
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| out).unwrap_or_default()
    }

    #[test]
    fn crlf_becomes_lf_across_reads() {
        for step in [1, 2, 3, 100] {
            assert_eq!(convert(b"a\r\nb\r\n", step), b"a\nb\n");
            assert_eq!(convert(b"a\rb\r", step), b"a\rb\r");
            assert_eq!(convert(b"\r\r\n\n", step), b"\r\n\n");
        }
    }
}

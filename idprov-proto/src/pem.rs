//! The one PEM parser for text that comes from outside (device keys, CSRs,
//! OOB lists, keys and CAs an administrator uploads): exactly one block in
//! RFC 7468's strict form. The BEGIN and END labels must be equal — a
//! parser that only looks for "-----END " lets a block claim to be one
//! thing at the top and another at the bottom — the body is base64 with
//! canonical padding and no headers, and nothing but whitespace stands
//! before or after the block.

use base64::Engine;

/// Longest label shown in a message (labels come from outside).
const LABEL_SHOWN: usize = 40;

/// Why a PEM text was refused. Messages carry labels (short, printable),
/// never the encoded data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("no PEM block (expected a -----BEGIN ...----- line)")]
    NoBlock,
    #[error("malformed PEM boundary line")]
    Boundary,
    #[error("the PEM block labelled {0:?} has no END line")]
    Unterminated(String),
    #[error("the PEM block begins as {begin:?} but ends as {end:?}")]
    LabelMismatch { begin: String, end: String },
    #[error("the PEM block's content is not valid base64")]
    Base64,
    #[error("text before or after the PEM block; send exactly one block")]
    ExtraData,
}

/// One decoded PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

/// Parse `text` as exactly one PEM block (whitespace around it allowed).
pub fn parse_one(text: &str) -> Result<Block, PemError> {
    let mut lines = text
        .trim()
        .lines()
        .map(|l| l.trim_end_matches([' ', '\t', '\r']));
    let first = lines.next().ok_or(PemError::NoBlock)?;
    let Some(label) = boundary(first, "BEGIN") else {
        return Err(if text.contains("-----BEGIN ") {
            if first.starts_with("-----BEGIN ") {
                PemError::Boundary
            } else {
                PemError::ExtraData
            }
        } else {
            PemError::NoBlock
        });
    };
    let mut b64 = String::new();
    let mut ended = false;
    for line in lines.by_ref() {
        if line.starts_with("-----END") {
            let end = boundary(line, "END").ok_or(PemError::Boundary)?;
            if end != label {
                return Err(PemError::LabelMismatch {
                    begin: shown(label),
                    end: shown(end),
                });
            }
            ended = true;
            break;
        }
        if line.starts_with("-----") {
            return Err(PemError::Boundary);
        }
        b64.push_str(line);
    }
    if !ended {
        return Err(PemError::Unterminated(shown(label)));
    }
    if lines.next().is_some() {
        return Err(PemError::ExtraData);
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| PemError::Base64)?;
    Ok(Block {
        label: label.to_string(),
        der,
    })
}

/// The label of `-----{kind} LABEL-----`, if the line is exactly that and
/// the label follows RFC 7468's grammar (printable ASCII, words separated
/// by one space or hyphen).
fn boundary<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    let label = line
        .strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")?;
    let chars_ok = label
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) || b == b' ');
    let separators_ok = !label.starts_with([' ', '-'])
        && !label.ends_with([' ', '-'])
        && !label.contains("  ")
        && !label.contains("--")
        && !label.contains(" -")
        && !label.contains("- ");
    (!label.is_empty() && chars_ok && separators_ok).then_some(label)
}

fn shown(label: &str) -> String {
    label.chars().take(LABEL_SHOWN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY-----\n";

    #[test]
    fn one_strict_block() -> Result<(), PemError> {
        let b = parse_one(&format!("\r\n  {}  \n", OK.replace('\n', "\r\n")))?;
        assert_eq!(
            (b.label.as_str(), b.der.as_slice()),
            ("PUBLIC KEY", &[0, 1, 2][..])
        );
        let mismatch = OK.replace("END PUBLIC KEY", "END CERTIFICATE");
        assert_eq!(
            parse_one(&mismatch),
            Err(PemError::LabelMismatch {
                begin: "PUBLIC KEY".into(),
                end: "CERTIFICATE".into()
            })
        );
        for (text, want) in [
            ("hello", PemError::NoBlock),
            ("", PemError::NoBlock),
            (
                "-----BEGIN PUBLIC KEY-----\nAAEC\n",
                PemError::Unterminated("PUBLIC KEY".into()),
            ),
            (
                "-----BEGIN PUBLIC KEY----\nAAEC\n-----END PUBLIC KEY-----",
                PemError::Boundary,
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY",
                PemError::Boundary,
            ),
            (
                "-----BEGIN PUBLIC  KEY-----\nAAEC\n-----END PUBLIC  KEY-----",
                PemError::Boundary,
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAE\n-----END PUBLIC KEY-----",
                PemError::Base64,
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nProc-Type: 4,ENCRYPTED\nAAEC\n-----END PUBLIC KEY-----",
                PemError::Base64,
            ),
            (
                "note\n-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY-----",
                PemError::ExtraData,
            ),
            (&format!("{OK}{OK}"), PemError::ExtraData),
            (&format!("{OK}trailer"), PemError::ExtraData),
        ] {
            assert_eq!(parse_one(text), Err(want), "{text:?}");
        }
        Ok(())
    }
}

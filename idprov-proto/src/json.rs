//! The rule for JSON request bodies, shared by the daemon and the tools that
//! read entries from files: only a JSON object is a body. serde maps an
//! array onto a struct by position, which skips the field names and with
//! them the unknown-field rule; a scalar or `null` is no request at all.

use serde::de::DeserializeOwned;

/// Why a JSON body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the body must be a JSON object ({{\"field\": ...}}), not an array, a string, a number or null"
    )]
    NotAnObject,
    #[error("invalid JSON body: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// True when the first JSON token of `bytes` opens an object. What follows
/// is left to the parser, which refuses anything after the closing brace.
pub fn is_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

/// Parse a request body that must be one JSON object.
pub fn from_object_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    if !is_object(bytes) {
        return Err(BodyError::NotAnObject);
    }
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Two {
        a: u8,
        b: bool,
    }

    #[test]
    fn only_objects_are_bodies() {
        assert!(from_object_slice::<Two>(br#" {"a":1,"b":true} "#).is_ok());
        assert!(
            serde_json::from_slice::<Two>(b"[1, true]").is_ok(),
            "serde's leniency"
        );
        for bad in [
            &b"[1, true]"[..],
            b" \n[1,true]",
            b"null",
            b"1",
            b"\"x\"",
            b"",
        ] {
            assert!(
                matches!(from_object_slice::<Two>(bad), Err(BodyError::NotAnObject)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            from_object_slice::<Two>(br#"{"a":1,"b":true,"c":0}"#),
            Err(BodyError::Invalid(_))
        ));
    }
}

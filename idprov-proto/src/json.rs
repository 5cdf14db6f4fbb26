//! The rule for JSON request bodies, shared by the daemon and the tools that
//! read entries from files: only a JSON object is a body. serde maps an
//! array onto a struct by position, which skips the field names and with
//! them the unknown-field rule; a scalar or `null` is no request at all.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

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

/// `#[serde(deserialize_with = "vec_of_objects")]` for a list of structs
/// inside a body: each element must be a JSON object too, so that an entry
/// given as an array cannot be mapped by position either.
pub fn vec_of_objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Vec::<Object<T>>::deserialize(d)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

/// A `T` that only a map (a JSON object) deserializes into.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(OnlyMaps(PhantomData))
    }
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct List {
        #[serde(deserialize_with = "vec_of_objects")]
        items: Vec<Two>,
    }

    #[test]
    fn list_elements_must_be_objects_too() {
        let ok = from_object_slice::<List>(br#"{"items":[{"a":1,"b":true}]}"#);
        assert!(ok.is_ok_and(|l| l.items.len() == 1));
        let err = from_object_slice::<List>(br#"{"items":[[1,true]]}"#).err();
        assert!(err.is_some_and(|e| e.to_string().contains("a JSON object")));
        let err = from_object_slice::<List>(br#"{"items":[{"a":1,"b":true,"c":0}]}"#).err();
        assert!(err.is_some_and(|e| e.to_string().contains("unknown field")));
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

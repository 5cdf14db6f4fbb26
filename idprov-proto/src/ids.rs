//! Identifiers with a strict grammar, parsed at every edge (security rule 7).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("device id must be 1 to {max} characters", max = DeviceId::MAX_LEN)]
    DeviceIdLength,
    #[error(
        "device id may contain only ASCII letters, digits and . _ : - and must start with a letter or digit"
    )]
    DeviceIdChars,
    #[error("MAC address must be six hex octets separated by ':' or '-' (e.g. 02:00:5e:10:00:01)")]
    Mac,
}

/// A device identifier: 1–128 ASCII characters from `[A-Za-z0-9._:-]`,
/// starting with a letter or digit. Nothing else can be constructed, so a
/// `DeviceId` is always safe to print in a log, a terminal or a CSV cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(IdError::DeviceIdLength);
        }
        let mut chars = s.bytes();
        let first_ok = chars.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !first_ok || !rest_ok {
            return Err(IdError::DeviceIdChars);
        }
        Ok(DeviceId(s.to_owned()))
    }
}

impl TryFrom<&str> for DeviceId {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DeviceId {
    /// Honours width, fill and alignment (`{:<32}`), so tables line up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An EUI-48 MAC address, normalised to lower-case colon form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Multicast bit set (never a device's own address).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    /// Locally administered bit set (randomised or software-chosen).
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let parts: Vec<&str> = if s.contains(':') {
            s.split(':').collect()
        } else {
            s.split('-').collect()
        };
        if parts.len() != 6 {
            return Err(IdError::Mac);
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(IdError::Mac);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| IdError::Mac)?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        // Through `pad`, so width and alignment apply to the whole address.
        f.pad(&format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Escape a string that came from outside (a device, a file) for display in a
/// terminal or a log line: control characters, escapes and non-ASCII are shown
/// as `\u{..}` so no terminal sequence can pass through.
pub fn escape_untrusted(s: &str) -> String {
    s.chars().flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_honours_width_and_alignment() {
        let id: DeviceId = "ab".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("[{id:<5}]"), "[ab   ]");
        assert_eq!(format!("[{id:>5}]"), "[   ab]");
        let mac: MacAddr = "02:00:5e:10:00:01"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("[{mac:<18}]"), "[02:00:5e:10:00:01 ]");
    }

    #[test]
    fn device_id_grammar() {
        assert!("sensor-01".parse::<DeviceId>().is_ok());
        assert!("a".parse::<DeviceId>().is_ok());
        assert!("urn:dev:1.2_3".parse::<DeviceId>().is_ok());
        assert_eq!("".parse::<DeviceId>(), Err(IdError::DeviceIdLength));
        assert_eq!("-x".parse::<DeviceId>(), Err(IdError::DeviceIdChars));
        assert_eq!("a b".parse::<DeviceId>(), Err(IdError::DeviceIdChars));
        assert_eq!(
            "a\u{1b}[2J".parse::<DeviceId>(),
            Err(IdError::DeviceIdChars)
        );
        assert_eq!("é".parse::<DeviceId>(), Err(IdError::DeviceIdChars));
        assert!("x".repeat(129).parse::<DeviceId>().is_err());
        assert!("x".repeat(128).parse::<DeviceId>().is_ok());
        assert_eq!(DeviceId::try_from("sensor-01"), "sensor-01".parse());
        assert_eq!(
            DeviceId::try_from(String::from("-x")),
            Err(IdError::DeviceIdChars)
        );
    }

    #[test]
    fn mac_parse() {
        let m: MacAddr = "AA-bb-CC-dd-ee-FF".parse().unwrap_or(MacAddr([0; 6]));
        assert_eq!(m.to_string(), "aa:bb:cc:dd:ee:ff");
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:fg".parse::<MacAddr>().is_err());
        assert!("aabb.ccdd.eeff".parse::<MacAddr>().is_err());
        assert!("+a:bb:cc:dd:ee:ff".parse::<MacAddr>().is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_untrusted("a\u{1b}[31m"), "a\\u{1b}[31m");
    }
}

//! Auto-approval policy on the wire and in the configuration: rules that
//! decide a device that would otherwise wait for a person, and enrollment
//! windows that admit matching unknown devices for a while
//! (`docs/protocol.md` §9 "Policy"). Every field is parsed into its type
//! when it is read (a TOML file or a JSON body), so a rule that is stored
//! or evaluated is always well formed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::MacAddr;
use crate::keys::KeyAlg;

/// Every flag a request or a record can carry. Stored and shown by its
/// snake_case name (`as_str`), which is the wire and audit format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// A provisioned device asks again while its last token is valid.
    RepeatProvision,
    KeyReused,
    MacReused,
    MacMismatch,
    MacSuspicious,
    ProofFailures,
    /// A known device presented a key that is not one of its keys.
    KeyMismatch,
    /// A second request for a pending device ID came with another key.
    KeyConflict,
    /// A pending device asked again with another MAC.
    MacChanged,
}

impl Flag {
    /// The flags raised on requests; only these can be listed in
    /// `flags.hold` or matched by a rule.
    pub const CHECKED: [Flag; 6] = [
        Flag::RepeatProvision,
        Flag::KeyReused,
        Flag::MacReused,
        Flag::MacMismatch,
        Flag::MacSuspicious,
        Flag::ProofFailures,
    ];

    /// Flags about the claimed MAC's relation to other IDs or the wire.
    pub fn is_mac_based(self) -> bool {
        matches!(self, Flag::MacReused | Flag::MacMismatch)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Flag::RepeatProvision => "repeat_provision",
            Flag::KeyReused => "key_reused",
            Flag::MacReused => "mac_reused",
            Flag::MacMismatch => "mac_mismatch",
            Flag::MacSuspicious => "mac_suspicious",
            Flag::ProofFailures => "proof_failures",
            Flag::KeyMismatch => "key_mismatch",
            Flag::KeyConflict => "key_conflict",
            Flag::MacChanged => "mac_changed",
        }
    }

    /// The flag a stored name stands for (records keep names).
    pub fn from_name(s: &str) -> Option<Flag> {
        const ALL: [Flag; 9] = [
            Flag::RepeatProvision,
            Flag::KeyReused,
            Flag::MacReused,
            Flag::MacMismatch,
            Flag::MacSuspicious,
            Flag::ProofFailures,
            Flag::KeyMismatch,
            Flag::KeyConflict,
            Flag::MacChanged,
        ];
        ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

fn bad<T>(m: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(m.into()))
}

/// Implements `FromStr`-based serde and `Display` for a string newtype.
macro_rules! string_form {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = PolicyError;
            fn try_from(s: String) -> Result<Self, PolicyError> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
    // A newtype over its text: shown as it is.
    ($t:ty, text) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        string_form!($t);
    };
}

/// A device-ID pattern: the device ID grammar plus `*` (any run, also
/// empty) and `?` (one character); 1–128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdGlob(String);

impl FromStr for IdGlob {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        if s.is_empty() || s.len() > 128 {
            return bad("a device ID pattern has 1 to 128 characters");
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-*?".contains(&b));
        if !ok {
            return bad(format!(
                "device ID pattern {s:?}: only A-Z a-z 0-9 . _ : - and the wildcards * ?"
            ));
        }
        Ok(IdGlob(s.to_string()))
    }
}

string_form!(IdGlob, text);

impl IdGlob {
    /// Whether the whole of `id` matches. Iterative with one backtrack
    /// point, so a pattern of many `*` costs linear time, not exponential.
    pub fn matches(&self, id: &str) -> bool {
        let (p, s) = (self.0.as_bytes(), id.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

/// An address range, `10.1.0.0/16` or `fd00::/8`; a bare address is a
/// range of one. IPv4-mapped IPv6 peers are compared as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let Ok(addr) = a.parse::<IpAddr>() else {
            return bad(format!("address range {s:?}: not an IP address"));
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return bad(format!("address range {s:?}: prefix must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
string_form!(Cidr);

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - u32::from(self.prefix));
        bits(ip) & mask == bits(self.addr) & mask
    }
}

/// The first three bytes of a MAC address (the vendor's OUI): `00:1a:2b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacOui([u8; 3]);

impl FromStr for MacOui {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let mut out = [0u8; 3];
        if parts.len() != 3 {
            return bad(format!("MAC OUI {s:?}: three bytes, like 00:1a:2b"));
        }
        for (o, p) in out.iter_mut().zip(&parts) {
            match u8::from_str_radix(p, 16) {
                Ok(b) if p.len() == 2 => *o = b,
                _ => return bad(format!("MAC OUI {s:?}: three bytes, like 00:1a:2b")),
            }
        }
        Ok(MacOui(out))
    }
}

impl fmt::Display for MacOui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}")
    }
}
string_form!(MacOui);

impl MacOui {
    pub fn matches(&self, mac: MacAddr) -> bool {
        mac.0[..3] == self.0
    }
}

/// The key type a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    Es256,
    Rs256,
}

impl KeyType {
    pub fn matches(self, alg: KeyAlg) -> bool {
        matches!(
            (self, alg),
            (KeyType::Es256, KeyAlg::ES256) | (KeyType::Rs256, KeyAlg::RS256)
        )
    }
}

/// A daily time of day, in UTC: `08:00-18:00`; a window whose end is
/// before its start runs past midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeWindow {
    from: u32,
    to: u32,
}

impl FromStr for TimeWindow {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let minute = |t: &str| -> Option<u32> {
            let (h, m) = t.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let parsed = s
            .split_once('-')
            .and_then(|(a, b)| Some((minute(a)?, minute(b)?)));
        match parsed {
            Some((from, to)) if from != to => Ok(TimeWindow { from, to }),
            Some(_) => bad(format!("time {s:?}: start and end are the same")),
            None => bad(format!("time {s:?}: HH:MM-HH:MM in UTC, like 08:00-18:00")),
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (self.from, self.to);
        write!(f, "{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
    }
}
string_form!(TimeWindow);

impl TimeWindow {
    /// Whether unix time `now` falls in the window (its end excluded).
    pub fn contains(&self, now: i64) -> bool {
        let minute = (now.rem_euclid(86_400) / 60) as u32;
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// What a rule does with a device it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Admit the device and give it its token now.
    Approve,
    /// Refuse it, as an administrator's rejection does.
    Reject,
    /// Keep it for a person (no later rule or window decides it).
    Hold,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Approve => "approve",
            RuleAction::Reject => "reject",
            RuleAction::Hold => "hold",
        }
    }
}

/// A rule's name: 1–64 of `[a-z0-9_-]`; unique among all rules. It is the
/// audit actor (`rule:NAME`) of what the rule decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RuleName(String);

impl FromStr for RuleName {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return bad(format!("rule name {s:?}: 1 to 64 of a-z 0-9 _ -"));
        }
        // The path of the dry run (`/admin/rules/dry-run`).
        if s == "dry-run" {
            return bad("rule name \"dry-run\" is reserved");
        }
        Ok(RuleName(s.to_string()))
    }
}

string_form!(RuleName, text);

impl RuleName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One rule. Every field given must match (a rule with none matches every
/// request); `flags` lists flags that must all be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: RuleName,
    pub action: RuleAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<IdGlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<KeyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_oui: Option<MacOui>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeWindow>,
}

impl Rule {
    /// What the rule matches, `key=value` separated by spaces (`any` for a
    /// rule without conditions), for tables and the TUI.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = &self.device_id {
            parts.push(format!("device_id={g}"));
        }
        if let Some(k) = self.key_type {
            parts.push(format!(
                "key_type={}",
                if k == KeyType::Es256 {
                    "es256"
                } else {
                    "rs256"
                }
            ));
        }
        if let Some(o) = self.mac_oui {
            parts.push(format!("mac_oui={o}"));
        }
        if let Some(c) = self.source {
            parts.push(format!("source={c}"));
        }
        if !self.flags.is_empty() {
            let f: Vec<_> = self.flags.iter().map(|f| f.as_str()).collect();
            parts.push(format!("flags={}", f.join(",")));
        }
        if let Some(t) = self.time {
            parts.push(format!("time={t}"));
        }
        if parts.is_empty() {
            return "any".into();
        }
        parts.join(" ")
    }
}

/// `GET /admin/rules`: the configuration's rules (read-only, evaluated
/// first) and the stored ones, with the revision of the stored list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleList {
    pub revision: u64,
    pub config: Vec<Rule>,
    pub rules: Vec<Rule>,
}

/// `PUT /admin/rules`: replace the stored list (also how to reorder).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RulesReplace {
    pub revision: u64,
    pub rules: Vec<Rule>,
}

/// `POST /admin/rules`: add one rule, at `position` (0 is first) or last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleAdd {
    pub revision: u64,
    pub rule: Rule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}

/// `PUT /admin/rules/{name}`: replace that rule (it may be renamed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleReplace {
    pub revision: u64,
    pub rule: Rule,
}

/// `POST /admin/rules/{name}/move`: move a stored rule to `position`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleMove {
    pub revision: u64,
    pub position: usize,
}

/// `DELETE /admin/rules/{name}?revision=N`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevisionQuery {
    pub revision: u64,
}

/// `POST /admin/rules/dry-run`: what `rule` (or the stored or configured
/// rule `name`) would decide among the current pending devices; with
/// neither, what the whole policy (rules, then open windows) would.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<RuleName>,
}

/// What decides a pending device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DryRunItem {
    pub device_id: crate::DeviceId,
    /// `rule:NAME` or `window:ID`.
    pub decided_by: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DryRunResult {
    pub items: Vec<DryRunItem>,
    /// Pending devices looked at.
    pub checked: u64,
}

/// `POST /admin/windows`: open an enrollment window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowOpen {
    /// Seconds it stays open (default `policy.window_default`, at most
    /// `policy.window_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<IdGlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
}

/// Why a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowClosed {
    /// Its time ran out.
    Time,
    /// It admitted `max_devices`.
    Count,
    /// An administrator closed it.
    Admin,
    /// Too many refused proofs while it was open (`policy.window_max_failed_proofs`).
    ProofFailures,
}

impl WindowClosed {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowClosed::Time => "time",
            WindowClosed::Count => "count",
            WindowClosed::Admin => "admin",
            WindowClosed::ProofFailures => "proof_failures",
        }
    }
}

/// An enrollment window (`GET /admin/windows`, events `window`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowView {
    pub id: u64,
    pub opened_by: String,
    pub opened_at: i64,
    pub closes_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<IdGlob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
    pub admitted: u32,
    /// When and why it closed; `None` while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<WindowClosed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<i64>,
}

impl WindowView {
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WindowList {
    pub items: Vec<WindowView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = |p: &str| p.parse::<IdGlob>().unwrap_or_else(|e| panic!("{e}"));
        assert!(g("kitchen-*").matches("kitchen-1"));
        assert!(g("kitchen-*").matches("kitchen-"));
        assert!(!g("kitchen-*").matches("hall-1"));
        assert!(g("s?-*-x").matches("s1-a-b-x"));
        assert!(!g("s?").matches("s12"));
        assert!(g("*").matches("anything"));
        assert!(g("a*b*c").matches("aXbYc"));
        assert!(!g("a*b*c").matches("aXbY"));
        assert!("a b".parse::<IdGlob>().is_err());
        assert!(g(&"*".repeat(100)).matches(&"a".repeat(128)));
    }

    #[test]
    fn ranges_and_ouis_and_times() -> Result<(), PolicyError> {
        let c: Cidr = "10.1.0.0/16".parse()?;
        assert!(c.contains("10.1.200.3".parse().map_err(|_| PolicyError("ip".into()))?));
        assert!(!c.contains("10.2.0.1".parse().map_err(|_| PolicyError("ip".into()))?));
        assert!(
            c.contains(
                "::ffff:10.1.0.9"
                    .parse()
                    .map_err(|_| PolicyError("ip".into()))?
            )
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0/+8".parse::<Cidr>().is_err());
        let one: Cidr = "::1".parse()?;
        assert_eq!(one.to_string(), "::1/128");
        let o: MacOui = "00-1A-2b".parse()?;
        assert_eq!(o.to_string(), "00:1a:2b");
        assert!(o.matches(MacAddr([0, 0x1a, 0x2b, 1, 2, 3])));
        assert!("00:1a".parse::<MacOui>().is_err());
        let t: TimeWindow = "22:00-06:00".parse()?;
        assert!(t.contains(23 * 3600));
        assert!(t.contains(86_400 + 5 * 3600));
        assert!(!t.contains(12 * 3600));
        assert!("25:00-06:00".parse::<TimeWindow>().is_err());
        assert!("Kitchen".parse::<RuleName>().is_err());
        Ok(())
    }

    #[test]
    fn a_rule_with_an_unknown_field_is_refused() {
        let r = serde_json::from_str::<Rule>(r#"{"name":"a","action":"approve","colour":"red"}"#);
        assert!(r.is_err());
        let r = serde_json::from_str::<Rule>(r#"{"name":"a","action":"maybe"}"#);
        assert!(r.is_err());
    }
}

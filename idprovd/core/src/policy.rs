//! Auto-approval policy (pure): which rule or enrollment window decides a
//! request that would otherwise wait for a person, and what the store
//! keeps of it. The rules of the configuration come first (read-only), then
//! the stored ones (admin API), in order; the first that decides wins. A
//! `hold` rule keeps the request for a person. Only when no rule decides
//! does an open window admit it.
//!
//! The security rule (docs/security.md "Policy"): a flag the daemon holds
//! requests for (`flags.hold`, and the flags only a record carries:
//! `key_conflict`, `mac_changed`, `key_mismatch`) stops an `approve` rule
//! unless the rule names that flag itself, and always stops a window. Paused
//! provisioning and a regressed clock refuse before any rule is read.

use std::net::IpAddr;

use idprov_proto::policy::{Flag, Rule, RuleAction, WindowClosed, WindowView};
use idprov_proto::{KeyAlg, MacAddr};
use serde::{Deserialize, Serialize};

/// What the store keeps of the policy: the stored rules with their
/// revision, and the enrollment windows (open ones and the latest closed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub rules_revision: u64,
    pub rules: Vec<Rule>,
    pub windows: Vec<WindowView>,
    /// The id the next window gets (ids are never reused).
    pub next_window: u64,
}

/// Closed windows kept for the list, besides the open ones.
pub const CLOSED_KEPT: usize = 16;

impl PolicyRecord {
    /// The window as it stands at `now`: one past its time is closed.
    pub fn window_at(w: &WindowView, now: i64) -> WindowView {
        let mut w = w.clone();
        if w.closed.is_none() && now >= w.closes_at {
            w.closed = Some(WindowClosed::Time);
            w.closed_at = Some(w.closes_at);
        }
        w
    }

    /// Drop the oldest closed windows beyond [`CLOSED_KEPT`].
    pub fn prune(&mut self) {
        let closed = self.windows.iter().filter(|w| w.closed.is_some()).count();
        let mut drop = closed.saturating_sub(CLOSED_KEPT);
        self.windows.retain(|w| {
            if drop > 0 && w.closed.is_some() {
                drop -= 1;
                return false;
            }
            true
        });
    }
}

/// What a rule or a window looks at in a request (or a pending record).
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub device_id: &'a str,
    pub alg: KeyAlg,
    pub mac: Option<MacAddr>,
    pub source: Option<IpAddr>,
    /// The request's flags and its pending record's.
    pub flags: &'a [Flag],
    pub now: i64,
}

/// What decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    Rule(idprov_proto::policy::RuleName),
    Window(u64),
}

impl Decider {
    /// The audit actor and `admitted_by`: `rule:NAME`, `window:ID`.
    pub fn actor(&self) -> String {
        match self {
            Decider::Rule(n) => format!("rule:{n}"),
            Decider::Window(id) => format!("window:{id}"),
        }
    }
}

/// A flag that keeps a request from automatic admission.
fn holding(f: Flag, hold: &[Flag]) -> bool {
    hold.contains(&f) || !Flag::CHECKED.contains(&f)
}

/// Every field the rule gives matches the candidate.
pub fn rule_matches(r: &Rule, c: &Candidate<'_>) -> bool {
    r.device_id.as_ref().is_none_or(|g| g.matches(c.device_id))
        && r.key_type.is_none_or(|k| k.matches(c.alg))
        && r.mac_oui
            .is_none_or(|o| c.mac.is_some_and(|m| o.matches(m)))
        && r.source
            .is_none_or(|n| c.source.is_some_and(|ip| n.contains(ip)))
        && r.flags.iter().all(|f| c.flags.contains(f))
        && r.time.is_none_or(|t| t.contains(c.now))
}

/// The rule matches and may act: an `approve` never overrides a holding
/// flag it does not name.
pub fn rule_decides(r: &Rule, c: &Candidate<'_>, hold: &[Flag]) -> bool {
    rule_matches(r, c)
        && (r.action != RuleAction::Approve
            || c.flags
                .iter()
                .all(|f| !holding(*f, hold) || r.flags.contains(f)))
}

/// The window is open at `now` and admits the candidate.
pub fn window_admits(w: &WindowView, c: &Candidate<'_>, hold: &[Flag]) -> bool {
    w.closed.is_none()
        && c.now < w.closes_at
        && w.max_devices.is_none_or(|m| w.admitted < m)
        && w.device_id.as_ref().is_none_or(|g| g.matches(c.device_id))
        && w.source
            .is_none_or(|n| c.source.is_some_and(|ip| n.contains(ip)))
        && !c.flags.iter().any(|f| holding(*f, hold))
}

/// The first rule (configured, then stored) that decides, else the first
/// open window that admits; `None` leaves the request to a person.
pub fn decide(
    configured: &[Rule],
    stored: &PolicyRecord,
    c: &Candidate<'_>,
    hold: &[Flag],
) -> Option<(Decider, RuleAction)> {
    if let Some(r) = configured
        .iter()
        .chain(&stored.rules)
        .find(|r| rule_decides(r, c, hold))
    {
        return Some((Decider::Rule(r.name.clone()), r.action));
    }
    stored
        .windows
        .iter()
        .find(|w| window_admits(w, c, hold))
        .map(|w| (Decider::Window(w.id), RuleAction::Approve))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn cand<'a>(id: &'a str, flags: &'a [Flag]) -> Candidate<'a> {
        Candidate {
            device_id: id,
            alg: KeyAlg::ES256,
            mac: Some(MacAddr([0, 0x1a, 0x2b, 1, 2, 3])),
            source: "10.1.2.3".parse().ok(),
            flags,
            now: 12 * 3600,
        }
    }

    #[test]
    fn each_field_matches_or_not() {
        let c = cand("kitchen-1", &[]);
        let yes = [
            r#"{"name":"a","action":"approve"}"#,
            r#"{"name":"a","action":"approve","device_id":"kitchen-*"}"#,
            r#"{"name":"a","action":"approve","key_type":"es256"}"#,
            r#"{"name":"a","action":"approve","mac_oui":"00:1a:2b"}"#,
            r#"{"name":"a","action":"approve","source":"10.1.0.0/16"}"#,
            r#"{"name":"a","action":"approve","time":"08:00-18:00"}"#,
        ];
        let no = [
            r#"{"name":"a","action":"approve","device_id":"hall-*"}"#,
            r#"{"name":"a","action":"approve","key_type":"rs256"}"#,
            r#"{"name":"a","action":"approve","mac_oui":"00:1a:2c"}"#,
            r#"{"name":"a","action":"approve","source":"10.2.0.0/16"}"#,
            r#"{"name":"a","action":"approve","time":"18:00-08:00"}"#,
            r#"{"name":"a","action":"approve","flags":["mac_reused"]}"#,
        ];
        for j in yes {
            assert!(rule_decides(&rule(j), &c, &[]), "{j}");
        }
        for j in no {
            assert!(!rule_matches(&rule(j), &c), "{j}");
        }
    }

    #[test]
    fn approve_never_overrides_a_held_flag_it_does_not_name() {
        let hold = [Flag::KeyReused, Flag::MacReused];
        let flagged = [Flag::MacReused];
        let c = cand("gw-1", &flagged);
        let any = rule(r#"{"name":"a","action":"approve"}"#);
        let named = rule(r#"{"name":"a","action":"approve","flags":["mac_reused"]}"#);
        let reject = rule(r#"{"name":"a","action":"reject"}"#);
        assert!(!rule_decides(&any, &c, &hold));
        assert!(rule_decides(&named, &c, &hold));
        assert!(rule_decides(&reject, &c, &hold));
        // A flag only a record carries can never be named: never approved.
        let conflict = [Flag::KeyConflict];
        assert!(!rule_decides(&any, &cand("gw-1", &conflict), &hold));
    }

    #[test]
    fn first_deciding_rule_wins_then_windows() {
        let stored = PolicyRecord {
            rules: vec![
                rule(r#"{"name":"hold-hall","action":"hold","device_id":"hall-*"}"#),
                rule(r#"{"name":"all","action":"reject","device_id":"*-bad"}"#),
            ],
            windows: vec![WindowView {
                id: 7,
                opened_by: "admin:a".into(),
                opened_at: 0,
                closes_at: 13 * 3600,
                device_id: None,
                source: None,
                max_devices: Some(1),
                admitted: 0,
                closed: None,
                closed_at: None,
            }],
            ..PolicyRecord::default()
        };
        let cfg = [rule(
            r#"{"name":"cfg","action":"approve","device_id":"hall-9"}"#,
        )];
        let d = |id| decide(&cfg, &stored, &cand(id, &[]), &[]);
        assert_eq!(
            d("hall-9"),
            Some((
                Decider::Rule("cfg".parse().unwrap_or_else(|_| unreachable!())),
                RuleAction::Approve
            ))
        );
        assert_eq!(d("hall-1").map(|x| x.1), Some(RuleAction::Hold));
        assert_eq!(d("x-bad").map(|x| x.1), Some(RuleAction::Reject));
        assert_eq!(
            d("kitchen"),
            Some((Decider::Window(7), RuleAction::Approve))
        );
        let mut late = cand("kitchen", &[]);
        late.now = 13 * 3600;
        assert_eq!(decide(&cfg, &stored, &late, &[]), None);
    }
}

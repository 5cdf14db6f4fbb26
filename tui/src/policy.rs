//! The Policy view's data: enrollment windows and auto-approval rules as
//! one list, and what the policy would decide for each pending device (the
//! daemon's dry run, shown in the pending view's detail).

use std::collections::HashMap;

use idprov_proto::DeviceId;
use idprov_proto::policy::{DryRunResult, Rule, RuleList, WindowView};

use crate::list::Row;

/// One row of the Policy view.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyRow {
    Window {
        key: String,
        window: WindowView,
    },
    Rule {
        key: String,
        /// Position in evaluation order (configured rules first).
        pos: usize,
        configured: bool,
        rule: Rule,
    },
}

impl Row for PolicyRow {
    type Key = String;
    fn key(&self) -> &String {
        match self {
            PolicyRow::Window { key, .. } | PolicyRow::Rule { key, .. } => key,
        }
    }
    fn haystack(&self) -> String {
        match self {
            PolicyRow::Window { window: w, .. } => format!(
                "window {} {} {}",
                w.id,
                w.device_id
                    .as_ref()
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
                w.source.map(|c| c.to_string()).unwrap_or_default()
            ),
            PolicyRow::Rule { rule, .. } => {
                format!(
                    "rule {} {} {}",
                    rule.name,
                    rule.action.as_str(),
                    rule.summary()
                )
            }
        }
    }
}

/// Everything the Policy view and the pending detail show, loaded together.
#[derive(Debug, Clone, Default)]
pub struct PolicyData {
    pub rules: RuleList,
    pub windows: Vec<WindowView>,
    pub dry_run: DryRunResult,
}

/// The rows: windows (open ones first, newest first), then the rules in
/// evaluation order (their keys sort that way).
pub fn rows(d: &PolicyData) -> Vec<PolicyRow> {
    let windows = d.windows.clone();
    let rules = d
        .rules
        .config
        .iter()
        .map(|r| (true, r))
        .chain(d.rules.rules.iter().map(|r| (false, r)))
        .enumerate()
        .map(|(pos, (configured, rule))| PolicyRow::Rule {
            // Lists keep rows in key order: windows, then rules by position.
            key: format!("1 rule {pos:06}"),
            pos,
            configured,
            rule: rule.clone(),
        });
    windows
        .into_iter()
        .map(|w| PolicyRow::Window {
            key: format!(
                "0 window {} {:020}",
                u8::from(!w.is_open()),
                u64::MAX - w.id
            ),
            window: w,
        })
        .chain(rules)
        .collect()
}

/// `device → "rule:NAME (approve)"` for the pending detail.
pub fn decided(d: &PolicyData) -> HashMap<DeviceId, String> {
    d.dry_run
        .items
        .iter()
        .map(|i| {
            (
                i.device_id.clone(),
                format!("{} ({})", i.decided_by, i.action.as_str()),
            )
        })
        .collect()
}

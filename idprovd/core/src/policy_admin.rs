//! The administrators' side of the auto-approval policy: the stored rules
//! (list, add, replace, delete, move, replace all; each edit names the
//! revision it was made on) and the dry run. Windows are in windows.rs.

use std::sync::Arc;

use idprov_proto::admin::{AdminEvent, MAX_PAGE};
use idprov_proto::policy::{
    DryRunItem, DryRunRequest, DryRunResult, Flag, Rule, RuleList, RuleName,
};

use crate::audit::{Actor, draft};
use crate::config::{Config, check_rules};
use crate::context::Core;
use crate::error::Error;
use crate::policy::{Candidate, Decider, PolicyRecord, decide, rule_decides};
use crate::records::PendingRecord;
use crate::windows::WindowGuard;

/// The policy's use cases (this module and windows.rs).
pub struct Policy {
    pub(crate) core: Core,
    pub(crate) cfg: Arc<Config>,
    /// Refused proofs while a window is open (windows.rs).
    pub guard: Arc<WindowGuard>,
}

/// One edit of the stored rules.
#[derive(Debug, Clone)]
pub enum RuleEdit {
    /// Insert at `position` (0 is first; past the end is last).
    Add {
        rule: Rule,
        position: Option<usize>,
    },
    Replace {
        name: RuleName,
        rule: Rule,
    },
    Delete(RuleName),
    Move {
        name: RuleName,
        position: usize,
    },
    ReplaceAll(Vec<Rule>),
}

impl RuleEdit {
    /// The audit entry's detail.
    fn describe(&self) -> String {
        match self {
            RuleEdit::Add { rule, position } => match position {
                Some(p) => format!("added rule {} at {p}", rule.name),
                None => format!("added rule {}", rule.name),
            },
            RuleEdit::Replace { name, rule } if *name == rule.name => {
                format!("replaced rule {name}")
            }
            RuleEdit::Replace { name, rule } => format!("replaced rule {name} by {}", rule.name),
            RuleEdit::Delete(name) => format!("deleted rule {name}"),
            RuleEdit::Move { name, position } => format!("moved rule {name} to {position}"),
            RuleEdit::ReplaceAll(r) => format!("replaced all stored rules ({})", r.len()),
        }
    }

    /// Apply to `rules`, or say why not.
    fn apply(self, rules: &mut Vec<Rule>) -> Result<(), Error> {
        let find = |rules: &[Rule], name: &RuleName| {
            rules
                .iter()
                .position(|r| r.name == *name)
                .ok_or_else(|| Error::not_found(format!("no stored rule {name}")))
        };
        match self {
            RuleEdit::Add { rule, position } => {
                let at = position.unwrap_or(rules.len()).min(rules.len());
                rules.insert(at, rule);
            }
            RuleEdit::Replace { name, rule } => {
                let i = find(rules, &name)?;
                rules[i] = rule;
            }
            RuleEdit::Delete(name) => {
                let i = find(rules, &name)?;
                rules.remove(i);
            }
            RuleEdit::Move { name, position } => {
                let i = find(rules, &name)?;
                let r = rules.remove(i);
                rules.insert(position.min(rules.len()), r);
            }
            RuleEdit::ReplaceAll(all) => *rules = all,
        }
        Ok(())
    }
}

/// The candidate a pending record makes (its stored flags, its last
/// source address).
pub(crate) fn pending_flags(p: &PendingRecord) -> Vec<Flag> {
    p.flags.iter().filter_map(|n| Flag::from_name(n)).collect()
}

impl Policy {
    pub fn new(core: Core, cfg: Arc<Config>, guard: Arc<WindowGuard>) -> Policy {
        Policy { core, cfg, guard }
    }

    fn list_of(&self, rec: &PolicyRecord) -> RuleList {
        RuleList {
            revision: rec.rules_revision,
            config: self.cfg.policy.rules.clone(),
            rules: rec.rules.clone(),
        }
    }

    pub async fn list_rules(&self) -> Result<RuleList, Error> {
        let rec = self.core.read(|v| Ok(v.policy()?)).await?;
        Ok(self.list_of(&rec.unwrap_or_default()))
    }

    /// Edit the stored rules, if `revision` is still the current one: of
    /// two administrators, exactly one wins.
    pub async fn edit_rules(
        &self,
        revision: u64,
        edit: RuleEdit,
        actor: Actor,
    ) -> Result<RuleList, Error> {
        let now = self.core.now();
        let cfg = self.cfg.clone();
        let rec = self
            .core
            .transact(move |v, u| {
                let mut rec = v.policy()?.unwrap_or_default();
                if rec.rules_revision != revision {
                    return Err(Error::conflict(format!(
                        "the rules changed since you saw them (revision {} now, you saw {revision}); reload and edit again",
                        rec.rules_revision
                    )));
                }
                let detail = edit.describe();
                edit.clone().apply(&mut rec.rules)?;
                let limit = cfg.policy.max_rules;
                if cfg.policy.rules.len() + rec.rules.len() > limit {
                    return Err(Error::bad_request(format!(
                        "at most {limit} rules (policy.max_rules), configured and stored together"
                    )));
                }
                check_rules(cfg.policy.rules.iter().chain(&rec.rules))
                    .map_err(Error::bad_request)?;
                rec.rules_revision += 1;
                u.change(crate::storage::Change::PutPolicy(rec.clone()));
                u.audit(draft(now, &actor.label(), "rules_changed", None, Some(&actor.source), detail));
                u.event(AdminEvent::RulesChanged {
                    revision: rec.rules_revision,
                });
                Ok(rec)
            })
            .await?;
        Ok(self.list_of(&rec))
    }

    /// What a rule (or the whole policy) would decide among the pending
    /// devices now. Reads at most `pending.cap` records, writes nothing.
    pub async fn dry_run(&self, req: DryRunRequest) -> Result<DryRunResult, Error> {
        let now = self.core.now();
        let cfg = self.cfg.clone();
        self.core
            .read(move |v| {
                let stored = v.policy()?.unwrap_or_default();
                let one: Option<Rule> = match (req.rule, req.name) {
                    (Some(_), Some(_)) => {
                        return Err(Error::bad_request("give a rule or a name, not both"));
                    }
                    (Some(r), None) => Some(r),
                    (None, Some(n)) => Some(
                        cfg.policy
                            .rules
                            .iter()
                            .chain(&stored.rules)
                            .find(|r| r.name == n)
                            .cloned()
                            .ok_or_else(|| Error::not_found(format!("no rule {n}")))?,
                    ),
                    (None, None) => None,
                };
                if let Some(r) = &one {
                    check_rules(std::iter::once(r)).map_err(Error::bad_request)?;
                }
                let hold = &cfg.flags.hold;
                let mut out = DryRunResult::default();
                let mut after: Option<String> = None;
                loop {
                    let (page, next, _) = v.list_pending(after.as_deref(), MAX_PAGE, &|_| true)?;
                    for p in &page {
                        out.checked += 1;
                        let flags = pending_flags(p);
                        let c = Candidate {
                            device_id: p.device_id.as_str(),
                            alg: p.key_format.alg(),
                            mac: p.mac,
                            source: p.source.parse().ok(),
                            flags: &flags,
                            now,
                        };
                        let decided = match &one {
                            Some(r) => rule_decides(r, &c, hold)
                                .then(|| (Decider::Rule(r.name.clone()), r.action)),
                            None => decide(&cfg.policy.rules, &stored, &c, hold),
                        };
                        if let Some((by, action)) = decided {
                            out.items.push(DryRunItem {
                                device_id: p.device_id.clone(),
                                decided_by: by.actor(),
                                action,
                            });
                        }
                    }
                    match next {
                        Some(n) if out.checked < cfg.pending.cap => after = Some(n),
                        _ => break,
                    }
                }
                Ok(out)
            })
            .await
    }
}

//! The policy on the request path: a request that would otherwise wait in
//! pending (an unknown device, or an OOB match held for its flags) is
//! decided by the first rule that decides, else admitted by an open
//! enrollment window (policy.rs has the rules). Runs inside the request's
//! transaction, so an admission, its window's count and its audit entry
//! commit together.

use idprov_proto::admin::{AdminEvent, DeviceStatus};
use idprov_proto::policy::{RuleAction, WindowClosed};

use crate::devices::{Devices, new_device};
use crate::error::Error;
use crate::flags::{Flag, Raised};
use crate::policy::{Candidate, Decider, PolicyRecord, decide};
use crate::policy_admin::pending_flags;
use crate::provision::{Admission, Ask, Outcome, Refusal};
use crate::storage::{Change, StoreView, Unit};
use crate::windows::record_window;

impl Devices {
    /// The policy's decision on a request about to wait for a person, if
    /// a rule or a window decides it (`None`: it waits).
    pub(crate) fn policy_tx(
        &self,
        v: &dyn StoreView,
        u: &mut Unit,
        ask: &Ask<'_>,
        raised: &[Raised],
    ) -> Result<Option<Outcome>, Error> {
        let stored = v.policy()?.unwrap_or_default();
        if self.cfg.policy.rules.is_empty() && stored.rules.is_empty() && stored.windows.is_empty()
        {
            return Ok(None);
        }
        let pending = v.pending(ask.id())?;
        // Another key than the pending request's: pending_tx refuses it.
        if pending.as_ref().is_some_and(|p| p.kid != ask.kid()) {
            return Ok(None);
        }
        let mut flags: Vec<Flag> = raised.iter().map(|r| r.flag).collect();
        for f in pending.as_ref().map(pending_flags).unwrap_or_default() {
            if !flags.contains(&f) {
                flags.push(f);
            }
        }
        let c = Candidate {
            device_id: ask.id(),
            alg: ask.key.format().alg(),
            mac: ask.req.mac,
            source: ask.src.parse().ok(),
            flags: &flags,
            now: ask.now,
        };
        let Some((by, action)) = decide(&self.cfg.policy.rules, &stored, &c, &self.cfg.flags.hold)
        else {
            return Ok(None);
        };
        let actor = by.actor();
        tracing::info!(device_id = ask.id(), decided_by = %actor, action = action.as_str(), "policy decided");
        let mut dev = new_device(ask.req, ask.key, ask.now, &actor);
        if action == RuleAction::Hold {
            return Ok(None);
        }
        if pending.is_some() {
            u.change(Change::DeletePending(ask.req.device_id.clone()));
            u.event(AdminEvent::PendingRemoved {
                device_id: ask.req.device_id.clone(),
            });
        }
        u.change(Change::NoteIdentity {
            device_id: ask.req.device_id.clone(),
            kid: ask.kid().to_string(),
            mac: ask.req.mac,
        });
        if action == RuleAction::Reject {
            dev.status = DeviceStatus::Rejected;
            dev.status_reason = Some(format!("rejected by {actor}"));
            dev.revision = 1;
            dev.flags = flags.iter().map(|f| f.as_str().to_string()).collect();
            u.put_device(&dev);
            ask.audit(u, &actor, "device_rejected", format!("key {}", ask.kid()));
            u.event(AdminEvent::DeviceUpserted { device: dev.view() });
            return Ok(Some(Outcome::Refused(Refusal::Policy)));
        }
        self.flag_device(u, &mut dev, raised, ask.now, &ask.src);
        ask.audit(
            u,
            &actor,
            "device_admitted",
            format!("admitted by {actor}, key {}", ask.kid()),
        );
        let rule = match by {
            Decider::Rule(_) => Admission::Rule,
            Decider::Window(id) => {
                self.count_admission(u, stored, id, ask.now);
                Admission::Window
            }
        };
        let creds = self.issue_with_cert(v, u, &mut dev, ask)?;
        u.event(AdminEvent::DeviceUpserted { device: dev.view() });
        Ok(Some(Outcome::Issued(creds, rule)))
    }

    /// One more device through window `id`; at its count it closes.
    fn count_admission(&self, u: &mut Unit, mut rec: PolicyRecord, id: u64, now: i64) {
        let Some(w) = rec.windows.iter_mut().find(|w| w.id == id) else {
            return;
        };
        w.admitted += 1;
        if w.max_devices.is_some_and(|m| w.admitted >= m) {
            w.closed = Some(WindowClosed::Count);
            w.closed_at = Some(now);
        }
        let w = w.clone();
        record_window(u, &rec, &w, "daemon");
    }
}

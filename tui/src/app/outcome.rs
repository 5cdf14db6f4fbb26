//! Applying the daemon's answers to decisions, and saying what happened in
//! the status line in words an administrator can act on.

use super::{App, Level};
use crate::alerts::AlertKey;
use crate::msg::{FailKind, Failure, Outcome, Verb};
use crate::text;

impl App {
    pub(super) fn apply_outcome(&mut self, o: Outcome) {
        // Apply what the daemon confirmed right away: the event stream will
        // say the same, but the screen should not wait for it (or depend on
        // it while reconnecting).
        match o.verb {
            Verb::Approve | Verb::Reject => {
                for id in &o.done {
                    self.pending.remove(id);
                    self.alerts.remove(&AlertKey::Pending(id.clone()));
                }
            }
            Verb::RemoveOob => {
                for id in &o.done {
                    self.oob.remove(id);
                }
            }
            Verb::Revoke | Verb::Provisioning => {}
        }
        for d in o.devices.iter().cloned() {
            self.upsert_device(d);
        }
        if let Some(p) = &o.provisioning {
            self.provisioning = Some(p.clone());
        }
        let (level, msg) = self.describe(&o);
        self.set_status(level, msg);
    }

    fn describe(&self, o: &Outcome) -> (Level, String) {
        if o.verb == Verb::Provisioning {
            return match (&o.provisioning, o.failures.first()) {
                (Some(p), _) if p.paused => (Level::Warn, "provisioning paused".into()),
                (Some(_), _) => (Level::Ok, "provisioning resumed".into()),
                (None, Some(f)) => (
                    Level::Error,
                    format!("cannot change provisioning: {}", self.why(o.verb, f)),
                ),
                (None, None) => (Level::Error, "no answer from the daemon".into()),
            };
        }
        let past = o.verb.past();
        if o.requested == 1 {
            if let Some(id) = o.done.first() {
                let tail = match o.verb {
                    Verb::Approve => " — it receives its token on its next request",
                    _ => "",
                };
                return (Level::Ok, format!("{past} {id}{tail}"));
            }
            if let Some(f) = o.failures.first() {
                let who = f.id.as_ref().map(|i| format!("{i}: ")).unwrap_or_default();
                return (Level::Error, format!("{who}{}", self.why(o.verb, f)));
            }
        }
        let ok = o.done.len();
        if o.failures.is_empty() {
            return (Level::Ok, format!("{past} {}", count(ok, "device")));
        }
        // Group failures by reason so a bulk result fits on one line.
        let mut groups: Vec<(String, usize)> = Vec::new();
        for f in &o.failures {
            let reason = self.why_short(o.verb, f);
            match groups.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => groups.push((reason, 1)),
            }
        }
        let detail: Vec<String> = groups.iter().map(|(r, n)| format!("{n} {r}")).collect();
        (
            if ok == 0 { Level::Error } else { Level::Warn },
            format!(
                "{past} {} of {}; {}",
                text::thousands(ok),
                text::thousands(o.requested),
                detail.join(", ")
            ),
        )
    }

    /// The full reason of one failure.
    fn why(&self, verb: Verb, f: &Failure) -> String {
        match (&f.kind, verb) {
            (FailKind::Conflict, Verb::Approve | Verb::Reject) => {
                if self.changed_since(f) {
                    "the request changed since you looked (the device asked again); check it and decide again".into()
                } else {
                    "another administrator decided this device first".into()
                }
            }
            (FailKind::Conflict, _) => {
                "another administrator changed this device first; check it and try again".into()
            }
            (FailKind::NotFound, Verb::Approve | Verb::Reject) => {
                "no longer pending (decided elsewhere or expired)".into()
            }
            (FailKind::NotFound, _) => "no longer exists".into(),
            (FailKind::Connection, _) => {
                format!("cannot reach the daemon: {}", text::safe(&f.message))
            }
            (FailKind::Other(code), _) => {
                format!("{} ({})", text::safe(&f.message), text::safe(code))
            }
        }
    }

    /// A few words per failure, for bulk summaries.
    fn why_short(&self, verb: Verb, f: &Failure) -> String {
        match (&f.kind, verb) {
            (FailKind::Conflict, Verb::Approve | Verb::Reject) => {
                "decided first by another administrator or changed".into()
            }
            (FailKind::Conflict, _) => "changed by someone else".into(),
            (FailKind::NotFound, _) => "already gone".into(),
            (FailKind::Connection, _) => "not sent (daemon unreachable)".into(),
            (FailKind::Other(code), _) => format!("refused ({})", text::safe(code)),
        }
    }

    /// After a 409: is the device still pending with a newer revision than
    /// the one decided on? Then the request changed; otherwise (gone, or its
    /// removal not yet seen) someone else decided it.
    fn changed_since(&self, f: &Failure) -> bool {
        match (&f.id, f.revision) {
            (Some(id), Some(sent)) => self.pending.get(id).is_some_and(|p| p.revision > sent),
            _ => false,
        }
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{} {what}s", text::thousands(n))
    }
}

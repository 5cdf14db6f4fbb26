//! The TUI's state and how it changes. No I/O and no drawing here: keys and
//! [`Msg`]s come in, the state changes, and [`Command`]s go out. Drawing
//! (`ui/`) only reads this state.

mod keys;
mod outcome;
mod policy;

use idprov_proto::admin::{
    AdminEvent, AuditEntry, DeviceView, OobEntryView, PendingView, ProvisioningState,
};

use crate::alerts::{self, Alert, AlertKey};
use crate::list::{List, ListNav};
use crate::msg::{Command, Decision, Msg, Snapshot};
use crate::text;

/// Most audit entries kept in memory (the newest).
pub const AUDIT_KEEP: usize = 20_000;
/// Most events queued while a reload is in flight before the queue is
/// dropped and another reload is asked for.
const QUEUE_MAX: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Pending,
    Devices,
    Oob,
    Alerts,
    Audit,
    /// Enrollment windows and auto-approval rules (app/policy.rs).
    Policy,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Pending,
        View::Devices,
        View::Oob,
        View::Alerts,
        View::Audit,
        View::Policy,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Pending => "Pending",
            View::Devices => "Devices",
            View::Oob => "OOB",
            View::Alerts => "Alerts",
            View::Audit => "Audit",
            View::Policy => "Policy",
        }
    }
    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
    pub fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }
    pub fn prev(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// The event-stream connection, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Connected,
    Lost {
        error: String,
        /// Unix seconds of the next attempt (the header counts down).
        retry_at: i64,
        attempt: u32,
    },
    /// The daemon refused this administrator's token; no more attempts.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub level: Level,
    /// Already safe to display.
    pub text: String,
}

/// What a confirmation will do when the administrator says yes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Approve(Vec<Decision>),
    Reject(Vec<Decision>),
    Revoke(Decision),
    RemoveOob(Vec<idprov_proto::DeviceId>),
    SetProvisioning(ProvisioningState),
    OpenWindow,
    CloseWindow(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub title: String,
    /// Lines of explanation (safe to display).
    pub body: Vec<String>,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Filter {
        input: String,
        /// The filter before editing started, restored on Esc.
        before: String,
    },
    Confirm(Confirm),
    Help {
        scroll: usize,
    },
}

/// An in-flight reload: events that arrive meanwhile wait here and are
/// replayed on top of the snapshot, so none is lost to the race between
/// reading the lists and the stream.
struct Loading {
    generation: u64,
    queued: Vec<AdminEvent>,
    overflowed: bool,
}

pub struct App {
    pub view: View,
    pub mode: Mode,
    pub pending: List<PendingView>,
    pub devices: List<DeviceView>,
    pub oob: List<OobEntryView>,
    pub audit: List<AuditEntry>,
    pub alerts: List<Alert>,
    /// Windows and rules (policy.rs).
    pub policy: List<crate::policy::PolicyRow>,
    /// What the policy would decide for each pending device (its dry run).
    pub decided: std::collections::HashMap<idprov_proto::DeviceId, String>,
    pub provisioning: Option<ProvisioningState>,
    pub conn: Conn,
    pub status: Option<Status>,
    /// A bulk command in progress: (verb, done, total).
    pub progress: Option<(crate::msg::Verb, usize, usize)>,
    /// `name@server`, for the header.
    pub identity: String,
    /// Unix seconds, advanced by the caller (tests pin it).
    pub now: i64,
    pub quit: bool,
    /// Ctrl-L was pressed: the caller clears the terminal before the next
    /// frame (and resets this).
    pub repaint: bool,
    /// Whether a snapshot has ever arrived (lists are meaningful).
    pub loaded: bool,
    loading: Option<Loading>,
    generation: u64,
    reconnected: bool,
}

impl App {
    pub fn new(identity: String, now: i64) -> Self {
        App {
            view: View::Pending,
            mode: Mode::Normal,
            pending: List::new(),
            devices: List::new(),
            oob: List::new(),
            audit: List::new(),
            alerts: List::new(),
            policy: List::new(),
            decided: std::collections::HashMap::new(),
            provisioning: None,
            conn: Conn::Connecting,
            status: None,
            progress: None,
            identity,
            now,
            quit: false,
            repaint: false,
            loaded: false,
            loading: None,
            generation: 0,
            reconnected: false,
        }
    }

    pub fn set_status(&mut self, level: Level, text: impl Into<String>) {
        self.status = Some(Status {
            level,
            text: text.into(),
        });
    }

    pub fn tick(&mut self, now: i64) {
        self.now = now;
    }

    pub fn list(&self, view: View) -> &dyn ListNav {
        match view {
            View::Pending => &self.pending,
            View::Devices => &self.devices,
            View::Oob => &self.oob,
            View::Alerts => &self.alerts,
            View::Audit => &self.audit,
            View::Policy => &self.policy,
        }
    }

    pub fn list_mut(&mut self, view: View) -> &mut dyn ListNav {
        match view {
            View::Pending => &mut self.pending,
            View::Devices => &mut self.devices,
            View::Oob => &mut self.oob,
            View::Alerts => &mut self.alerts,
            View::Audit => &mut self.audit,
            View::Policy => &mut self.policy,
        }
    }

    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Ask for a full reload; events are queued until it arrives.
    fn reload(&mut self) -> Command {
        self.generation += 1;
        self.loading = Some(Loading {
            generation: self.generation,
            queued: Vec::new(),
            overflowed: false,
        });
        Command::Reload {
            generation: self.generation,
        }
    }

    // ---- messages from the daemon side ----

    pub fn on_msg(&mut self, msg: Msg) -> Vec<Command> {
        match msg {
            Msg::Connected => {
                if matches!(self.conn, Conn::Lost { .. }) {
                    self.reconnected = true;
                }
                self.conn = Conn::Connected;
                vec![self.reload()]
            }
            Msg::Disconnected {
                error,
                retry_in,
                attempt,
            } => {
                self.loading = None;
                let secs = retry_in.as_secs().max(1);
                self.set_status(
                    Level::Error,
                    format!(
                        "connection to the daemon lost: {} — reconnecting by itself",
                        text::safe(&error)
                    ),
                );
                self.conn = Conn::Lost {
                    error,
                    retry_at: self
                        .now
                        .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
                    attempt,
                };
                Vec::new()
            }
            Msg::Refused { error } => {
                self.loading = None;
                self.set_status(
                    Level::Error,
                    format!(
                        "token refused (revoked or not valid), not retrying: {}. Quit (q); use a valid profile",
                        text::safe(&error)
                    ),
                );
                self.conn = Conn::Refused;
                Vec::new()
            }
            Msg::Event(ev) => {
                if let Some(l) = &mut self.loading {
                    if l.queued.len() < QUEUE_MAX {
                        l.queued.push(ev);
                    } else {
                        l.overflowed = true;
                    }
                    return Vec::new();
                }
                self.apply_event(ev)
            }
            Msg::Snapshot {
                generation,
                snapshot,
            } => self.apply_snapshot(generation, *snapshot),
            Msg::SnapshotFailed { generation, error } => {
                let Some(l) = self.loading.take_if(|l| l.generation == generation) else {
                    return Vec::new();
                };
                self.set_status(
                    Level::Error,
                    format!(
                        "cannot load the lists: {} (Ctrl-R retries)",
                        text::safe(&error)
                    ),
                );
                // Keep what we have and apply what arrived meanwhile.
                l.queued
                    .into_iter()
                    .flat_map(|ev| self.apply_event(ev))
                    .collect()
            }
            Msg::Policy(_) | Msg::PolicyFailed(_) | Msg::PolicyOp(_) => self.on_policy_msg(msg),
            Msg::Oob(entries) => {
                self.oob.replace_all(entries);
                Vec::new()
            }
            Msg::OobFailed(error) => {
                self.set_status(
                    Level::Warn,
                    format!("cannot reload the OOB list: {}", text::safe(&error)),
                );
                Vec::new()
            }
            Msg::Progress { verb, done, total } => {
                self.progress = (done < total).then_some((verb, done, total));
                Vec::new()
            }
            Msg::Done(outcome) => {
                self.progress = None;
                self.apply_outcome(outcome);
                Vec::new()
            }
        }
    }

    fn apply_snapshot(&mut self, generation: u64, s: Snapshot) -> Vec<Command> {
        let Some(l) = self.loading.take_if(|l| l.generation == generation) else {
            return Vec::new(); // an older reload finished late
        };
        let pending_alerts: Vec<Alert> =
            s.pending.iter().filter_map(alerts::from_pending).collect();
        let device_alerts: Vec<Alert> = s.devices.iter().filter_map(alerts::from_device).collect();
        self.pending.replace_all(s.pending);
        self.devices.replace_all(s.devices);
        self.oob.replace_all(s.oob);
        self.audit.replace_all(s.audit);
        self.audit.truncate_front(AUDIT_KEEP);
        // Security alerts come only as events: keep them across reloads.
        let security: Vec<Alert> = self
            .alerts
            .iter_all()
            .filter(|a| matches!(a.key, AlertKey::Security { .. }))
            .cloned()
            .collect();
        self.alerts.replace_all(
            pending_alerts
                .into_iter()
                .chain(device_alerts)
                .chain(security),
        );
        self.provisioning = s.provisioning;
        if !self.loaded {
            // A log reads from the bottom: start on the newest entry.
            self.audit.last();
        }
        self.loaded = true;
        if self.reconnected {
            self.reconnected = false;
            self.set_status(Level::Ok, "reconnected to the daemon; lists reloaded");
        } else if matches!(
            self.status,
            Some(Status {
                level: Level::Error,
                ..
            })
        ) {
            self.status = None;
        }
        let mut out: Vec<Command> = l
            .queued
            .into_iter()
            .flat_map(|ev| self.apply_event(ev))
            .collect();
        if l.overflowed && !self.is_loading() {
            out.push(self.reload());
        }
        out
    }

    /// Apply one live event. Upserts older than what is shown are ignored,
    /// so replays after a snapshot cannot move a record back in time.
    pub fn apply_event(&mut self, ev: AdminEvent) -> Vec<Command> {
        match ev {
            AdminEvent::PendingUpserted { pending } => self.upsert_pending(pending),
            AdminEvent::PendingRemoved { device_id } => {
                self.pending.remove(&device_id);
                self.alerts.remove(&AlertKey::Pending(device_id));
            }
            AdminEvent::DeviceUpserted { device } => self.upsert_device(device),
            AdminEvent::DeviceRemoved { device_id } => {
                self.devices.remove(&device_id);
                self.alerts.remove(&AlertKey::Device(device_id));
            }
            AdminEvent::OobChanged { .. } => return vec![Command::ReloadOob],
            AdminEvent::Audit { entry } => {
                let follow = self.audit.cursor() + 1 >= self.audit.len();
                self.audit.upsert(entry);
                self.audit.truncate_front(AUDIT_KEEP);
                if follow && self.audit.filter().is_empty() {
                    self.audit.last();
                }
            }
            AdminEvent::Provisioning { state } => self.provisioning = Some(state),
            AdminEvent::Alert { alert } => self.alerts.upsert(alerts::from_security(&alert)),
            // The Policy view and the pending detail follow the policy.
            AdminEvent::Window { .. } | AdminEvent::RulesChanged { .. } => {
                return vec![Command::ReloadPolicy];
            }
            AdminEvent::Lagged { missed } => {
                self.set_status(
                    Level::Warn,
                    format!("fell behind the daemon ({missed} events missed); reloading"),
                );
                if !self.is_loading() {
                    return vec![self.reload()];
                }
            }
        }
        Vec::new()
    }

    fn upsert_pending(&mut self, p: PendingView) {
        if self
            .pending
            .get(&p.device_id)
            .is_some_and(|old| old.revision > p.revision)
        {
            return;
        }
        match alerts::from_pending(&p) {
            Some(a) => self.alerts.upsert(a),
            None => {
                self.alerts.remove(&AlertKey::Pending(p.device_id.clone()));
            }
        }
        self.pending.upsert(p);
    }

    fn upsert_device(&mut self, d: DeviceView) {
        if self
            .devices
            .get(&d.device_id)
            .is_some_and(|old| old.revision > d.revision)
        {
            return;
        }
        match alerts::from_device(&d) {
            Some(a) => self.alerts.upsert(a),
            None => {
                self.alerts.remove(&AlertKey::Device(d.device_id.clone()));
            }
        }
        self.devices.upsert(d);
    }
}

#[cfg(test)]
mod tests;

//! Key handling: a key becomes an [`Action`] through the keymap, and the
//! action changes the state or opens a confirmation. Everything that
//! changes the daemon goes through a confirmation that names what will
//! happen (and how many devices), so no single stray key decides a device.

use crossterm::event::{KeyCode, KeyEvent};
use idprov_proto::admin::{DeviceStatus, PendingView, ProvisioningState};

use super::{App, Confirm, Level, Mode, Op, View};
use crate::alerts::AlertKey;
use crate::keymap::{self, Action, Key, Scope};
use crate::msg::{Command, Decision};
use crate::text;

/// How many device ids a confirmation lists before "and N more".
const CONFIRM_LIST: usize = 5;

impl App {
    pub fn scope(&self) -> Scope {
        match &self.mode {
            Mode::Normal => Scope::of_view(self.view),
            Mode::Filter { .. } => Scope::Filter,
            Mode::Confirm(_) => Scope::Confirm,
            Mode::Help { .. } => Scope::Help,
        }
    }

    pub fn on_key(&mut self, ev: KeyEvent) -> Vec<Command> {
        let Some(key) = Key::from_event(&ev) else {
            return Vec::new();
        };
        // Repaint is global in every mode, dialogs and the filter prompt
        // included: a garbled screen may hide the dialog itself.
        if keymap::lookup(Scope::Global, key) == Some(Action::Repaint) {
            self.repaint = true;
            return Vec::new();
        }
        let action = keymap::lookup(self.scope(), key);
        match &mut self.mode {
            Mode::Filter { input, before } => {
                // Edit the input first, then apply it (two borrows of self).
                let apply = match action {
                    Some(Action::FilterApply) => {
                        self.mode = Mode::Normal;
                        return Vec::new();
                    }
                    Some(Action::FilterCancel) => {
                        let before = std::mem::take(before);
                        self.mode = Mode::Normal;
                        before
                    }
                    Some(Action::FilterBackspace) => {
                        input.pop();
                        input.clone()
                    }
                    Some(Action::FilterClear) => {
                        input.clear();
                        String::new()
                    }
                    _ => {
                        // Typed text: printable ASCII only (ids, MACs, keys
                        // and flags are ASCII), so the prompt stays safe.
                        match key.code {
                            KeyCode::Char(c)
                                if !key.ctrl
                                    && (c == ' ' || c.is_ascii_graphic())
                                    && input.len() < 200 =>
                            {
                                input.push(c);
                                input.clone()
                            }
                            _ => return Vec::new(),
                        }
                    }
                };
                self.list_mut(self.view).set_filter(&apply);
                Vec::new()
            }
            Mode::Confirm(c) => match action {
                Some(Action::Yes) => {
                    let op = c.op.clone();
                    self.mode = Mode::Normal;
                    vec![self.start(op)]
                }
                Some(Action::No) => {
                    self.mode = Mode::Normal;
                    self.set_status(Level::Info, "cancelled");
                    Vec::new()
                }
                _ => Vec::new(),
            },
            Mode::Help { scroll } => {
                match action {
                    Some(Action::Back) => self.mode = Mode::Normal,
                    Some(Action::Down) => {
                        let lines = keymap::help_lines(Scope::of_view(self.view)).len();
                        *scroll = (*scroll + 1).min(lines);
                    }
                    Some(Action::Up) => *scroll = scroll.saturating_sub(1),
                    _ => {}
                }
                Vec::new()
            }
            Mode::Normal => match action {
                Some(a) => self.on_action(a),
                None => Vec::new(),
            },
        }
    }

    fn on_action(&mut self, a: Action) -> Vec<Command> {
        let view = self.view;
        match a {
            Action::Quit => self.quit = true,
            Action::Back => {
                let list = self.list_mut(view);
                if list.marked_count() > 0 {
                    list.clear_marks();
                } else if !list.filter().is_empty() {
                    list.set_filter("");
                } else {
                    self.quit = true;
                }
            }
            Action::Help => self.mode = Mode::Help { scroll: 0 },
            Action::NextView => self.view = view.next(),
            Action::PrevView => self.view = view.prev(),
            Action::GoTo(v) => self.view = v,
            Action::Up => self.list_mut(view).move_by(-1),
            Action::Down => self.list_mut(view).move_by(1),
            Action::Top => self.list_mut(view).first(),
            Action::Bottom => self.list_mut(view).last(),
            Action::PageUp => self.list_mut(view).page_up(),
            Action::PageDown => self.list_mut(view).page_down(),
            Action::Filter => {
                let f = self.list(view).filter().to_string();
                self.mode = Mode::Filter {
                    input: f.clone(),
                    before: f,
                };
            }
            Action::Reload => {
                self.set_status(Level::Info, "reloading…");
                return vec![self.reload()];
            }
            Action::ClearMarks => self.list_mut(view).clear_marks(),
            Action::ToggleMark => {
                self.pending.toggle_mark();
                self.pending.move_by(1);
            }
            Action::Approve => self.confirm_decision(true, false),
            Action::Reject => self.confirm_decision(false, false),
            Action::ApproveMatching => self.confirm_decision(true, true),
            Action::RejectMatching => self.confirm_decision(false, true),
            Action::Revoke => self.confirm_revoke(),
            Action::RemoveOob => self.confirm_remove_oob(),
            Action::ToggleProvisioning => self.confirm_provisioning(),
            Action::Open => self.open_alert(),
            Action::OpenWindow => self.confirm_open_window(),
            Action::CloseWindow => self.confirm_close_window(),
            // Modal actions never reach the normal mode.
            Action::Yes
            | Action::No
            | Action::FilterApply
            | Action::FilterCancel
            | Action::FilterBackspace
            | Action::FilterClear
            // Handled before the mode (on_key).
            | Action::Repaint => {}
        }
        Vec::new()
    }

    /// Send a confirmed operation.
    fn start(&mut self, op: Op) -> Command {
        let (text, cmd) = match op {
            Op::Approve(d) => (count_msg("approving", d.len()), Command::Approve(d)),
            Op::Reject(d) => (count_msg("rejecting", d.len()), Command::Reject(d)),
            Op::Revoke(d) => (format!("revoking {}…", d.id), Command::Revoke(d)),
            Op::RemoveOob(ids) => (count_msg("removing", ids.len()), Command::RemoveOob(ids)),
            Op::SetProvisioning(p) => (
                if p.paused {
                    "pausing provisioning…"
                } else {
                    "resuming provisioning…"
                }
                .into(),
                Command::SetProvisioning(p),
            ),
            Op::OpenWindow => ("opening a window…".into(), Command::OpenWindow),
            Op::CloseWindow(id) => (format!("closing window {id}…"), Command::CloseWindow(id)),
        };
        self.set_status(Level::Info, text);
        cmd
    }

    fn confirm_decision(&mut self, approve: bool, matching: bool) {
        let verb = if approve { "Approve" } else { "Reject" };
        let targets: Vec<&PendingView> = if matching {
            self.pending.iter_visible().collect()
        } else if self.pending.marked_count() > 0 {
            self.pending.marked_items().collect()
        } else {
            self.pending.selected().into_iter().collect()
        };
        if targets.is_empty() {
            self.set_status(Level::Info, "no pending device to decide");
            return;
        }
        let decisions: Vec<Decision> = targets
            .iter()
            .map(|p| Decision {
                id: p.device_id.clone(),
                revision: p.revision,
            })
            .collect();
        let n = decisions.len();
        let (title, mut body) = if n == 1 && !matching {
            let p = targets[0];
            (
                format!("{verb} {}?", p.device_id),
                vec![
                    format!("verification code  {}", text::safe(&p.verification_code)),
                    format!(
                        "key                {} {}",
                        p.key_format.as_str(),
                        text::safe(&p.key_fingerprint)
                    ),
                    format!(
                        "MAC {}   from {}",
                        p.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                        text::safe(&p.source)
                    ),
                    format!("flags              {}", flags_text(&p.flags)),
                    match &p.oob_hold {
                        Some(h) => format!("OOB list           {}", text::safe(&h.to_string())),
                        None => "OOB list           not on the list (no OOB entry matched)".into(),
                    },
                ],
            )
        } else if matching {
            let filter = self.pending.filter();
            let what = if n == 1 {
                "pending device"
            } else {
                "pending devices"
            };
            let title = if filter.is_empty() {
                format!("{verb} ALL {} {what} (no filter)?", text::thousands(n))
            } else {
                format!(
                    "{verb} {} {what} matching \"{}\"?",
                    text::thousands(n),
                    text::safe(filter)
                )
            };
            (title, Vec::new())
        } else {
            (
                format!("{verb} the {} marked devices?", text::thousands(n)),
                Vec::new(),
            )
        };
        if n > 1 || matching {
            body.extend(id_list(targets.iter().map(|p| p.device_id.as_str()), n));
        }
        if approve {
            body.push("Approved devices receive credentials on their next request.".into());
        }
        let op = if approve {
            Op::Approve(decisions)
        } else {
            Op::Reject(decisions)
        };
        self.mode = Mode::Confirm(Confirm { title, body, op });
    }

    fn confirm_revoke(&mut self) {
        let Some(d) = self.devices.selected() else {
            self.set_status(Level::Info, "no device selected");
            return;
        };
        if d.status != DeviceStatus::Active {
            let msg = format!(
                "{} is already {}",
                d.device_id,
                crate::rows::status_str(d.status)
            );
            self.set_status(Level::Info, msg);
            return;
        }
        let title = format!("Revoke {}?", d.device_id);
        let body = vec![
            "Its tokens and certificates stop being accepted at once.".into(),
            "A revoked device never becomes valid again.".into(),
        ];
        let op = Op::Revoke(Decision {
            id: d.device_id.clone(),
            revision: d.revision,
        });
        self.mode = Mode::Confirm(Confirm { title, body, op });
    }

    fn confirm_remove_oob(&mut self) {
        let Some(e) = self.oob.selected() else {
            self.set_status(Level::Info, "no OOB entry selected");
            return;
        };
        let title = format!("Remove the OOB entry of {}?", e.device_id);
        let body = vec!["The device is no longer admitted without approval.".into()];
        let op = Op::RemoveOob(vec![e.device_id.clone()]);
        self.mode = Mode::Confirm(Confirm { title, body, op });
    }

    fn confirm_provisioning(&mut self) {
        let paused = self.provisioning.as_ref().is_some_and(|p| p.paused);
        let (title, body, state) = if paused {
            (
                "Resume provisioning?".to_string(),
                vec!["Devices are admitted and issued credentials again.".to_string()],
                ProvisioningState {
                    paused: false,
                    reason: None,
                },
            )
        } else {
            (
                "Pause provisioning?".to_string(),
                vec!["No device is admitted or issued credentials until you resume.".to_string()],
                ProvisioningState {
                    paused: true,
                    reason: Some(format!("paused from the TUI by {}", self.identity)),
                },
            )
        };
        self.mode = Mode::Confirm(Confirm {
            title,
            body,
            op: Op::SetProvisioning(state),
        });
    }

    /// Enter on an alert: go to the device it is about, clearing the target
    /// view's filter if that hides it.
    fn open_alert(&mut self) {
        let Some(a) = self.alerts.selected() else {
            return;
        };
        let key = a.key.clone();
        let found = match &key {
            AlertKey::Pending(id) => {
                self.view = View::Pending;
                self.pending.select_key(id) || {
                    self.pending.set_filter("");
                    self.pending.select_key(id)
                }
            }
            AlertKey::Device(id) => {
                self.view = View::Devices;
                self.devices.select_key(id) || {
                    self.devices.set_filter("");
                    self.devices.select_key(id)
                }
            }
            // Nothing to open: the details are in the audit log.
            AlertKey::Security { subject, .. } => {
                self.set_status(
                    Level::Warn,
                    format!(
                        "security alert about {subject}: see the Audit view (security_alert) \
                         and resume provisioning once it is dealt with"
                    ),
                );
                return;
            }
        };
        if !found {
            self.set_status(
                Level::Info,
                format!("{} is no longer listed", key.subject()),
            );
        }
    }
}

fn count_msg(verb: &str, n: usize) -> String {
    if n == 1 {
        format!("{verb} 1 device…")
    } else {
        format!("{verb} {} devices…", text::thousands(n))
    }
}

/// "sensor-01, sensor-02, … and 998 more".
fn id_list<'a>(ids: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let shown: Vec<&str> = ids.take(CONFIRM_LIST).collect();
    let mut line = shown.join(", ");
    if n > shown.len() {
        line.push_str(&format!(" and {} more", text::thousands(n - shown.len())));
    }
    vec![line]
}

/// A pending request's flags for the confirmation dialog.
fn flags_text(flags: &[String]) -> String {
    if flags.is_empty() {
        "none".into()
    } else {
        let v: Vec<String> = flags.iter().map(|f| text::safe(f).into_owned()).collect();
        v.join(", ")
    }
}

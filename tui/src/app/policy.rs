//! The Policy view's state changes: the loaded rules and windows, the
//! pending detail's "decided by", and opening and closing windows (each
//! through a confirmation, as every change is).

use super::{App, Confirm, Level, Mode, Op};
use crate::msg::{Command, Msg};
use crate::policy::{self, PolicyRow};
use crate::text;

impl App {
    pub(super) fn on_policy_msg(&mut self, msg: Msg) -> Vec<Command> {
        match msg {
            Msg::Policy(d) => {
                self.policy.replace_all(policy::rows(&d));
                self.decided = policy::decided(&d);
            }
            Msg::PolicyFailed(e) => self.set_status(
                Level::Warn,
                format!("cannot load the rules and windows: {}", text::safe(&e)),
            ),
            Msg::PolicyOp(Ok(what)) => self.set_status(Level::Ok, text::safe(&what).into_owned()),
            Msg::PolicyOp(Err(e)) => self.set_status(Level::Error, text::safe(&e).into_owned()),
            _ => {}
        }
        Vec::new()
    }

    pub(super) fn confirm_open_window(&mut self) {
        self.mode = Mode::Confirm(Confirm {
            title: "Open an enrollment window?".into(),
            body: vec![
                "For the daemon's default time (10 minutes unless configured),".into(),
                "every unknown device without held flags is admitted".into(),
                "without a key press. Rules are still evaluated first.".into(),
            ],
            op: Op::OpenWindow,
        });
    }

    pub(super) fn confirm_close_window(&mut self) {
        let id = match self.policy.selected() {
            Some(PolicyRow::Window { window, .. }) if window.is_open() => window.id,
            _ => {
                self.set_status(Level::Info, "select an open window to close");
                return;
            }
        };
        self.mode = Mode::Confirm(Confirm {
            title: format!("Close window {id}?"),
            body: vec!["It admits no more devices.".into()],
            op: Op::CloseWindow(id),
        });
    }
}

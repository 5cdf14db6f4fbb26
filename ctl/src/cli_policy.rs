//! `idprovctl rules …` and `idprovctl window …`: the auto-approval policy
//! (docs/protocol.md §9 "Policy").

use std::time::Duration;

use clap::{Args, Subcommand};
use idprov_proto::policy::{
    Cidr, Flag, IdGlob, KeyType, MacOui, Rule, RuleAction, RuleName, TimeWindow,
};

/// A serde enum from its snake_case name.
fn by_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

fn action(s: &str) -> Result<RuleAction, String> {
    by_name(s)
}

fn key_type(s: &str) -> Result<KeyType, String> {
    by_name(s)
}

fn flag(s: &str) -> Result<Flag, String> {
    Flag::from_name(s)
        .filter(|f| Flag::CHECKED.contains(f))
        .ok_or_else(|| {
            let names = Flag::CHECKED.map(Flag::as_str).join(", ");
            format!("not a flag raised on requests (flags: {names})")
        })
}

/// One rule on the command line.
#[derive(Args, Debug, Clone)]
pub struct RuleArgs {
    /// The rule's name (a-z 0-9 _ -): its audit actor is rule:NAME.
    pub name: RuleName,
    /// approve, reject or hold.
    #[arg(long, value_parser = action)]
    pub action: RuleAction,
    /// Device ID pattern (* any run, ? one character).
    #[arg(long)]
    pub device_id: Option<IdGlob>,
    /// es256 or rs256.
    #[arg(long, value_parser = key_type)]
    pub key_type: Option<KeyType>,
    /// First three bytes of the claimed MAC, e.g. 00:1a:2b.
    #[arg(long)]
    pub mac_oui: Option<MacOui>,
    /// Source address range, e.g. 192.168.10.0/24.
    #[arg(long)]
    pub source: Option<Cidr>,
    /// A flag that must be present (repeatable). An approve rule admits a
    /// request carrying a held flag only if it names it here.
    #[arg(long = "flag", value_parser = flag)]
    pub flags: Vec<Flag>,
    /// Time of day in UTC, e.g. 08:00-18:00.
    #[arg(long)]
    pub time: Option<TimeWindow>,
}

impl RuleArgs {
    pub fn rule(self) -> Rule {
        Rule {
            name: self.name,
            action: self.action,
            device_id: self.device_id,
            key_type: self.key_type,
            mac_oui: self.mac_oui,
            source: self.source,
            flags: self.flags,
            time: self.time,
        }
    }
}

/// The revision of the stored rules an edit is made on.
#[derive(Args, Debug, Clone)]
pub struct Revision {
    /// Edit only if the rules are still at this revision (as `rules list`
    /// showed it); default: the revision read just before editing.
    #[arg(long)]
    pub revision: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// The configured rules (read-only, first) and the stored ones, in order.
    List,
    /// Add a stored rule, last or at --position.
    Add {
        #[command(flatten)]
        rule: RuleArgs,
        /// 0 is first among the stored rules.
        #[arg(long)]
        position: Option<usize>,
        #[command(flatten)]
        revision: Revision,
    },
    /// Replace the stored rule NAME (given again under --rename to rename).
    Replace {
        #[command(flatten)]
        rule: RuleArgs,
        /// The new name.
        #[arg(long)]
        rename: Option<RuleName>,
        #[command(flatten)]
        revision: Revision,
    },
    /// Delete a stored rule.
    Delete {
        name: RuleName,
        #[command(flatten)]
        revision: Revision,
    },
    /// Move a stored rule to POSITION (0 is first).
    Move {
        name: RuleName,
        position: usize,
        #[command(flatten)]
        revision: Revision,
    },
    /// Which pending devices rule NAME would decide now (without NAME: the
    /// whole policy, rules then open windows). Decides nothing.
    DryRun { name: Option<RuleName> },
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum WindowCommand {
    /// Open an enrollment window: matching unknown devices are admitted
    /// without a key press until it closes.
    Open {
        /// How long (e.g. 10m; default and maximum: the daemon's
        /// policy.window_default and policy.window_max).
        #[arg(long, value_parser = duration)]
        duration: Option<Duration>,
        /// Only device IDs matching this pattern.
        #[arg(long)]
        device_id: Option<IdGlob>,
        /// Only devices from this address range.
        #[arg(long)]
        source: Option<Cidr>,
        /// Close after admitting this many devices.
        #[arg(long)]
        max_devices: Option<u32>,
    },
    /// Close a window now.
    Close { id: u64 },
    /// Open windows and the latest closed ones.
    List,
}

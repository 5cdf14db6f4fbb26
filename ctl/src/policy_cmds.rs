//! `idprovctl rules …` and `idprovctl window …`.

use idprov_admin_client::AdminClient;
use idprov_proto::policy::{DryRunRequest, RuleList, WindowOpen, WindowView};
use idprovctl::cli_policy::{Revision, RulesCommand, WindowCommand};
use idprovctl::output::{Table, json, opt_time, time};

/// The revision given, or the current one.
async fn revision(c: &AdminClient, r: Revision) -> anyhow::Result<u64> {
    Ok(match r.revision {
        Some(r) => r,
        None => c.rules().await?.revision,
    })
}

fn rules_table(list: &RuleList) -> Table {
    let mut t = Table::new(&["#", "FROM", "NAME", "ACTION", "MATCHES"]);
    let all = list
        .config
        .iter()
        .map(|r| ("config", r))
        .chain(list.rules.iter().map(|r| ("stored", r)));
    for (i, (from, r)) in all.enumerate() {
        t.row(vec![
            i.to_string(),
            from.to_string(),
            r.name.to_string(),
            r.action.as_str().to_string(),
            r.summary(),
        ]);
    }
    t
}

fn print_rules(list: &RuleList, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(list);
    }
    rules_table(list).print()?;
    eprintln!("stored rules at revision {}", list.revision);
    Ok(())
}

pub async fn rules(c: &AdminClient, cmd: RulesCommand, as_json: bool) -> anyhow::Result<()> {
    let list = match cmd {
        RulesCommand::List => c.rules().await?,
        RulesCommand::Add {
            rule,
            position,
            revision: r,
        } => {
            c.rule_add(revision(c, r).await?, rule.rule(), position)
                .await?
        }
        RulesCommand::Replace {
            rule,
            rename,
            revision: r,
        } => {
            let name = rule.name.clone();
            let mut rule = rule.rule();
            if let Some(n) = rename {
                rule.name = n;
            }
            c.rule_replace(revision(c, r).await?, &name, rule).await?
        }
        RulesCommand::Delete { name, revision: r } => {
            c.rule_delete(revision(c, r).await?, &name).await?
        }
        RulesCommand::Move {
            name,
            position,
            revision: r,
        } => c.rule_move(revision(c, r).await?, &name, position).await?,
        RulesCommand::DryRun { name } => {
            let out = c.rules_dry_run(&DryRunRequest { rule: None, name }).await?;
            if as_json {
                return json(&out);
            }
            let mut t = Table::new(&["DEVICE ID", "ACTION", "DECIDED BY"]);
            for i in &out.items {
                t.row(vec![
                    i.device_id.to_string(),
                    i.action.as_str().to_string(),
                    i.decided_by.clone(),
                ]);
            }
            t.print()?;
            eprintln!(
                "{} of {} pending devices would be decided",
                out.items.len(),
                out.checked
            );
            return Ok(());
        }
    };
    print_rules(&list, as_json)
}

fn windows_table(items: &[WindowView]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "CLOSES",
        "ADMITTED",
        "MAX",
        "DEVICE ID",
        "SOURCE",
        "OPENED BY",
    ]);
    for w in items {
        let state = match w.closed {
            None => "open".to_string(),
            Some(why) => format!("closed ({})", why.as_str()),
        };
        t.row(vec![
            w.id.to_string(),
            state,
            if w.is_open() {
                time(w.closes_at)
            } else {
                opt_time(w.closed_at)
            },
            w.admitted.to_string(),
            w.max_devices.map_or("-".into(), |m| m.to_string()),
            w.device_id.as_ref().map_or("any".into(), |g| g.to_string()),
            w.source.map_or("any".into(), |c| c.to_string()),
            w.opened_by.clone(),
        ]);
    }
    t
}

/// A list (printed as a JSON array) or the one window a command changed
/// (a JSON object).
enum Windows {
    List(Vec<WindowView>),
    One(WindowView),
}

pub async fn window(c: &AdminClient, cmd: WindowCommand, as_json: bool) -> anyhow::Result<()> {
    let items = match cmd {
        WindowCommand::List => Windows::List(c.windows().await?.items),
        WindowCommand::Open {
            duration,
            device_id,
            source,
            max_devices,
        } => {
            let req = WindowOpen {
                duration_secs: duration.map(|d| d.as_secs()),
                device_id,
                source,
                max_devices,
            };
            Windows::One(c.window_open(&req).await?)
        }
        WindowCommand::Close { id } => Windows::One(c.window_close(id).await?),
    };
    let items = match items {
        Windows::List(items) => items,
        Windows::One(w) if as_json => return json(&w),
        Windows::One(w) => vec![w],
    };
    if as_json {
        return json(&items);
    }
    Ok(windows_table(&items).print()?)
}

//! Each `idprovctl` command: one admin API call (or a read then a call),
//! printed by `views` or as the daemon's JSON.

use std::path::Path;

use anyhow::{Context, bail};
use idprov_admin_client::{AdminClient, AdminError};
use idprov_proto::DeviceId;
use idprov_proto::admin::{ListQuery, MAX_PAGE, Page, PendingView, ProvisioningState};
use idprov_proto::x509::{AdminKeyAddRequest, ReprovisionRequest};
use idprovctl::cli::{
    CertsCommand, Cli, Command, Decision, DevicesCommand, KeysCommand, PendingCommand,
    ProvisioningCommand, RegistryCaCommand,
};
use idprovctl::output::{self, json, out};

use crate::views;

/// Largest PEM file read for a key or CA (the daemon refuses larger ones).
const MAX_PEM_FILE: u64 = 64 * 1024;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = AdminClient::from_profile_path(cli.profile.as_deref())?;
    let as_json = cli.json;
    match cli.command {
        Command::Whoami => {
            let w = c.whoami().await?;
            if as_json {
                return json(&w);
            }
            Ok(output::fields(&[
                ("name", w.name),
                ("daemon", w.daemon_id),
                ("server", c.server().to_string()),
            ])?)
        }
        Command::Pending { command } => pending(&c, command, as_json).await,
        Command::Approve { decision } => decide(&c, decision, None, as_json).await,
        Command::Reject { decision, reason } => decide(&c, decision, Some(reason), as_json).await,
        Command::Devices { command } => devices(&c, command, as_json).await,
        Command::Keys { command } => keys(&c, command, as_json).await,
        Command::Certs { command } => certs(&c, command, as_json).await,
        Command::RegistryCas { command } => registry_cas(&c, command, as_json).await,
        Command::Crl => {
            let info = c.crl_info().await?;
            if as_json {
                return json(&info);
            }
            Ok(views::crl(&info)?)
        }
        Command::Provisioning { command } => provisioning(&c, command, as_json).await,
        Command::Alerts => {
            let list = c.alerts().await?;
            if as_json {
                return json(&list.items);
            }
            Ok(views::alerts(&list.items).print()?)
        }
        Command::Audit {
            after,
            limit,
            query,
        } => {
            let q = ListQuery {
                after: after.map(|a| a.to_string()),
                limit: usize::try_from(limit).ok(),
                q: query,
            };
            let page = c.audit(&q).await?;
            if as_json {
                return json(&page);
            }
            views::audit(&page.items).print()?;
            if let Some(next) = page.next {
                eprintln!("more entries: --after {next}");
            }
            Ok(())
        }
        Command::Events => events(&c).await,
        Command::Rules { command } => crate::policy_cmds::rules(&c, command, as_json).await,
        Command::Window { command } => crate::policy_cmds::window(&c, command, as_json).await,
    }
}

/// Every page of a list, for commands that show a whole collection.
async fn all_pages<T, F, Fut>(q: Option<String>, mut page: F) -> Result<Vec<T>, AdminError>
where
    F: FnMut(ListQuery) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, AdminError>>,
{
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let p = page(ListQuery {
            after: after.take(),
            limit: Some(MAX_PAGE),
            q: q.clone(),
        })
        .await?;
        items.extend(p.items);
        match p.next {
            Some(n) => after = Some(n),
            None => return Ok(items),
        }
    }
}

/// The pending request of one device, as the daemon holds it now.
async fn pending_one(c: &AdminClient, id: &DeviceId) -> anyhow::Result<PendingView> {
    let all = all_pages(
        Some(id.to_string()),
        |q| async move { c.pending_list(&q).await },
    )
    .await?;
    match all.into_iter().find(|p| &p.device_id == id) {
        Some(p) => Ok(p),
        None => bail!("no pending device {id} (see: idprovctl pending list)"),
    }
}

async fn pending(c: &AdminClient, cmd: PendingCommand, as_json: bool) -> anyhow::Result<()> {
    match cmd {
        PendingCommand::List { query } => {
            let items = all_pages(query, |q| async move { c.pending_list(&q).await }).await?;
            if as_json {
                return json(&items);
            }
            Ok(views::pending_table(&items).print()?)
        }
        PendingCommand::Show { id } => {
            let p = pending_one(c, &id).await?;
            if as_json {
                return json(&p);
            }
            Ok(views::pending(&p)?)
        }
    }
}

/// Approve (`reason` None) or reject. The decision names the revision it is
/// about: the one given, or the one read here; the daemon refuses it with
/// `conflict` if the request changed since (a new key, another attempt).
async fn decide(
    c: &AdminClient,
    d: Decision,
    reject: Option<Option<String>>,
    as_json: bool,
) -> anyhow::Result<()> {
    let revision = match d.revision {
        Some(r) => r,
        None => pending_one(c, &d.id).await?.revision,
    };
    let verb = if reject.is_some() {
        "reject"
    } else {
        "approve"
    };
    let result = match reject {
        Some(reason) => c.reject(&d.id, revision, reason).await,
        None => c.approve(&d.id, revision).await,
    };
    let device = result.map_err(|e| match e.code() {
        Some(idprov_proto::ErrorCode::Conflict) => anyhow::Error::new(e).context(format!(
            "{id} changed since revision {revision}; nothing was decided. \
             Check it again (idprovctl pending show {id}) before you {verb}",
            id = d.id
        )),
        _ => anyhow::Error::new(e).context(format!("cannot {verb} {}", d.id)),
    })?;
    if as_json {
        return json(&device);
    }
    Ok(out(&format!(
        "{}: {} at revision {revision} (device now {})\n",
        device.device_id,
        if verb == "reject" {
            "rejected"
        } else {
            "approved"
        },
        views::status(device.status)
    ))?)
}

async fn devices(c: &AdminClient, cmd: DevicesCommand, as_json: bool) -> anyhow::Result<()> {
    match cmd {
        DevicesCommand::List { query } => {
            let items = all_pages(query, |q| async move { c.device_list(&q).await }).await?;
            if as_json {
                return json(&items);
            }
            Ok(views::devices_table(&items).print()?)
        }
        DevicesCommand::Show { id } => {
            let d = c.device_get(&id).await?;
            if as_json {
                return json(&d);
            }
            Ok(views::device(&d)?)
        }
        DevicesCommand::Revoke {
            id,
            reason,
            revision,
        } => {
            let d = c.device_revoke(&id, revision, reason).await?;
            if as_json {
                return json(&d);
            }
            Ok(out(&format!("{}: revoked\n", d.device_id))?)
        }
        DevicesCommand::Remove { id } => {
            c.device_remove(&id).await?;
            if as_json {
                return json(&serde_json::json!({ "removed": id }));
            }
            Ok(out(&format!("{id}: removed\n"))?)
        }
        DevicesCommand::Reprovision {
            id,
            key,
            reason,
            mac,
            revision,
        } => {
            let req = ReprovisionRequest {
                public_key: read_pem(&key)?,
                key_format: None,
                mac,
                revision,
                reason,
            };
            let d = c.reprovision(&id, &req).await?;
            if as_json {
                return json(&d);
            }
            Ok(out(&format!(
                "{}: reprovisioned (revision {})\n",
                d.device_id, d.revision
            ))?)
        }
    }
}

async fn keys(c: &AdminClient, cmd: KeysCommand, as_json: bool) -> anyhow::Result<()> {
    let (id, keys) = match cmd {
        KeysCommand::List { id } => {
            let d = c.device_get(&id).await?;
            (d.device_id, d.keys)
        }
        KeysCommand::Add {
            id,
            key,
            expires,
            revision,
        } => {
            let expires_at = expires
                .map(|t| {
                    std::time::SystemTime::from(t)
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .and_then(|d| i64::try_from(d.as_secs()).ok())
                        .context("--expires must be after 1970")
                })
                .transpose()?;
            let req = AdminKeyAddRequest {
                public_key: read_pem(&key)?,
                key_format: None,
                expires_at,
                revision,
            };
            let r = c.key_add(&id, &req).await?;
            (r.device_id, r.keys)
        }
        KeysCommand::Remove { id, kid } => {
            let r = c.key_remove(&id, &kid).await?;
            (r.device_id, r.keys)
        }
        KeysCommand::Revoke { id, kid, reason } => {
            let r = c.key_revoke(&id, &kid, reason).await?;
            (r.device_id, r.keys)
        }
    };
    if as_json {
        return json(&serde_json::json!({ "device_id": id, "keys": keys }));
    }
    Ok(views::keys(&keys).print()?)
}

async fn certs(c: &AdminClient, cmd: CertsCommand, as_json: bool) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::List { id } => {
            let list = c.device_certificates(&id).await?;
            if as_json {
                return json(&list);
            }
            Ok(views::certs(&list).print()?)
        }
        CertsCommand::Show { serial, pem } => {
            let cert = c.certificate(&serial).await?;
            if as_json {
                return json(&cert);
            }
            if pem {
                return Ok(out(&cert.pem)?);
            }
            Ok(views::cert(&cert)?)
        }
        CertsCommand::Revoke { serial, reason } => {
            let cert = c.certificate_revoke(&serial, reason).await?;
            if as_json {
                return json(&cert);
            }
            Ok(out(&format!("{}: revoked\n", cert.serial))?)
        }
    }
}

async fn registry_cas(
    c: &AdminClient,
    cmd: RegistryCaCommand,
    as_json: bool,
) -> anyhow::Result<()> {
    match cmd {
        RegistryCaCommand::List => {
            let list = c.registry_cas().await?;
            if as_json {
                return json(&list);
            }
            Ok(views::registry_cas(&list).print()?)
        }
        RegistryCaCommand::Add { file } => {
            let ca = c.registry_ca_add(&read_pem(&file)?).await?;
            if as_json {
                return json(&ca);
            }
            Ok(out(&format!(
                "added {} ({})\n",
                ca.fingerprint, ca.subject
            ))?)
        }
        RegistryCaCommand::Remove { fingerprint } => {
            c.registry_ca_remove(&fingerprint).await?;
            if as_json {
                return json(&serde_json::json!({ "removed": fingerprint }));
            }
            Ok(out(&format!("removed {fingerprint}\n"))?)
        }
    }
}

async fn provisioning(
    c: &AdminClient,
    cmd: ProvisioningCommand,
    as_json: bool,
) -> anyhow::Result<()> {
    let state = match cmd {
        ProvisioningCommand::Status => c.provisioning().await?,
        ProvisioningCommand::Pause { reason } => {
            c.set_provisioning(&ProvisioningState {
                paused: true,
                reason,
            })
            .await?
        }
        ProvisioningCommand::Resume => {
            c.set_provisioning(&ProvisioningState {
                paused: false,
                reason: None,
            })
            .await?
        }
    };
    if as_json {
        return json(&state);
    }
    let line = match (&state.paused, &state.reason) {
        (false, _) => "provisioning: running\n".to_string(),
        (true, Some(r)) => format!("provisioning: paused ({r})\n"),
        (true, None) => "provisioning: paused\n".to_string(),
    };
    Ok(out(&line)?)
}

/// One JSON line per event, flushed at once so a pipe sees it.
async fn events(c: &AdminClient) -> anyhow::Result<()> {
    let mut rx = c.events().await?;
    while let Some(ev) = rx.recv().await {
        let mut line = serde_json::to_string(&ev)?;
        line.push('\n');
        out(&line)?;
    }
    bail!("the event stream ended (the daemon stopped or dropped it)")
}

/// A PEM file, bounded in size so a wrong path (a disk image) is refused
/// quickly.
fn read_pem(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_PEM_FILE {
        bail!(
            "{} is {} bytes; a PEM key or certificate is at most {MAX_PEM_FILE}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

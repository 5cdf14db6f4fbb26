//! The daemon's composition root: the shared [`Core`], the services built on
//! it (devices, administrators, alerts, import sessions, the CRL), and what
//! the transport needs besides (keys, administrator credentials, limits on
//! event streams, the shutdown signal). The transport holds one in an `Arc`.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::admins::AdminRegistry;
use crate::config::Config;
use crate::context::Core;
use crate::error::Error;
use crate::pki::Pki;

pub use crate::audit::draft;

pub struct Daemon {
    /// Store, clock, events, metrics, and the unit of work.
    pub core: Core,
    pub cfg: Arc<Config>,
    pub pki: Arc<Pki>,
    pub admins: AdminRegistry,
    /// Admin event streams open at once.
    pub event_streams: Arc<Semaphore>,
    /// Cancelled when the daemon shuts down (ends event streams at once).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The hold on the data dir, released with the daemon.
    pub data_dir_lock: crate::pki::DataDirLock,
    /// The device API's use cases (devices.rs, provision.rs, certs.rs).
    pub devices: Arc<crate::devices::Devices>,
    /// The administrators' use cases (admin_ops.rs, keys_admin.rs).
    pub admin: crate::admin_ops::Admin,
    /// The CRL and its regeneration (crl.rs).
    pub x509: Arc<crate::crl::X509State>,
    /// Rogue-advertiser alerts (alerts.rs).
    pub alerts: crate::alerts::Alerts,
    /// Open bulk OOB import sessions (oob_import.rs).
    pub imports: Arc<crate::oob_import::Imports>,
    /// Setup-code exchanges between their two steps (setup_code.rs).
    pub setup_exchanges: crate::setup_code::Exchanges,
    /// Auto-approval rules and enrollment windows (policy_admin.rs,
    /// windows.rs).
    pub policy: Arc<crate::policy_admin::Policy>,
}

/// `d.store`, `d.clock`, `d.metrics`, `d.core.transact(…)` reach the core.
impl std::ops::Deref for Daemon {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Daemon {
    pub fn daemon_id(&self) -> &str {
        &self.pki.identity.daemon_id
    }

    pub fn now(&self) -> i64 {
        self.core.now()
    }

    /// Drop pending requests not seen within `pending.expiry`, and purge
    /// expired replay and token records (housekeeping).
    pub async fn expire_pending(&self) -> Result<usize, Error> {
        self.devices.expire_pending().await
    }
}

/// The daemon's side of the CRL and alerts: the use cases call these with
/// their own state (crl.rs, alerts.rs).
impl Daemon {
    /// Re-sign the CRL now (after a committed change) and publish it.
    pub async fn refresh_crl(&self) -> Result<Arc<crate::crl::CrlDoc>, Error> {
        self.x509
            .refresh(&self.core, &self.pki, &self.cfg.certificates)
            .await
    }

    /// After a change that revoked something: regenerate, and if that fails
    /// leave it to [`crl_maintenance`] (the change itself is committed).
    pub async fn crl_changed(&self) {
        if let Err(e) = self.refresh_crl().await {
            tracing::warn!(error = %e, "CRL regeneration failed; will retry");
        }
    }

    /// Record a security alert (alerts.rs).
    pub async fn raise_alert(
        &self,
        a: crate::alerts::AlertDraft,
    ) -> Result<Option<idprov_proto::admin::Alert>, Error> {
        self.alerts.raise(&self.core, &self.cfg.monitor, a).await
    }
}

/// Keep the CRL fresh: check every few seconds whether it is behind the
/// store or past half of its validity.
pub async fn crl_maintenance(d: Arc<Daemon>, shutdown: tokio_util::sync::CancellationToken) {
    let period = (d.cfg.certificates.crl_validity / 8).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match d.x509.due(&d.core, &d.cfg.certificates).await {
            Ok(true) => d.crl_changed().await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "CRL check failed"),
        }
    }
}

/// Close the enrollment windows that saw too many refused proofs, with an
/// alert (windows.rs counts them).
pub async fn window_watch(d: Arc<Daemon>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(mut trips) = d.policy.guard.take_trips() else {
        return;
    };
    loop {
        let id = tokio::select! {
            _ = shutdown.cancelled() => return,
            id = trips.recv() => match id { Some(id) => id, None => return },
        };
        let why = idprov_proto::policy::WindowClosed::ProofFailures;
        match d.policy.close_window(id, why, "daemon".into()).await {
            Ok(w) => {
                let draft = crate::alerts::AlertDraft {
                    kind: idprov_proto::admin::AlertKind::WindowProofFailures,
                    instance: format!("window:{}", w.id),
                    addresses: Vec::new(),
                    port: None,
                    daemon_id: None,
                    ca_fingerprint: None,
                    detail: format!(
                        "{} refused proofs while enrollment window {} was open; it is closed",
                        d.cfg.policy.window_max_failed_proofs, w.id
                    ),
                };
                if let Err(e) = d.raise_alert(draft).await {
                    tracing::warn!(error = %e, window = id, "could not raise the window alert");
                }
            }
            // Already closed (its time or count came first).
            Err(Error::Conflict(_)) => {}
            Err(e) => tracing::warn!(error = %e, window = id, "could not close the window"),
        }
    }
}

//! The clock against its persisted high-water mark (security rule 9). A
//! clock that ran ahead and was corrected leaves the mark in the future, and
//! provisioning is refused (`clock_regressed`) until the clock catches up —
//! for as long as the jump was. This is how that shows (`/readyz`, one alert
//! per episode) and the administrators' audited way out: accept the current
//! clock, lowering the mark to it.

use std::sync::atomic::Ordering;

use idprov_proto::admin::{AlertKind, ClockState};

use crate::admin_ops::Actor;
use crate::alerts::AlertDraft;
use crate::audit::draft;
use crate::daemon::Daemon;
use crate::devices::CLOCK_TOLERANCE;
use crate::error::Error;
use crate::storage::Change;

/// Whether `now` is too far behind the mark to issue (what the issuing
/// transactions refuse, devices.rs `preflight`).
pub fn regressed(now: i64, high_water: Option<i64>) -> bool {
    high_water.is_some_and(|hwm| now + CLOCK_TOLERANCE < hwm)
}

impl Daemon {
    /// The clock against the mark. A regressed clock raises an alert, once
    /// until the clock recovers (readiness probes and housekeeping call
    /// this often).
    pub async fn clock_state(&self) -> Result<ClockState, Error> {
        let now = self.core.now();
        let high_water = self.core.read(|v| Ok(v.clock_high_water()?)).await?;
        let state = ClockState {
            now,
            high_water,
            regressed: regressed(now, high_water),
        };
        if !state.regressed {
            self.alerts.clock_alerted.store(false, Ordering::SeqCst);
        } else if !self.alerts.clock_alerted.swap(true, Ordering::SeqCst) {
            let behind = high_water.unwrap_or(now).saturating_sub(now);
            let alert = AlertDraft {
                kind: AlertKind::ClockRegressed,
                instance: "clock".into(),
                addresses: Vec::new(),
                port: None,
                daemon_id: None,
                ca_fingerprint: None,
                detail: format!(
                    "the clock ({now}) is {behind} s behind the highest time recorded ({}); provisioning is refused until it catches up or an administrator accepts it (idprovd clock accept)",
                    high_water.unwrap_or(now)
                ),
            };
            if let Err(e) = self.raise_alert(alert).await {
                // Try again at the next check.
                self.alerts.clock_alerted.store(false, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(state)
    }

    /// Accept the current clock: lower the high-water mark to now, audited
    /// with the administrator. A clock that is not behind changes nothing.
    pub async fn accept_clock(&self, actor: Actor) -> Result<ClockState, Error> {
        let now = self.core.now();
        let label = actor.label();
        let source = actor.source.clone();
        let state = self
            .core
            .transact(move |v, u| {
                let high_water = v.clock_high_water()?;
                if !regressed(now, high_water) {
                    return Ok(ClockState {
                        now,
                        high_water,
                        regressed: false,
                    });
                }
                u.change(Change::AcceptClock(now));
                u.audit(draft(
                    now,
                    &label,
                    "clock_accepted",
                    None,
                    Some(&source),
                    format!(
                        "clock high-water mark lowered from {} to {now}",
                        high_water.unwrap_or(now)
                    ),
                ));
                Ok(ClockState {
                    now,
                    high_water: Some(now),
                    regressed: false,
                })
            })
            .await?;
        tracing::warn!(actor = %actor.label(), now, high_water = ?state.high_water, "clock accepted by an administrator");
        self.alerts.clock_alerted.store(false, Ordering::SeqCst);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::regressed;

    #[test]
    fn regressed_only_beyond_the_tolerance() {
        assert!(!regressed(100, None));
        assert!(!regressed(100, Some(105)));
        assert!(regressed(100, Some(106)));
        assert!(!regressed(200, Some(100)));
    }
}

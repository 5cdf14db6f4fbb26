//! Enrollment windows: for a set time an administrator lets matching
//! unknown devices in without a key press (the admission itself is in
//! admission.rs). A window closes at its time, at its count, on request, or
//! after `policy.window_max_failed_proofs` refused proofs while it is open
//! (with an alert). Windows are stored with the rules, so an open window
//! survives a restart and still closes at its time; the count of refused
//! proofs is kept in memory and starts again from zero after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idprov_proto::admin::AdminEvent;
use idprov_proto::policy::{WindowClosed, WindowList, WindowOpen, WindowView};
use tokio::sync::{broadcast, mpsc};

use crate::audit::{Actor, draft};
use crate::error::Error;
use crate::policy::PolicyRecord;
use crate::policy_admin::Policy;
use crate::storage::{Change, Unit};

/// Counts refused proofs against each open window; the window whose count
/// reaches the threshold is sent (once) to the task that closes it.
pub struct WindowGuard {
    threshold: u32,
    open: Mutex<HashMap<u64, Tracked>>,
    trip: mpsc::Sender<u64>,
    trips: Mutex<Option<mpsc::Receiver<u64>>>,
}

struct Tracked {
    closes_at: i64,
    failures: u32,
}

impl WindowGuard {
    pub fn new(threshold: u32) -> Arc<WindowGuard> {
        // A trip is sent once per window, and few windows are open at once.
        let (trip, rx) = mpsc::channel(64);
        Arc::new(WindowGuard {
            threshold,
            open: Mutex::new(HashMap::new()),
            trip,
            trips: Mutex::new(Some(rx)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The windows to close for their refused proofs (taken once, by the
    /// task that closes them).
    pub fn take_trips(&self) -> Option<mpsc::Receiver<u64>> {
        self.trips
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Follow a window's state (opened, admitted, closed).
    pub fn observe(&self, w: &WindowView) {
        let mut open = self.lock();
        if w.is_open() {
            open.entry(w.id).or_insert(Tracked {
                closes_at: w.closes_at,
                failures: 0,
            });
        } else {
            open.remove(&w.id);
        }
    }

    /// A refused proof at `now`: counts against every window open then.
    pub fn failed_proof(&self, now: i64) {
        let mut open = self.lock();
        open.retain(|_, t| t.closes_at > now);
        for (id, t) in open.iter_mut() {
            t.failures += 1;
            if t.failures == self.threshold {
                tracing::warn!(
                    window = id,
                    failures = t.failures,
                    "refused proofs during an enrollment window"
                );
                // Full only if 64 windows tripped and none was closed yet;
                // such a window still closes at its time.
                let _ = self.trip.try_send(*id);
            }
        }
    }

    /// Keep up with windows changed by any use case (admissions close a
    /// window at its count).
    pub async fn follow(self: Arc<Self>, mut events: broadcast::Receiver<AdminEvent>) {
        loop {
            match events.recv().await {
                Ok(AdminEvent::Window { window }) => self.observe(&window),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Record a window's new state in `u`: the record, an event, and for a
/// closed window its audit entry.
pub(crate) fn record_window(u: &mut Unit, rec: &PolicyRecord, w: &WindowView, actor: &str) {
    u.change(Change::PutPolicy(rec.clone()));
    if let (Some(why), Some(at)) = (w.closed, w.closed_at) {
        let detail = format!(
            "window {} closed ({}), {} admitted",
            w.id,
            why.as_str(),
            w.admitted
        );
        u.audit(draft(at, actor, "window_closed", None, None, detail));
    }
    u.event(AdminEvent::Window { window: w.clone() });
}

impl Policy {
    pub async fn list_windows(&self) -> Result<WindowList, Error> {
        let now = self.core.now();
        let rec = self.core.read(|v| Ok(v.policy()?)).await?;
        let items = rec
            .unwrap_or_default()
            .windows
            .iter()
            .map(|w| PolicyRecord::window_at(w, now))
            .collect();
        Ok(WindowList { items })
    }

    /// Open a window (default `policy.window_default`, at most
    /// `policy.window_max`; at most `policy.max_open_windows` at once).
    pub async fn open_window(&self, req: WindowOpen, actor: Actor) -> Result<WindowView, Error> {
        let p = &self.cfg.policy;
        let secs = req.duration_secs.unwrap_or(p.window_default.as_secs());
        if secs == 0 || Duration::from_secs(secs) > p.window_max {
            return Err(Error::bad_request(format!(
                "duration_secs must be between 1 and {} (policy.window_max)",
                p.window_max.as_secs()
            )));
        }
        if req.max_devices == Some(0) {
            return Err(Error::bad_request("max_devices must be positive"));
        }
        let max_open = p.max_open_windows;
        let now = self.core.now();
        let w = self
            .core
            .transact(move |v, u| {
                let mut rec = v.policy()?.unwrap_or_default();
                let open = rec
                    .windows
                    .iter()
                    .filter(|w| PolicyRecord::window_at(w, now).is_open())
                    .count();
                if open >= max_open {
                    return Err(Error::conflict(format!(
                        "{open} windows are open (policy.max_open_windows); close one first"
                    )));
                }
                rec.next_window += 1;
                let w = WindowView {
                    id: rec.next_window,
                    opened_by: actor.label(),
                    opened_at: now,
                    closes_at: now.saturating_add(secs as i64),
                    device_id: req.device_id.clone(),
                    source: req.source,
                    max_devices: req.max_devices,
                    admitted: 0,
                    closed: None,
                    closed_at: None,
                };
                rec.windows.push(w.clone());
                rec.prune();
                let detail = format!(
                    "window {} open for {secs}s: device_id {}, source {}, max_devices {}",
                    w.id,
                    w.device_id.as_ref().map_or("any".into(), |g| g.to_string()),
                    w.source.map_or("any".into(), |c| c.to_string()),
                    w.max_devices.map_or("none".into(), |m| m.to_string()),
                );
                u.audit(draft(
                    now,
                    &actor.label(),
                    "window_opened",
                    None,
                    Some(&actor.source),
                    detail,
                ));
                record_window(u, &rec, &w, &actor.label());
                Ok(w)
            })
            .await?;
        self.guard.observe(&w);
        Ok(w)
    }

    /// Close window `id` now, for `why`, by `actor` (`admin:NAME` or
    /// `daemon`).
    pub async fn close_window(
        &self,
        id: u64,
        why: WindowClosed,
        actor: String,
    ) -> Result<WindowView, Error> {
        let now = self.core.now();
        let w = self
            .core
            .transact(move |v, u| {
                let mut rec = v.policy()?.unwrap_or_default();
                let w = rec
                    .windows
                    .iter_mut()
                    .find(|w| w.id == id)
                    .ok_or_else(|| Error::not_found(format!("no window {id}")))?;
                if !PolicyRecord::window_at(w, now).is_open() {
                    return Err(Error::conflict(format!("window {id} is already closed")));
                }
                w.closed = Some(why);
                w.closed_at = Some(now);
                let w = w.clone();
                record_window(u, &rec, &w, &actor);
                Ok(w)
            })
            .await?;
        self.guard.observe(&w);
        Ok(w)
    }

    /// Record the windows whose time ran out as closed (they admit nothing
    /// past their time already; this audits it and tells the TUI).
    pub async fn close_expired(&self) -> Result<usize, Error> {
        let now = self.core.now();
        let due = |rec: &PolicyRecord| {
            rec.windows
                .iter()
                .filter(|w| w.closed.is_none() && w.closes_at <= now)
                .count()
        };
        let rec = self.core.read(|v| Ok(v.policy()?)).await?;
        if rec.as_ref().is_none_or(|r| due(r) == 0) {
            return Ok(0);
        }
        self.core
            .transact(move |v, u| {
                let mut rec = v.policy()?.unwrap_or_default();
                let mut closed = Vec::new();
                for w in rec.windows.iter_mut() {
                    if w.closed.is_none() && w.closes_at <= now {
                        *w = PolicyRecord::window_at(w, now);
                        closed.push(w.clone());
                    }
                }
                for w in &closed {
                    record_window(u, &rec, w, "daemon");
                }
                Ok(closed.len())
            })
            .await
    }

    /// Track the windows a previous run left open.
    pub async fn load_guard(&self) -> Result<(), Error> {
        for w in self.list_windows().await?.items {
            self.guard.observe(&w);
        }
        Ok(())
    }
}

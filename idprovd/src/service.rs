//! Living under a service manager: systemd readiness (`Type=notify`), the
//! watchdog, a status line, and closing the store cleanly on the way out.
//!
//! Everything here is a no-op when `NOTIFY_SOCKET` is not set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::storage::StoreHealth;
use crate::{Daemon, Running};

/// How often the status line is refreshed when there is no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(30);
/// How long shutdown waits for the last users of the store to let go. The
/// HTTPS connections are closed by then (`server::serve`); this covers
/// tasks ending on the shutdown signal, and keeps SIGTERM to exit within
/// the documented 10 s.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Tell systemd the daemon is ready: called once the HTTPS listener is
/// bound, the store is open and the server task is accepting.
pub fn ready(r: &Running) {
    if !under_systemd() {
        return;
    }
    let status = format!("listening on {}", r.addr);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Until shutdown: ping the watchdog while the store answers, and keep the
/// status line current. A store that stops answering stops the pings, and
/// systemd restarts the daemon after `WatchdogSec`.
pub async fn supervise(d: Arc<Daemon>, addr: SocketAddr, shutdown: CancellationToken) {
    if !under_systemd() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(100)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                send(&[NotifyState::Stopping, NotifyState::Status("stopping: draining requests")]);
                return;
            }
            _ = tick.tick() => {}
        }
        // A store that failed on I/O still reads, but takes no writes: no
        // ping, so systemd restarts a daemon that cannot recover by itself.
        if let StoreHealth::Unavailable { reason } = d.core.store.status().health {
            tracing::error!(error = %reason, "store unavailable; not feeding the watchdog");
            send(&[NotifyState::Status("store unavailable after an I/O error")]);
            continue;
        }
        // Bounded: a wedged store must not wedge the pings' decision.
        let snap = tokio::time::timeout(every, d.store_snapshot()).await;
        match snap {
            Ok(Ok(s)) => {
                let paused = if s.paused {
                    ", provisioning PAUSED"
                } else {
                    ""
                };
                let status = format!(
                    "listening on {addr}: {} devices, {} pending{paused}",
                    s.devices, s.pending
                );
                if watchdog.is_some() {
                    send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    send(&[NotifyState::Status(&status)]);
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store check failed; not feeding the watchdog");
                send(&[NotifyState::Status("store check failing")]);
            }
            Err(_) => {
                tracing::error!("store check timed out; not feeding the watchdog");
                send(&[NotifyState::Status("store check timing out")]);
            }
        }
    }
}

/// Drop the last handle on the store so redb closes it cleanly (the next
/// start then needs no recovery). Waits a bounded time for tasks that
/// still hold the daemon (a request finishing, a stream ending).
pub async fn close(mut d: Arc<Daemon>) -> bool {
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(d) {
            Ok(daemon) => {
                // Blocking: redb flushes on drop.
                let _ = tokio::task::spawn_blocking(move || drop(daemon)).await;
                tracing::info!("store closed");
                return true;
            }
            Err(still_shared) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        users = Arc::strong_count(&still_shared),
                        "the store is still in use; exiting without closing it (all commits are durable; the next start checks it)"
                    );
                    return false;
                }
                d = still_shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

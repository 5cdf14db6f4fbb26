//! The keeper: a background task that keeps the device's token fresh.
//!
//! It renews when less than half of the token's lifetime remains (a little
//! earlier, by a random amount, so a fleet provisioned together does not
//! renew together), retries failures with backoff, proves the key again from
//! scratch when the token expired or the daemon no longer honours it, and
//! stops only when the daemon refuses the device.

use std::time::Duration;

use idprov_proto::ErrorCode;
use idprov_proto::device::Credentials;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::random_fraction;
use crate::client::Client;
use crate::error::Error;
use crate::events::Event;

/// Up to this fraction of the lifetime is taken off the renewal time.
const RENEW_JITTER: f64 = 0.1;

/// Handle of the renewal task. Dropping it stops the task.
pub struct Keeper {
    rx: watch::Receiver<Credentials>,
    task: Option<JoinHandle<Error>>,
}

impl Keeper {
    pub(crate) fn spawn(client: Client, creds: Credentials) -> Keeper {
        let (tx, rx) = watch::channel(creds);
        let task = tokio::spawn(run(client, tx));
        Keeper {
            rx,
            task: Some(task),
        }
    }

    /// The current credentials.
    pub fn current(&self) -> Credentials {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every new token (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<Credentials> {
        self.rx.clone()
    }

    /// Wait until the keeper stops: that happens only when the daemon refused
    /// the device ([`Error::Rejected`]).
    pub async fn finished(mut self) -> Error {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(e) => e,
                Err(e) => Error::config_from("keeper task ended", e),
            },
            None => Error::config("keeper already finished"),
        }
    }

    /// Stop renewing.
    pub fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// When to renew, in server time: at `renew_after` (the daemon's half-life
/// hint) or half-life, whichever is earlier, minus jitter.
fn renew_at(c: &Credentials) -> i64 {
    let life = (c.expires_at - c.issued_at).max(0);
    let half = c.issued_at + life / 2;
    let target = if c.renew_after > c.issued_at {
        c.renew_after.min(half)
    } else {
        half
    };
    let jitter = (life as f64 * RENEW_JITTER * random_fraction()) as i64;
    target - jitter
}

async fn run(client: Client, tx: watch::Sender<Credentials>) -> Error {
    let inner = client.inner.clone();
    loop {
        let current = tx.borrow().clone();
        tokio::time::sleep(inner.clock.until(renew_at(&current))).await;

        let mut failures = 0u32;
        let next = loop {
            let expired = inner.clock.now() >= current.expires_at;
            let attempt = if expired {
                reauthenticate(&client, "token expired").await
            } else {
                match client.renew(&current).await {
                    Err(e) if e.code() == Some(ErrorCode::InvalidToken) => {
                        reauthenticate(&client, "daemon no longer accepts the token").await
                    }
                    other => other,
                }
            };
            match attempt {
                Ok(c) => break c,
                Err(Error::Rejected { message }) => {
                    client.forget();
                    inner.events.emit(Event::Revoked {
                        message: message.clone(),
                    });
                    return Error::Rejected { message };
                }
                Err(e) => {
                    // Nothing but a refusal ends the keeper: a wrong server or
                    // a broken network may be fixed while the device waits.
                    let wait = match client.retry_delay(e, &mut failures).await {
                        Ok(w) => w,
                        Err(fatal) => {
                            let wait = inner.backoff.cap;
                            inner.events.emit(Event::RetryScheduled {
                                error: fatal.report(),
                                retry_in: wait,
                            });
                            wait
                        }
                    };
                    // Never sleep past expiry when a retry could still renew.
                    let until_expiry = inner.clock.until(current.expires_at);
                    let wait = if until_expiry > Duration::from_millis(100) {
                        wait.min(until_expiry)
                    } else {
                        wait
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        };
        // Publish first, so whoever reacts to the event reads the new token.
        let expires_at = next.expires_at;
        tx.send_replace(next);
        inner.events.emit(Event::Renewed { expires_at });
    }
}

async fn reauthenticate(client: &Client, reason: &str) -> Result<Credentials, Error> {
    client.inner.events.emit(Event::Reauthenticating {
        reason: reason.to_string(),
    });
    client.provision_fresh().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(issued: i64, expires: i64, renew_after: i64) -> Credentials {
        Credentials {
            device_id: "d".parse().unwrap_or_else(|e| panic!("{e}")),
            token: String::new(),
            issued_at: issued,
            expires_at: expires,
            renew_after,
            key_id: String::new(),
            certificate: None,
            ca_chain: Vec::new(),
        }
    }

    #[test]
    fn renews_before_half_life_within_jitter() {
        for _ in 0..100 {
            let at = renew_at(&creds(1000, 2000, 1500));
            assert!((1400..=1500).contains(&at), "{at}");
        }
        // A later hint than half-life is not trusted beyond half-life.
        let at = renew_at(&creds(1000, 2000, 1900));
        assert!(at <= 1500);
        // An earlier hint is honoured.
        let at = renew_at(&creds(1000, 2000, 1200));
        assert!((1100..=1200).contains(&at));
        // Garbage (expiry before issue) renews right away, no overflow.
        assert!(renew_at(&creds(1000, 900, 0)) <= 1000);
    }
}

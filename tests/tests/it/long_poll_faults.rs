//! What a waiting request (`Prefer: wait`, §5.5) must not survive: a daemon
//! restart answers it, and the device that polls again gets its decision
//! from the new daemon; a proof key revoked while the request waits is
//! refused when the device is approved, not given a token.

use std::time::Duration;

use anyhow::Context;
use idprov_tests::{DeviceKey, TestDaemon};

use crate::long_poll::{pend_then_wait, pending_revision, start_waiting};

type R = anyhow::Result<()>;

/// The pending revision of `id` once it is past `before`: the waiting
/// request's poll is committed (the daemon counts a waiter slightly before).
async fn revision_after(d: &TestDaemon, id: &str, before: u64) -> anyhow::Result<u64> {
    for _ in 0..500 {
        let rev = pending_revision(d, id).await?;
        if rev > before {
            return Ok(rev);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("{id}'s waiting poll was never recorded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_device_polls_again_and_gets_its_answer() -> R {
    let d = TestDaemon::start().await?;
    let key = DeviceKey::es256();
    let waiting = pend_then_wait(&d, "lp-restart", &key, 25).await?;
    let before = pending_revision(&d, "lp-restart").await?;
    let d = tokio::time::timeout(Duration::from_secs(20), d.restart())
        .await
        .context("the restart was held by the waiting request")??;
    // The stop answered the held request: come back (at once).
    let (answer, _) = waiting.await??;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.retry_after.as_deref(), Some("0"));
    // The device polls the restarted daemon, waits there, and is approved.
    let again = start_waiting(&d, "lp-restart", &key, 25);
    let rev = revision_after(&d, "lp-restart", before).await?;
    d.admin()?.approve(&"lp-restart".parse()?, rev).await?;
    let (answer, _) = tokio::time::timeout(Duration::from_secs(10), again)
        .await
        .context("no answer after the approval")???;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(!answer.token().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_while_the_device_waits_is_refused() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let key = DeviceKey::es256();
    // The key belongs to a known device as well (key_reused on the second
    // ID, which waits for a person).
    d.oob_key("lp-owner", &key).await?;
    assert_eq!(d.provision("lp-owner", &key).await?.status, 200);
    let waiting = pend_then_wait(&d, "lp-copy", &key, 25).await?;
    let rev = revision_after(&d, "lp-copy", 1).await?;
    // Compromised: revoked for good (invariant I4) while lp-copy waits.
    admin
        .key_revoke(&"lp-owner".parse()?, key.kid(), Some("compromised".into()))
        .await?;
    admin.approve(&"lp-copy".parse()?, rev).await?;
    let (answer, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .context("no answer after the approval")???;
    assert_eq!(
        (answer.status, answer.code()),
        (403, "refused"),
        "a revoked key got an answer: {:?}",
        answer.body
    );
    // And a fresh request with it is refused as well.
    d.clock.advance(5);
    assert_eq!(d.provision("lp-copy", &key).await?.status, 403);
    Ok(())
}

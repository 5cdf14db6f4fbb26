//! Group commit (issue 14 item 1) through HTTPS: renewals that arrive while
//! the writer is busy share one durable commit, and a full commit queue
//! answers `503 busy` with `Retry-After`, leaving nothing behind.
//!
//! The writer is held busy deterministically: the test opens a write
//! transaction on the daemon's store and keeps it open until it releases
//! it, so every decision behind it waits in the queue.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idprov_proto::device::paths;
use idprov_tests::{Answer, DeviceKey, TestDaemon, post_json};

type R = anyhow::Result<()>;

/// Holds the store's write transaction until dropped.
struct HeldWriter {
    release: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeldWriter {
    fn hold(d: &TestDaemon) -> anyhow::Result<HeldWriter> {
        let store = d.daemon.core.store.clone();
        let (held_tx, held_rx) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // An empty unit: nothing is written, the lock is only held.
            let _ = store.transact(&mut move |_, _| {
                let _ = held_tx.send(());
                let _ = released.recv();
                Ok(())
            });
        });
        held_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the store's write transaction did not open")?;
        Ok(HeldWriter {
            release: Some(release),
            thread: Some(thread),
        })
    }
}

impl Drop for HeldWriter {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` provisioned devices, with their tokens.
async fn devices(d: &TestDaemon, n: usize) -> anyhow::Result<Vec<(String, DeviceKey, String)>> {
    let mut out = Vec::new();
    for i in 0..n {
        let (id, key) = (format!("gc-{i:02}"), DeviceKey::es256());
        d.oob_key(&id, &key).await?;
        let a = d.provision(&id, &key).await?;
        if a.status != 200 {
            bail!("provisioning {id}: {} {}", a.status, a.body);
        }
        let token = a.token().to_string();
        out.push((id, key, token));
    }
    Ok(out)
}

/// A renewal's body, made now (so that it can be sent again unchanged).
fn renewal(d: &TestDaemon, id: &str, key: &DeviceKey, token: &str) -> serde_json::Value {
    let proof = key.proof(
        id,
        &d.daemon_id(),
        idprov_proto::device::ProofEndpoint::Renew,
        d.now(),
    );
    serde_json::json!({ "token": token, "proof": proof })
}

fn send(
    d: &TestDaemon,
    body: serde_json::Value,
) -> tokio::task::JoinHandle<anyhow::Result<Answer>> {
    let (client, url) = (d.http(), d.endpoint(paths::RENEW));
    tokio::spawn(async move { post_json(&client, &url, &body).await })
}

/// Wait (polling, at most 30 s) until `ready` holds.
async fn until(what: &str, ready: impl Fn() -> bool) -> R {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Send the first renewal and wait until the writer has taken it (it then
/// waits for the held store): whatever comes next queues behind it.
async fn first_with_writer(
    d: &TestDaemon,
    body: serde_json::Value,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Answer>>> {
    let first = send(d, body);
    let c = d.daemon.core.commits.clone();
    until("the writer took the first decision", || {
        c.writing() && c.queued() == 0
    })
    .await?;
    Ok(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_behind_a_busy_writer_share_one_commit() -> R {
    let d = TestDaemon::start().await?;
    let devs = devices(&d, 8).await?;
    let commits_before = d.metric("idprov_store_commit_seconds_count").await?;

    let held = HeldWriter::hold(&d)?;
    let (id, key, token) = &devs[0];
    let mut pending = vec![first_with_writer(&d, renewal(&d, id, key, token)).await?];
    pending.extend(
        devs[1..]
            .iter()
            .map(|(id, key, token)| send(&d, renewal(&d, id, key, token))),
    );
    let c = d.daemon.core.commits.clone();
    until("seven decisions wait for the writer", || c.queued() == 7).await?;
    drop(held);
    for p in pending {
        let a = p.await??;
        if a.status != 200 {
            bail!("renewal: {} {}", a.status, a.body);
        }
    }
    let commits = d.metric("idprov_store_commit_seconds_count").await? - commits_before;
    // One commit for the first decision, one for the seven behind it (one
    // each without group commit: 8); a background task may add one.
    assert!(
        (2.0..=3.0).contains(&commits),
        "{commits} durable commits for 8 renewals"
    );
    let batches = d.metric("idprov_store_batch_size_count").await?;
    let sizes = d.metric("idprov_store_batch_size_sum").await?;
    assert!(
        sizes - batches >= 6.0,
        "a batch of 7 is counted: {batches} batches of {sizes} decisions"
    );
    // Every decision of the batch was applied.
    for (id, _, _) in &devs {
        let id = id.clone();
        let issued = d
            .daemon
            .core
            .store
            .read_with(move |v| Ok(v.device(&id)?.map(|dev| dev.tokens_issued)))?;
        assert_eq!(issued, Some(2), "provisioned and renewed once");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_commit_queue_answers_busy_and_keeps_nothing() -> R {
    let d = TestDaemon::start_with(|c| c.store.commit_queue = 2).await?;
    let devs = devices(&d, 4).await?;

    let held = HeldWriter::hold(&d)?;
    let (id, key, token) = &devs[0];
    let mut first = vec![first_with_writer(&d, renewal(&d, id, key, token)).await?];
    first.extend(
        devs[1..3]
            .iter()
            .map(|(id, key, token)| send(&d, renewal(&d, id, key, token))),
    );
    // One decision is with the writer, two fill the queue.
    let c = d.daemon.core.commits.clone();
    until("two decisions fill the queue", || c.queued() == 2).await?;
    let (id, key, token) = &devs[3];
    let body = renewal(&d, id, key, token);
    let refused = post_json(&d.http(), &d.endpoint(paths::RENEW), &body).await?;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.code(), "busy");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    drop(held);
    for p in first {
        let a = p.await??;
        assert_eq!(a.status, 200, "queued renewals are served: {}", a.body);
    }
    // Nothing of the refused request was kept: the same proof is accepted.
    let again = post_json(&d.http(), &d.endpoint(paths::RENEW), &body).await?;
    assert_eq!(again.status, 200, "{}", again.body);
    Ok(())
}

//! A pending device that asks to wait (`Prefer: wait=N`, RFC 7240) is
//! answered the moment an administrator decides, on the request it holds
//! open: the token when approved, a refusal when rejected. The request that
//! makes it pending is answered at once (the device shows its verification
//! code) and told to ask again at once; past the bounds, at the end of the
//! wait and when the daemon stops, it is told to come back, as without
//! waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use idprov_client::{Client, KeySigner, Trust};
use idprov_proto::admin::ListQuery;
use idprov_proto::device::{ProofEndpoint, ProvisionRequest, paths};
use idprov_tests::{Answer, DeviceKey, TestDaemon};

type R = Result<()>;

/// POST /provision asking to wait `secs`; the answer and its
/// `Preference-Applied` header.
async fn provision_waiting(
    http: reqwest::Client,
    url: String,
    req: ProvisionRequest,
    secs: u64,
) -> Result<(Answer, Option<String>)> {
    let resp = http
        .post(url)
        .header("prefer", format!("wait={secs}"))
        .json(&req)
        .send()
        .await
        .context("POST /provision")?;
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (retry_after, applied) = (header("retry-after"), header("preference-applied"));
    let body = resp.json().await.context("answer is not JSON")?;
    Ok((
        Answer {
            status,
            retry_after,
            body,
        },
        applied,
    ))
}

pub(crate) fn start_waiting(
    d: &TestDaemon,
    id: &str,
    key: &DeviceKey,
    secs: u64,
) -> tokio::task::JoinHandle<Result<(Answer, Option<String>)>> {
    let proof = key.proof(id, &d.daemon_id(), ProofEndpoint::Provision, d.now());
    let req = key.request(id, proof);
    tokio::spawn(provision_waiting(
        d.http(),
        d.endpoint(paths::PROVISION),
        req,
        secs,
    ))
}

/// Make `id` pending (answered at once, told to ask again at once), then
/// send the request that waits, and return once the daemon holds it.
pub(crate) async fn pend_then_wait(
    d: &TestDaemon,
    id: &str,
    key: &DeviceKey,
    secs: u64,
) -> Result<tokio::task::JoinHandle<Result<(Answer, Option<String>)>>> {
    let held_before = d.daemon.devices.waiters.count();
    let (first, applied) = start_waiting(d, id, key, secs).await??;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.retry_after.as_deref(), Some("0"));
    assert_eq!(applied, None, "the first request is answered at once");
    let waiting = start_waiting(d, id, key, secs);
    for _ in 0..500 {
        if d.daemon.devices.waiters.count() > held_before {
            return Ok(waiting);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the daemon never held {id}'s request")
}

/// The pending request of `id`, once it is there.
pub(crate) async fn pending_revision(d: &TestDaemon, id: &str) -> Result<u64> {
    let admin = d.admin()?;
    for _ in 0..500 {
        let page = admin.pending_list(&ListQuery::default()).await?;
        if let Some(p) = page.items.iter().find(|p| p.device_id.as_str() == id) {
            return Ok(p.revision);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("{id} never became pending")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_device_gets_its_token_the_moment_it_is_approved() -> R {
    let d = TestDaemon::start().await?;
    let key = DeviceKey::es256();
    let waiting = pend_then_wait(&d, "lp-1", &key, 25).await?;
    let rev = pending_revision(&d, "lp-1").await?;
    let approved = Instant::now();
    d.admin()?.approve(&"lp-1".parse()?, rev).await?;
    // Without waiting, the device would have been told 202 + Retry-After.
    let (answer, applied) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .context("no answer within 10 s of the approval")???;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(!answer.token().is_empty());
    assert_eq!(applied.as_deref(), Some("wait=25"));
    eprintln!("approval → token: {:?}", approved.elapsed());
    // The token is a real one: the device renews with it.
    let renewed = d.renew("lp-1", &key, answer.token()).await?;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_reaches_the_waiting_device_and_the_bounds_fall_back() -> R {
    let d = TestDaemon::start_with(|c| c.pending.max_waiters_per_source = 1).await?;
    let waiting = pend_then_wait(&d, "lp-no", &DeviceKey::es256(), 25).await?;
    let rev = pending_revision(&d, "lp-no").await?;
    // The source's one place is taken: another device is answered at once
    // and polls as without waiting (Retry-After, and too soon is slowed).
    let other_key = DeviceKey::es256();
    for expected in [202, 429] {
        let (other, applied) = tokio::time::timeout(
            Duration::from_secs(10),
            start_waiting(&d, "lp-2", &other_key, 25),
        )
        .await
        .context("a device past the bound was held")???;
        assert_eq!(other.status, expected, "{:?}", other.body);
        assert_eq!(applied, None, "past the bound the wait is not applied");
        if expected == 202 {
            let retry = d.cfg.pending.retry_after.as_secs();
            assert_eq!(other.retry_after, Some(retry.to_string()));
        } else {
            assert_eq!(other.code(), "slow_down");
        }
    }

    d.admin()?
        .reject(&"lp-no".parse()?, rev, Some("not ours".into()))
        .await?;
    let (answer, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .context("no answer within 10 s of the rejection")???;
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.code(), "refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_at_its_bound_and_when_the_daemon_stops() -> R {
    let mut d = TestDaemon::start_with(|c| c.pending.max_wait = Duration::from_millis(300)).await?;
    // Asking for longer than the daemon allows: held for its bound only,
    // then told to ask again at once — and that request is held again,
    // although the slow-down rule would refuse a poll this soon.
    let key = DeviceKey::es256();
    for _ in 0..2 {
        let started = Instant::now();
        let (answer, applied) = pend_then_wait_or_wait(&d, "lp-t", &key).await?;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        assert_eq!(applied.as_deref(), Some("wait=1"));
        assert_eq!(answer.retry_after.as_deref(), Some("0"));
    }

    let mut d2 = TestDaemon::start().await?;
    let waiting = pend_then_wait(&d2, "lp-s", &DeviceKey::es256(), 25).await?;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), d2.stop())
        .await
        .context("a waiting request held the shutdown")??;
    let (answer, _) = waiting.await??;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert!(stopping.elapsed() < Duration::from_secs(10));
    d.stop().await?;
    Ok(())
}

/// The first call makes `id` pending; every call returns the held answer.
async fn pend_then_wait_or_wait(
    d: &TestDaemon,
    id: &str,
    key: &DeviceKey,
) -> Result<(Answer, Option<String>)> {
    let known = d
        .admin()?
        .pending_list(&ListQuery::default())
        .await?
        .items
        .iter()
        .any(|p| p.device_id.as_str() == id);
    let waiting = if known {
        start_waiting(d, id, key, 60)
    } else {
        pend_then_wait(d, id, key, 60).await?
    };
    waiting.await?
}

/// idprov-client asks to wait by default: approved while it waits, it
/// holds its token long before the `Retry-After` it would sleep out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idprov_client_waits_on_its_request_by_default() -> R {
    let d = TestDaemon::start_with(|c| c.pending.retry_after = Duration::from_secs(60)).await?;
    let tmp = tempfile::tempdir()?;
    let signer = Arc::new(KeySigner::generate_p256()?.0);
    let client = Client::builder()
        .device_id("lp-client")
        .server(&d.url)
        .trust(Trust::CaFingerprint(d.daemon.pki.ca_fingerprint.clone()))
        .mac(None)
        .signer(signer)
        .state_dir(tmp.path())
        .build()?;
    let task = tokio::spawn(async move { client.provision().await });
    let rev = pending_revision(&d, "lp-client").await?;
    d.admin()?.approve(&"lp-client".parse()?, rev).await?;
    let creds = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .context("the client did not get its token within 10 s of the approval")???;
    assert!(!creds.token.is_empty());
    Ok(())
}

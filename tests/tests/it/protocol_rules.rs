//! Rules of docs/protocol.md that a device written from the document alone
//! relies on (issue 19): key rotation by renewal, and what the default rate
//! limits do to an honest device that retries after a fixable error.

use idprov_proto::DeviceId;
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::{DeviceKey, TestDaemon, post_json};
use serde_json::json;

type R = anyhow::Result<()>;

fn id(s: &str) -> anyhow::Result<DeviceId> {
    s.parse().map_err(|e| anyhow::anyhow!("{s}: {e:?}"))
}

/// x509.md's rotation recipe: add key 2 with key 1's proof, then renew the
/// key-1 token with a key-2 proof. The new token is bound to key 2, and the
/// device is not flagged (nothing unusual happened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_key_one_token_with_a_key_two_proof_rotates_to_key_two() -> R {
    let d = TestDaemon::start().await?;
    let (k1, k2, stranger) = (DeviceKey::es256(), DeviceKey::rs256(), DeviceKey::es256());
    d.oob_key("rot-1", &k1).await?;
    let first = d.provision("rot-1", &k1).await?;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let added = d.add_key("rot-1", &k1, &k2, None).await?;
    assert_eq!(added.status, 200, "{:?}", added.body);

    // A key the device does not hold cannot renew its token.
    let foreign = d.renew("rot-1", &stranger, first.token()).await?;
    assert_eq!((foreign.status, foreign.code()), (401, "invalid_proof"));

    let rotated = d.renew("rot-1", &k2, first.token()).await?;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["key_id"], k2.kid());
    let dev = d.admin()?.device_get(&id("rot-1")?).await?;
    assert!(
        dev.flags.is_empty(),
        "flags after rotation: {:?}",
        dev.flags
    );

    // The new token is key 2's: renewing it with key 2 works and stays on
    // key 2; a proof without kid is checked against the token's key.
    let again = d.renew("rot-1", &k2, rotated.token()).await?;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["key_id"], k2.kid());
    let mut header = k2.proof_header();
    header.kid = None;
    let now = d.now();
    let claims = json!({"sub": "rot-1", "iat": now, "exp": now + 60,
        "aud": idprov_proto::device::proof_audience(&d.daemon_id(), ProofEndpoint::Renew),
        "jti": idprov_tests::random_jti()});
    let no_kid = post_json(
        &d.http(),
        &d.endpoint(paths::RENEW),
        &json!({"token": again.token(), "proof": k2.sign_raw(&header, &claims)}),
    )
    .await?;
    assert_eq!(no_kid.status, 200, "{:?}", no_kid.body);
    assert_eq!(no_kid.body["key_id"], k2.kid());

    // Once key 1 is removed, its tokens renew into nothing, whatever signs.
    d.admin()?.key_remove(&id("rot-1")?, k1.kid()).await?;
    let stale = d.renew("rot-1", &k2, first.token()).await?;
    assert_eq!((stale.status, stale.code()), (401, "invalid_token"));
    Ok(())
}

/// With the default `[rate_limit]`, an honest device that makes two fixable
/// mistakes (a proof from a wrong clock, then a request with a wrong
/// `key_format`) and then sends a correct request is held back by at most a
/// couple of seconds, and gets its token once it waits `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rate_limits_let_an_honest_device_through_after_two_fixable_refusals() -> R {
    let d = TestDaemon::start_with(|c| {
        c.rate_limit = idprovd::Config::default().rate_limit;
    })
    .await?;
    let k = DeviceKey::es256();
    d.oob_key("honest-1", &k).await?;
    let url = d.endpoint(paths::PROVISION);

    // 1. Its clock is a day ahead: refused proof (it then reads /info).
    let future = k.proof(
        "honest-1",
        &d.daemon_id(),
        ProofEndpoint::Provision,
        d.now() + 86_400,
    );
    let a = post_json(&d.http(), &url, &k.request("honest-1", future)).await?;
    assert_eq!((a.status, a.code()), (401, "invalid_proof"), "{:?}", a.body);
    // 2. It states the wrong key format.
    let b = d
        .provision_with("honest-1", &k, |r| {
            r.key_format = Some(idprov_proto::KeyFormat::RSA_PEM);
        })
        .await?;
    assert_eq!((b.status, b.code()), (400, "bad_request"), "{:?}", b.body);

    // 3. The correct request: through at once, or after a short wait.
    let mut waited = 0;
    let ok = loop {
        let c = d.provision("honest-1", &k).await?;
        if c.status != 429 {
            break c;
        }
        assert_eq!(c.code(), "rate_limited", "{:?}", c.body);
        let secs: i64 = c.retry_after.as_deref().unwrap_or("").parse()?;
        waited += secs;
        assert!(
            waited <= 5,
            "held back {waited} s after two fixable refusals"
        );
        d.clock.advance(secs);
    };
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    eprintln!("honest device waited {waited} s after two fixable refusals");
    Ok(())
}

//! The device protocol through real HTTPS: every matching rule of flow 3,
//! the proof rules (security.md 1–3), renewal, revocation and bad input.

use idprov_proto::admin::{DeviceStatus, ListQuery, ProvisioningState};
use idprov_proto::device::{ProofEndpoint, paths};
use idprov_tests::{DeviceKey, TestDaemon, oob_entry, post_json, random_jti};
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

type R = anyhow::Result<()>;

const RSA_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDJO6HBUN/EVdoalfR6WOM/eYNF
5BEY/Uvoqt1N6RlUp3uKIujrEg5Oxxern8HOqoDe16fGiPCHsqKZwZdR+6zNYY+O
pEpTpNxtBCklpEnjIfTKK1QeJRON6pkA87XlZ8k+ItD6oqLhsQN5L92iNrMCc5Y4
B5BKpAZs/kTx42MFlQIDAQAB
-----END PUBLIC KEY-----
";

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_key_is_approved_with_a_key_bound_token() -> R {
    let d = TestDaemon::start().await?;
    for key in [DeviceKey::es256(), DeviceKey::rs256()] {
        let id = format!("dev-{}", key.alg as u8);
        d.oob_key(&id, &key).await?;
        let a = d.provision(&id, &key).await?;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["status"], "approved");
        assert_eq!(a.body["key_id"], key.kid());
        let c = claims_of(a.token());
        assert_eq!(c["sub"], id.as_str());
        assert_eq!(c["iss"], d.daemon_id());
        assert_eq!(c["aud"], "idprov-hub");
        assert_eq!(c["cnf"]["jkt"], key.kid());
        let exp = c["exp"].as_i64().unwrap_or(0);
        assert_eq!(exp - c["iat"].as_i64().unwrap_or(0), 30 * 24 * 3600);
        let header = jsonwebtoken::decode_header(a.token())?;
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::ES256);
        // The hub can ask whether it is still good.
        let s = post_json(
            &d.http(),
            &d.endpoint(paths::TOKEN_STATUS),
            &json!({"token": a.token()}),
        )
        .await?;
        assert_eq!(s.body["active"], true, "{:?}", s.body);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mac_and_secret_entries_record_the_key() -> R {
    let d = TestDaemon::start().await?;
    let mac = "02:00:5e:10:00:01".parse()?;
    d.oob(vec![
        oob_entry("by-mac", None, Some(mac), None),
        oob_entry("by-secret", None, None, Some("s3cret-one-time")),
    ])
    .await?;
    let k1 = DeviceKey::es256();
    // Wrong MAC, then no MAC: refused.
    let bad = d
        .provision_with("by-mac", &k1, |r| {
            r.mac = Some("02:00:5e:10:00:02".parse().expect("mac"))
        })
        .await?;
    assert_eq!((bad.status, bad.code()), (403, "refused"));
    let none = d.provision("by-mac", &k1).await?;
    assert_eq!(none.status, 403);
    let ok = d
        .provision_with("by-mac", &k1, |r| r.mac = Some(mac))
        .await?;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    // The key is now recorded: another key under the same id is refused.
    let k2 = DeviceKey::es256();
    let other = d
        .provision_with("by-mac", &k2, |r| r.mac = Some(mac))
        .await?;
    assert_eq!(other.status, 403);
    let dev = d.admin()?.device_get(&"by-mac".parse()?).await?;
    assert_eq!(dev.keys[0].kid, k1.kid());
    assert!(dev.flags.contains(&"key_mismatch".to_string()));

    // One-time secret: wrong secret refused, right one admits and is consumed.
    let ks = DeviceKey::es256();
    let wrong = d
        .provision_with("by-secret", &ks, |r| {
            r.secret = Some(idprov_proto::Secret::new("nope-nope"))
        })
        .await?;
    assert_eq!(wrong.status, 403);
    let right = d
        .provision_with("by-secret", &ks, |r| {
            r.secret = Some(idprov_proto::Secret::new("s3cret-one-time"))
        })
        .await?;
    assert_eq!(right.status, 200, "{:?}", right.body);
    let oob = d.admin()?.oob_list(&ListQuery::default()).await?;
    let e = oob
        .items
        .iter()
        .find(|e| e.device_id.as_str() == "by-secret")
        .expect("entry");
    assert!(e.secret_consumed);
    // Removing the device does not revive the secret (invariant I5).
    d.admin()?.device_remove(&"by-secret".parse()?).await?;
    let again = d
        .provision_with("by-secret", &ks, |r| {
            r.secret = Some(idprov_proto::Secret::new("s3cret-one-time"))
        })
        .await?;
    assert_eq!(again.status, 403, "{:?}", again.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_waits_then_gets_its_token_after_approval() -> R {
    let d = TestDaemon::start().await?;
    let k = DeviceKey::es256();
    let a = d.provision("newcomer-1", &k).await?;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["status"], "pending");
    assert_eq!(a.retry_after.as_deref(), Some("2"));
    assert_eq!(a.body["verification_code"], k.public.verification_code());
    // Polling again at once is slowed down, and nothing is recorded.
    let fast = d.provision("newcomer-1", &k).await?;
    assert_eq!((fast.status, fast.code()), (429, "slow_down"));
    assert!(fast.retry_after.is_some());

    let admin = d.admin()?;
    let pending = admin.pending_list(&ListQuery::default()).await?;
    assert_eq!(pending.items.len(), 1);
    let p = &pending.items[0];
    assert_eq!(p.key_fingerprint, k.kid());
    assert_eq!(p.attempts, 1);
    assert_eq!(p.source, "127.0.0.1");
    admin.approve(&p.device_id, p.revision).await?;

    d.clock.advance(2);
    let b = d.provision("newcomer-1", &k).await?;
    assert_eq!(b.status, 200, "{:?}", b.body);
    let audit = admin.audit(&ListQuery::default()).await?;
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.action == "pending_approved" && e.actor == "admin:admin")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_conflicting_devices_are_refused() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let k = DeviceKey::es256();
    assert_eq!(d.provision("bad-1", &k).await?.status, 202);
    // Another key claiming the same pending id is refused and flagged.
    let intruder = DeviceKey::es256();
    d.clock.advance(5);
    let x = d.provision("bad-1", &intruder).await?;
    assert_eq!(x.status, 403);
    let p = admin
        .pending_list(&ListQuery::default())
        .await?
        .items
        .remove(0);
    assert!(p.flags.contains(&"key_conflict".to_string()));
    assert_eq!(
        p.key_fingerprint,
        k.kid(),
        "the first request keeps its place"
    );
    admin
        .reject(&p.device_id, p.revision, Some("not ours".into()))
        .await?;
    d.clock.advance(5);
    let r = d.provision("bad-1", &k).await?;
    assert_eq!((r.status, r.code()), (403, "refused"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_are_single_use_fresh_and_bound() -> R {
    let d = TestDaemon::start().await?;
    let k = DeviceKey::es256();
    d.oob_key("p-1", &k).await?;
    let did = d.daemon_id();
    let now = d.now();
    let url = d.endpoint(paths::PROVISION);
    let http = d.http();
    let send = |proof: String| {
        let req = k.request("p-1", proof);
        let http = http.clone();
        let url = url.clone();
        async move { post_json(&http, &url, &req).await }
    };
    let claims = |iat: i64, exp: i64, aud: String, sub: &str| json!({"sub": sub, "aud": aud, "iat": iat, "exp": exp, "jti": random_jti()});
    let aud = idprov_proto::device::proof_audience(&did, ProofEndpoint::Provision);

    // Replay of an accepted proof.
    let proof = k.proof("p-1", &did, ProofEndpoint::Provision, now);
    assert_eq!(send(proof.clone()).await?.status, 200);
    let replay = send(proof).await?;
    assert_eq!((replay.status, replay.code()), (401, "invalid_proof"));

    let h = k.proof_header();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            k.sign_raw(&h, &claims(now - 1300, now - 1200, aud.clone(), "p-1")),
        ),
        (
            "future",
            k.sign_raw(&h, &claims(now + 1200, now + 1300, aud.clone(), "p-1")),
        ),
        (
            "overlong",
            k.sign_raw(&h, &claims(now, now + 3600, aud.clone(), "p-1")),
        ),
        (
            "wrong aud",
            k.sign_raw(
                &h,
                &claims(now, now + 60, "idprov:other:provision".into(), "p-1"),
            ),
        ),
        (
            "renew aud",
            k.sign_raw(
                &h,
                &claims(
                    now,
                    now + 60,
                    idprov_proto::device::proof_audience(&did, ProofEndpoint::Renew),
                    "p-1",
                ),
            ),
        ),
        (
            "wrong sub",
            k.sign_raw(&h, &claims(now, now + 60, aud.clone(), "p-2")),
        ),
        (
            "short jti",
            k.sign_raw(
                &h,
                &json!({"sub":"p-1","aud":aud,"iat":now,"exp":now+60,"jti":"x"}),
            ),
        ),
        (
            "no iat",
            k.sign_raw(
                &h,
                &json!({"sub":"p-1","aud":aud,"exp":now+60,"jti":random_jti()}),
            ),
        ),
        (
            "no typ",
            k.sign_raw(
                &Header::new(Algorithm::ES256),
                &claims(now, now + 60, aud.clone(), "p-1"),
            ),
        ),
    ];
    for (name, proof) in cases {
        let a = send(proof).await?;
        assert_eq!(
            (a.status, a.code()),
            (401, "invalid_proof"),
            "{name}: {:?}",
            a.body
        );
    }

    // Headers that try to name their own key.
    let mut jwk_header = k.proof_header();
    jwk_header.jku = Some("https://evil.example/jwks".into());
    let a = send(k.sign_raw(&jwk_header, &claims(now, now + 60, aud.clone(), "p-1"))).await?;
    assert_eq!(a.status, 401, "jku header");

    // alg none, and HS256 keyed with the public key.
    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"idprov-proof+jwt"})),
        b64(&claims(now, now + 60, aud.clone(), "p-1"))
    );
    assert_eq!(send(none).await?.status, 401, "alg none");
    let hs = jsonwebtoken::encode(
        &{
            let mut h = Header::new(Algorithm::HS256);
            h.typ = Some("idprov-proof+jwt".into());
            h
        },
        &claims(now, now + 60, aud.clone(), "p-1"),
        &jsonwebtoken::EncodingKey::from_secret(k.public_pem.as_bytes()),
    )?;
    assert_eq!(send(hs).await?.status, 401, "HS256 with the public key");

    // A proof whose algorithm doesn't fit the key: RSA key presented,
    // proof signed by an EC key.
    let rsa = DeviceKey::rs256();
    let ec = DeviceKey::es256();
    let mut req = rsa.request("p-3", ec.proof("p-3", &did, ProofEndpoint::Provision, now));
    req.key_format = None;
    let a = post_json(&d.http(), &d.endpoint(paths::PROVISION), &req).await?;
    assert_eq!((a.status, a.code()), (401, "invalid_proof"));

    // The daemon's own token is not a proof.
    let tok = d.provision("p-1", &k).await?;
    let a = send(tok.token().to_string()).await?;
    assert_eq!(a.status, 401, "token used as a proof");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_stores_nothing() -> R {
    let d = TestDaemon::start().await?;
    let http = d.http();
    let url = d.endpoint(paths::PROVISION);
    let k = DeviceKey::es256();
    let proof = k.proof("in-1", &d.daemon_id(), ProofEndpoint::Provision, d.now());

    let mut weak = k.request("in-1", proof.clone());
    weak.public_key = RSA_1024.into();
    let a = post_json(&http, &url, &weak).await?;
    assert_eq!(a.status, 400);
    assert!(
        a.body["message"].as_str().unwrap_or("").contains("1024"),
        "{:?}",
        a.body
    );

    let mut private = k.request("in-1", proof.clone());
    private.public_key = k.private_pem.clone();
    let a = post_json(&http, &url, &private).await?;
    assert_eq!(a.status, 400);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("private key")
    );
    assert!(
        !a.body.to_string().contains("PRIVATE"),
        "the key is never echoed"
    );

    let mut garbage = k.request("in-1", proof.clone());
    garbage.public_key =
        "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n".into();
    assert_eq!(post_json(&http, &url, &garbage).await?.status, 400);

    let mut wrong_fmt = k.request("in-1", proof.clone());
    wrong_fmt.key_format = Some(idprov_proto::KeyFormat::RSA_PEM);
    assert_eq!(post_json(&http, &url, &wrong_fmt).await?.status, 400);

    let a = post_json(
        &http,
        &url,
        &json!({"device_id": "a\u{1b}[2J", "public_key": "", "proof": ""}),
    )
    .await?;
    assert_eq!(a.status, 400);
    let a = post_json(
        &http,
        &url,
        &json!({"device_id": "ok", "public_key": k.public_pem, "proof": proof, "extra": 1}),
    )
    .await?;
    assert_eq!(a.status, 400, "unknown fields are refused");

    // Over HTTP/1.1 the daemon answers 413 at once (Content-Length) and
    // closes; a client still writing may see the reset before the answer, so
    // look for the answer over a few attempts.
    let big = "x".repeat(200 * 1024);
    let body = json!({"device_id": "ok", "public_key": big, "proof": ""});
    // A client of its own: the connection the daemon closes must not go
    // back into the pool the next requests use.
    let big_http = d.http();
    let mut seen = None;
    for _ in 0..10 {
        if let Ok(a) = post_json(&big_http, &url, &body).await {
            seen = Some((a.status, a.code().to_string()));
            break;
        }
    }
    assert_eq!(seen, Some((413, "payload_too_large".to_string())));

    let r = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 415);
    let r = http.get(d.endpoint("/idprov/v1/nope")).send().await?;
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<serde_json::Value>().await?["code"], "not_found");
    let r = http.get(&url).send().await?;
    assert_eq!(r.status().as_u16(), 405);
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);

    // Nothing was stored by any of it.
    let admin = d.admin()?;
    assert_eq!(admin.pending_list(&ListQuery::default()).await?.total, 0);
    assert_eq!(admin.device_list(&ListQuery::default()).await?.total, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reauthentication_and_revocation() -> R {
    let d =
        TestDaemon::start_with(|c| c.tokens.lifetime = std::time::Duration::from_secs(10)).await?;
    let k = DeviceKey::es256();
    d.oob_key("r-1", &k).await?;
    let first = d.provision("r-1", &k).await?;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["renew_after"].as_i64(), Some(d.now() + 5));

    d.clock.advance(6);
    let renewed = d.renew("r-1", &k, first.token()).await?;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_ne!(renewed.token(), first.token());

    // A proof made by another key cannot renew this token.
    let thief = DeviceKey::es256();
    let stolen = d.renew("r-1", &thief, renewed.token()).await?;
    assert_eq!(stolen.status, 401);
    // A proof is not a token.
    let p = k.proof("r-1", &d.daemon_id(), ProofEndpoint::Renew, d.now());
    let a = post_json(
        &d.http(),
        &d.endpoint(paths::RENEW),
        &json!({"token": p, "proof": p}),
    )
    .await?;
    assert_eq!((a.status, a.code()), (401, "invalid_token"));

    // Past expiry renewal is refused; the device re-authenticates with its key.
    d.clock.advance(11);
    let late = d.renew("r-1", &k, renewed.token()).await?;
    assert_eq!((late.status, late.code()), (401, "invalid_token"));
    let again = d.provision("r-1", &k).await?;
    assert_eq!(again.status, 200);

    // Revocation is immediate everywhere.
    d.admin()?
        .device_revoke(&"r-1".parse()?, None, Some("lost".into()))
        .await?;
    let s = post_json(
        &d.http(),
        &d.endpoint(paths::TOKEN_STATUS),
        &json!({"token": again.token()}),
    )
    .await?;
    assert_eq!(s.body["active"], false);
    assert_eq!(s.body["reason"], "device_revoked");
    assert_eq!(d.renew("r-1", &k, again.token()).await?.status, 401);
    assert_eq!(d.provision("r-1", &k).await?.status, 403);
    let dev = d.admin()?.device_get(&"r-1".parse()?).await?;
    assert_eq!(dev.status, DeviceStatus::Revoked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_pause_and_clock() -> R {
    let d = TestDaemon::start_with(|c| c.pending.cap = 2).await?;
    let (a, b, c) = (DeviceKey::es256(), DeviceKey::es256(), DeviceKey::es256());
    assert_eq!(d.provision("q-1", &a).await?.status, 202);
    assert_eq!(d.provision("q-2", &b).await?.status, 202);
    let full = d.provision("q-3", &c).await?;
    assert_eq!((full.status, full.code()), (503, "pending_full"));
    assert!(full.retry_after.is_some());
    d.clock.advance(3);
    assert_eq!(
        d.provision("q-1", &a).await?.status,
        202,
        "queued devices keep their place"
    );

    let admin = d.admin()?;
    admin
        .set_provisioning(&ProvisioningState {
            paused: true,
            reason: Some("maintenance".into()),
        })
        .await?;
    let k = DeviceKey::es256();
    d.oob_key("known", &k).await?;
    let p = d.provision("known", &k).await?;
    assert_eq!((p.status, p.code()), (503, "provisioning_paused"));
    admin
        .set_provisioning(&ProvisioningState {
            paused: false,
            reason: None,
        })
        .await?;
    assert_eq!(d.provision("known", &k).await?.status, 200);

    // The clock steps back an hour: the daemon refuses to issue.
    d.clock.advance(-3600);
    let r = d.provision("known", &k).await?;
    assert_eq!((r.status, r.code()), (503, "clock_regressed"));
    Ok(())
}

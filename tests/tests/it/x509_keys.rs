//! Device keys (F12): up to three with their own expiry, rotation without a
//! failed request, add-key signed by a current key, admin add/remove, retired
//! keys that never come back, re-provisioning after a factory reset, and
//! registry CAs for X.509-wrapped keys (F13).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use idprov_proto::DeviceId;
use idprov_proto::device::paths;
use idprov_proto::x509::{AdminKeyAddRequest, ReprovisionRequest};
use idprov_tests::{DeviceKey, TestDaemon, post_json};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::sync::Mutex;

type R = anyhow::Result<()>;

fn id(s: &str) -> DeviceId {
    s.parse().expect("valid test id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_from_key_one_to_key_two_without_a_failed_request() -> R {
    let d = Arc::new(TestDaemon::start().await?);
    let k1 = Arc::new(DeviceKey::es256());
    let k2 = Arc::new(DeviceKey::es256());
    d.oob_key("rotor", &k1).await?;
    let a = d.provision("rotor", &k1).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);

    // The device keeps renewing with whatever key and token are current.
    let current = Arc::new(Mutex::new((k1.clone(), a.token().to_string())));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let with_k2 = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (d, current, stop) = (d.clone(), current.clone(), stop.clone());
        let (ok, failed, with_k2, k2) = (ok.clone(), failed.clone(), with_k2.clone(), k2.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (key, token) = current.lock().await.clone();
                match d.renew("rotor", &key, &token).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if key.kid() == k2.kid() {
                            with_k2.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut c = current.lock().await;
                        // Keep the newest token of the key in use.
                        if c.0.kid() == key.kid() {
                            c.1 = r.token().to_string();
                        }
                    }
                    Ok(r) => {
                        eprintln!("renewal failed: {} {:?}", r.status, r.body);
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("renewal error: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    while ok.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // 1. Key 1 vouches for key 2.
    let added = d.add_key("rotor", &k1, &k2, None).await?;
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.body["keys"].as_array().map(Vec::len), Some(2));
    // 2. The device provisions with key 2 (its proof names key 2 by kid).
    let p2 = d.provision("rotor", &k2).await?;
    assert_eq!(p2.status, 200, "{:?}", p2.body);
    assert_eq!(p2.body["key_id"], k2.kid());
    *current.lock().await = (k2.clone(), p2.token().to_string());
    while with_k2.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // 3. Key 1 is retired.
    let admin = d.admin()?;
    let keys = admin.key_remove(&id("rotor"), k1.kid()).await?;
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].kid, k2.kid());
    let before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < before + 5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    worker.await?;
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a request failed during rotation"
    );
    eprintln!(
        "{} renewals during the rotation",
        ok.load(Ordering::Relaxed)
    );

    // Key 1 is gone for good: provisioning with it is refused, and the
    // device cannot add it back.
    let old = d.provision("rotor", &k1).await?;
    assert_eq!(old.status, 403, "{:?}", old.body);
    let back = d.add_key("rotor", &k2, &k1, None).await?;
    assert_eq!(
        (back.status, back.code()),
        (403, "refused"),
        "{:?}",
        back.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_key_is_refused_until_one_is_removed() -> R {
    let d = TestDaemon::start().await?;
    let keys: Vec<DeviceKey> = vec![
        DeviceKey::es256(),
        DeviceKey::rs256(),
        DeviceKey::es256(),
        DeviceKey::es256(),
    ];
    d.oob_key("quad", &keys[0]).await?;
    assert_eq!(d.provision("quad", &keys[0]).await?.status, 200);
    for k in &keys[1..3] {
        let a = d.add_key("quad", &keys[0], k, None).await?;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    let fourth = d.add_key("quad", &keys[0], &keys[3], None).await?;
    assert_eq!(
        (fourth.status, fourth.code()),
        (409, "conflict"),
        "{:?}",
        fourth.body
    );
    assert!(
        fourth.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("3 keys")
    );
    let admin = d.admin()?;
    let by_admin = admin
        .key_add(
            &id("quad"),
            &AdminKeyAddRequest {
                public_key: keys[3].public_pem.clone(),
                key_format: None,
                expires_at: None,
                revision: None,
            },
        )
        .await;
    assert!(
        matches!(
            &by_admin,
            Err(idprov_admin_client::AdminError::Api { status: 409, .. })
        ),
        "{by_admin:?}"
    );
    // The refused key is not usable.
    assert_eq!(d.provision("quad", &keys[3]).await?.status, 403);
    // Every one of the three is.
    for k in &keys[..3] {
        assert_eq!(d.provision("quad", k).await?.status, 200);
    }
    admin.key_remove(&id("quad"), keys[1].kid()).await?;
    let now_ok = d.add_key("quad", &keys[0], &keys[3], None).await?;
    assert_eq!(now_ok.status, 200, "{:?}", now_ok.body);
    assert_eq!(d.provision("quad", &keys[3]).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_key_needs_both_proofs_and_expired_keys_stop_working() -> R {
    let d = TestDaemon::start().await?;
    let (k1, k2, k3) = (DeviceKey::es256(), DeviceKey::es256(), DeviceKey::es256());
    d.oob_key("exp", &k1).await?;
    assert_eq!(d.provision("exp", &k1).await?.status, 200);
    let did = d.daemon_id();
    let now = d.now();
    use idprov_proto::device::ProofEndpoint;
    // The new key's proof made by another key: refused.
    let forged = post_json(
        &d.http(),
        &d.endpoint(paths::KEYS),
        &json!({
            "device_id": "exp",
            "proof": k1.proof("exp", &did, ProofEndpoint::AddKey, now),
            "public_key": k2.public_pem,
            "key_proof": k3.proof("exp", &did, ProofEndpoint::AddKey, now),
        }),
    )
    .await?;
    assert_eq!((forged.status, forged.code()), (401, "invalid_proof"));
    // A stranger's key vouching: refused.
    let stranger = d.add_key("exp", &k3, &k2, None).await?;
    assert_eq!((stranger.status, stranger.code()), (401, "invalid_proof"));
    // A renewal proof is not an add-key proof.
    let wrong_aud = post_json(
        &d.http(),
        &d.endpoint(paths::KEYS),
        &json!({
            "device_id": "exp",
            "proof": k1.proof("exp", &did, ProofEndpoint::Renew, now),
            "public_key": k2.public_pem,
            "key_proof": k2.proof("exp", &did, ProofEndpoint::AddKey, now),
        }),
    )
    .await?;
    assert_eq!(wrong_aud.status, 401);
    // Past expiry: refused.
    let past = d.add_key("exp", &k1, &k2, Some(now - 1)).await?;
    assert_eq!(past.status, 400);

    // Key 2 valid for 100 s.
    let a = d.add_key("exp", &k1, &k2, Some(now + 100)).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["keys"][1]["expires_at"], now + 100);
    let t2 = d.provision("exp", &k2).await?;
    assert_eq!(t2.status, 200);
    d.clock.advance(101);
    // Expired: provisioning and renewal with it refused.
    assert_eq!(d.provision("exp", &k2).await?.status, 403);
    assert_eq!(d.renew("exp", &k2, t2.token()).await?.status, 401);
    // It no longer counts, and is retired when the next key arrives.
    let a = d.add_key("exp", &k1, &k3, None).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["keys"].as_array().map(Vec::len), Some(2));
    let again = d.add_key("exp", &k1, &k2, None).await?;
    assert_eq!(again.status, 403, "an expired key never comes back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprovisioning_after_a_factory_reset_retires_the_old_keys() -> R {
    let d = TestDaemon::start().await?;
    let old = DeviceKey::es256();
    let new = DeviceKey::rs256();
    d.oob_key("reset-me", &old).await?;
    let a = d
        .provision_csr(
            "reset-me",
            &old,
            Some(idprov_tests::x509::csr(&old, "reset-me")?),
        )
        .await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let old_token = a.token().to_string();

    // The reset device shows up with a new key: refused and flagged.
    assert_eq!(d.provision("reset-me", &new).await?.status, 403);

    let admin = d.admin()?;
    let no_reason = admin
        .reprovision(
            &id("reset-me"),
            &ReprovisionRequest {
                public_key: new.public_pem.clone(),
                key_format: None,
                mac: None,
                revision: None,
                reason: " ".into(),
            },
        )
        .await;
    assert!(no_reason.is_err(), "a reason is required");
    let view = admin
        .reprovision(
            &id("reset-me"),
            &ReprovisionRequest {
                public_key: new.public_pem.clone(),
                key_format: None,
                mac: None,
                revision: None,
                reason: "factory reset, ticket 42".into(),
            },
        )
        .await?;
    assert_eq!(view.keys.len(), 1);
    assert_eq!(view.keys[0].kid, new.kid());
    assert!(!view.flags.iter().any(|f| f == "key_mismatch"));

    // Old token and key are dead; the new key works.
    let status = post_json(
        &d.http(),
        &d.endpoint(paths::TOKEN_STATUS),
        &json!({ "token": old_token }),
    )
    .await?;
    assert_eq!(status.body["active"], false, "{:?}", status.body);
    assert_eq!(d.provision("reset-me", &old).await?.status, 403);
    assert_eq!(d.provision("reset-me", &new).await?.status, 200);
    // The old certificate is revoked and on the CRL.
    let certs = admin.device_certificates(&id("reset-me")).await?;
    assert_eq!(certs.len(), 1);
    assert!(certs[0].revoked_at.is_some());
    assert!(admin.crl_info().await?.revoked >= 1);
    // The old key cannot come back, through any door.
    let back = admin
        .reprovision(
            &id("reset-me"),
            &ReprovisionRequest {
                public_key: old.public_pem.clone(),
                key_format: None,
                mac: None,
                revision: None,
                reason: "undo".into(),
            },
        )
        .await;
    assert!(back.is_err());
    let back = admin
        .key_add(
            &id("reset-me"),
            &AdminKeyAddRequest {
                public_key: old.public_pem.clone(),
                key_format: None,
                expires_at: None,
                revision: None,
            },
        )
        .await;
    assert!(back.is_err());
    // Audited.
    let audit = admin
        .audit(&idprov_proto::admin::ListQuery {
            q: Some("device_reprovisioned".into()),
            ..Default::default()
        })
        .await?;
    let e = audit
        .items
        .iter()
        .find(|e| e.action == "device_reprovisioned")
        .ok_or_else(|| anyhow::anyhow!("no audit entry"))?;
    assert!(
        e.detail.contains(old.kid()) && e.detail.contains("ticket 42"),
        "{}",
        e.detail
    );
    assert_eq!(e.actor, "admin:admin");

    // A revoked device stays revoked.
    admin.device_revoke(&id("reset-me"), None, None).await?;
    let r = admin
        .reprovision(
            &id("reset-me"),
            &ReprovisionRequest {
                public_key: DeviceKey::es256().public_pem,
                key_format: None,
                mac: None,
                revision: None,
                reason: "try".into(),
            },
        )
        .await;
    assert!(
        matches!(
            &r,
            Err(idprov_admin_client::AdminError::Api { status: 409, .. })
        ),
        "{r:?}"
    );
    Ok(())
}

/// A CA and a device key wrapped in a certificate it issued, or self-signed.
fn wrapped_key(ca: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>) -> anyhow::Result<DeviceKey> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = rcgen::CertificateParams::new(vec!["device.example".to_string()])?;
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = match ca {
        Some(issuer) => p.signed_by(&kp, issuer)?,
        None => p.self_signed(&kp)?,
    };
    Ok(DeviceKey::from_pems(
        Algorithm::ES256,
        kp.serialize_pem(),
        cert.pem(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_cas_gate_x509_wrapped_keys() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Factory CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    // No registry CA: a self-signed wrapper is accepted.
    let selfsigned = wrapped_key(None)?;
    assert_eq!(
        selfsigned.public.format(),
        idprov_proto::KeyFormat::ES256_X509_PEM
    );
    d.oob_key("ss-before", &selfsigned).await?;
    assert_eq!(d.provision("ss-before", &selfsigned).await?.status, 200);

    // A leaf certificate is not a CA; garbage is not a certificate.
    let leaf = admin.registry_ca_add(&selfsigned.public_pem).await;
    assert!(matches!(
        &leaf,
        Err(idprov_admin_client::AdminError::Api { status: 400, .. })
    ));
    assert!(admin.registry_ca_add("junk").await.is_err());
    let reg = admin.registry_ca_add(&ca_cert.pem()).await?;
    assert_eq!(admin.registry_cas().await?.len(), 1);
    assert!(reg.subject.contains("Factory CA"), "{}", reg.subject);
    assert!(
        admin.registry_ca_add(&ca_cert.pem()).await.is_err(),
        "duplicate"
    );

    // Now: a self-signed wrapper is refused, one issued by the CA accepted.
    let ss = wrapped_key(None)?;
    d.oob_key("ss-after", &ss).await?;
    let a = d.provision("ss-after", &ss).await?;
    assert_eq!((a.status, a.code()), (403, "refused"), "{:?}", a.body);
    let good = wrapped_key(Some(&issuer))?;
    d.oob_key("ca-issued", &good).await?;
    let a = d.provision("ca-issued", &good).await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // An unknown device with a self-signed wrapper does not even queue.
    let a = d.provision("stranger", &wrapped_key(None)?).await?;
    assert_eq!(a.status, 403, "{:?}", a.body);
    // An administrator cannot add such a key either.
    let r = admin
        .key_add(
            &id("ca-issued"),
            &AdminKeyAddRequest {
                public_key: wrapped_key(None)?.public_pem,
                key_format: None,
                expires_at: None,
                revision: None,
            },
        )
        .await;
    assert!(
        matches!(
            &r,
            Err(idprov_admin_client::AdminError::Api { status: 400, .. })
        ),
        "{r:?}"
    );

    // Removing the CA restores the first rule.
    admin.registry_ca_remove(&reg.fingerprint).await?;
    assert!(admin.registry_cas().await?.is_empty());
    assert_eq!(d.provision("ss-after", &ss).await?.status, 200);
    Ok(())
}

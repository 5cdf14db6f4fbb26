//! Input strictness (issue 13, items 9–13): PEM blocks whose labels differ,
//! JSON arrays where an object is required, removing the last key of a
//! device, and the exact form of the admin `Authorization` header — each
//! through the daemon's HTTPS interface.

use idprov_proto::admin::ListQuery;
use idprov_proto::device::ProofEndpoint;
use idprov_proto::device::paths as device_paths;
use idprov_proto::oob_import::IMPORTS;
use idprov_tests::{Answer, DeviceKey, TestDaemon, post_json};

type R = anyhow::Result<()>;

fn admin_token(d: &TestDaemon) -> anyhow::Result<String> {
    let (_, profile) = idprov_admin_client::load_profile(Some(&d.profile_path()))?;
    Ok(profile.token.expose().to_string())
}

/// A POST with a raw JSON body and an `Authorization` value.
async fn post_raw(
    d: &TestDaemon,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> anyhow::Result<Answer> {
    let mut req = d
        .http()
        .post(d.endpoint(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("answer is not JSON (HTTP {status}): {e}: {text}"))?;
    Ok(Answer {
        status,
        retry_after: None,
        body,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_authorization_header_is_parsed_exactly() -> R {
    let d = TestDaemon::start().await?;
    let token = admin_token(&d)?;
    let whoami = |auth: String| {
        let req = d
            .http()
            .get(d.endpoint(idprov_proto::admin::paths::WHOAMI))
            .header("authorization", auth);
        async move { anyhow::Ok(req.send().await?.status().as_u16()) }
    };
    for bad in [
        format!("Bearer  {token}"),
        format!("Bearer {token} x"),
        format!("Bearer\t{token}"),
        format!("Bearer{token}"),
    ] {
        assert_eq!(whoami(bad.clone()).await?, 401, "{bad:?} must be refused");
    }
    // Whitespace before the scheme or after the token is HTTP's optional
    // whitespace around a
    // field value (RFC 9110 §5.5): hyper removes it before any handler
    // runs, so `Bearer <token> ` is the same header as `Bearer <token>`.
    assert_eq!(whoami(format!("Bearer {token} ")).await?, 200);
    assert_eq!(whoami(format!(" Bearer {token}")).await?, 200);
    // The scheme is case-insensitive (RFC 7235); the token is not.
    for good in [format!("Bearer {token}"), format!("bearer {token}")] {
        assert_eq!(whoami(good.clone()).await?, 200, "{good:?} must pass");
    }
    let upper = format!("Bearer {}", token.to_ascii_uppercase());
    assert_eq!(whoami(upper).await?, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_active_key_of_a_device_cannot_be_removed() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let (k1, k2) = (DeviceKey::es256(), DeviceKey::es256());
    d.oob_key("lonely", &k1).await?;
    assert_eq!(d.provision("lonely", &k1).await?.status, 200);
    let id: idprov_proto::DeviceId = "lonely".parse()?;

    match admin.key_remove(&id, k1.kid()).await {
        Err(idprov_admin_client::AdminError::Api {
            status, message, ..
        }) => {
            assert_eq!(status, 409);
            assert!(message.contains("revoke or remove the device"), "{message}");
        }
        other => panic!("removing the only key must be refused: {other:?}"),
    }
    // The device still works.
    assert_eq!(d.provision("lonely", &k1).await?.status, 200);

    // With a second key, either can go.
    assert_eq!(d.add_key("lonely", &k1, &k2, None).await?.status, 200);
    let keys = admin.key_remove(&id, k1.kid()).await?;
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(d.provision("lonely", &k2).await?.status, 200);
    // …and the one left is the last again.
    assert!(admin.key_remove(&id, k2.kid()).await.is_err());
    // Revoking it (compromised) is never refused: the key stops at once.
    let keys = admin.key_revoke(&id, k2.kid(), None).await?;
    assert!(keys.keys.is_empty(), "{keys:?}");
    assert_eq!(d.provision("lonely", &k2).await?.status, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_objects_are_request_bodies() -> R {
    let d = TestDaemon::start().await?;
    let auth = format!("Bearer {}", admin_token(&d)?);
    let auth = Some(auth.as_str());
    let key = DeviceKey::es256();
    let pem = serde_json::to_string(&key.public_pem)?;
    let entry = format!(r#"{{"device_id":"arr-1","public_key":{pem}}}"#);

    let refused = |a: &Answer, what: &str| {
        assert_eq!(
            (a.status, a.code()),
            (400, "bad_request"),
            "{what}: {:?}",
            a.body
        );
        let msg = a.body["message"].as_str().unwrap_or("");
        assert!(msg.contains("JSON object"), "{what}: {msg}");
    };

    // Admin API: an OOB upsert given by position.
    let a = post_raw(
        &d,
        "/idprov/v1/admin/oob",
        auth,
        &format!("[[{entry}], false, false]"),
    )
    .await?;
    refused(&a, "oob upsert");
    // …and an entry inside an object given by position.
    let a = post_raw(
        &d,
        "/idprov/v1/admin/oob",
        auth,
        &format!(r#"{{"entries":[["arr-1",{pem}]]}}"#),
    )
    .await?;
    refused(&a, "oob entry as an array");
    // Import sessions: start, chunk and commit given by position.
    let a = post_raw(&d, IMPORTS, auth, "[false, false]").await?;
    refused(&a, "import start");
    let a = post_raw(&d, IMPORTS, auth, "{}").await?;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let sid = a.body["id"].as_str().unwrap_or_default().to_string();
    let a = post_raw(
        &d,
        &format!("{IMPORTS}/{sid}/chunks"),
        auth,
        &format!("[0, [{entry}]]"),
    )
    .await?;
    refused(&a, "import chunk");
    let a = post_raw(
        &d,
        &format!("{IMPORTS}/{sid}/chunks"),
        auth,
        &format!(r#"{{"seq":0,"entries":[["arr-1",{pem}]]}}"#),
    )
    .await?;
    refused(&a, "import chunk entry as an array");
    let a = post_raw(&d, &format!("{IMPORTS}/{sid}/commit"), auth, "[false, 0]").await?;
    refused(&a, "import commit");
    let a = post_raw(
        &d,
        "/idprov/v1/admin/devices/arr-1/keys",
        auth,
        &format!("[{pem}]"),
    )
    .await?;
    refused(&a, "admin key add");
    // Nothing was stored.
    let listed = d.admin()?.oob_list(&ListQuery::default()).await?;
    assert_eq!(listed.total, 0, "{listed:?}");

    // Device API: a provision request given by position, with a valid proof.
    d.oob_key("arr-2", &key).await?;
    let proof = key.proof("arr-2", &d.daemon_id(), ProofEndpoint::Provision, d.now());
    let body = serde_json::json!(["arr-2", key.public_pem, null, null, null, proof, null]);
    let a = post_raw(&d, device_paths::PROVISION, None, &body.to_string()).await?;
    refused(&a, "provision");
    // Scalars and null are no bodies either.
    for body in ["null", "42", "\"x\"", " [ ] "] {
        let a = post_raw(&d, device_paths::PROVISION, None, body).await?;
        refused(&a, body);
    }
    // The same request as an object passes.
    let a = post_json(
        &d.http(),
        &d.endpoint(device_paths::PROVISION),
        &key.request(
            "arr-2",
            key.proof("arr-2", &d.daemon_id(), ProofEndpoint::Provision, d.now()),
        ),
    )
    .await?;
    assert_eq!(a.status, 200, "{:?}", a.body);
    Ok(())
}

/// `pem` with its END line relabelled.
fn relabel_end(pem: &str, end: &str) -> String {
    let mut out: Vec<String> = pem.lines().map(str::to_string).collect();
    if let Some(last) = out.iter_mut().rev().find(|l| l.starts_with("-----END ")) {
        *last = format!("-----END {end}-----");
    }
    out.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_blocks_whose_labels_differ_are_refused() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let key = DeviceKey::es256();
    let rsa = DeviceKey::rs256();
    let mut bad_keys = vec![
        relabel_end(&key.public_pem, "CERTIFICATE"),
        relabel_end(&key.public_pem, "RSA PUBLIC KEY"),
        relabel_end(&key.public_pem, "PRIVATE KEY"),
    ];
    // PKCS#1 and X.509-wrapped keys too.
    let pkcs1 = idprov_proto::keys::pem_encode("RSA PUBLIC KEY", rsa.public.verify_bytes());
    bad_keys.push(relabel_end(&pkcs1, "PUBLIC KEY"));
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = rcgen::CertificateParams::new(vec!["d.example".to_string()])?.self_signed(&kp)?;
    bad_keys.push(relabel_end(&cert.pem(), "PUBLIC KEY"));
    // The same blocks with matching labels are fine: the label is the fault.
    for good in [&key.public_pem, &pkcs1, &cert.pem()] {
        idprov_proto::PublicKey::from_pem(good, None)?;
    }

    for (i, pem) in bad_keys.iter().enumerate() {
        let device = format!("pem-{i}");
        let mut entry = idprov_tests::oob_entry(&device, None, None, None);
        entry.public_key = Some(pem.clone());
        let r = admin
            .oob_upsert(&idprov_proto::admin::OobUpsertRequest {
                entries: vec![entry],
                replace: false,
                dry_run: false,
            })
            .await;
        match r {
            Err(idprov_admin_client::AdminError::Api {
                status: 400, body, ..
            }) => {
                let text = serde_json::to_string(&body.details)?;
                // A PRIVATE KEY label is refused as such, before its end.
                let why = if i == 2 { "private key" } else { "begins as" };
                assert!(text.contains(why), "{i}: {text}");
            }
            other => panic!("OOB entry {i} with a relabelled PEM must be refused: {other:?}"),
        }
    }
    assert_eq!(admin.oob_list(&ListQuery::default()).await?.total, 0);

    // Device API: the key of a provision request, and a CSR.
    d.oob_key("pem-dev", &key).await?;
    let a = d
        .provision_with("pem-dev", &key, |r| r.public_key = bad_keys[0].clone())
        .await?;
    assert_eq!((a.status, a.code()), (400, "bad_request"), "{:?}", a.body);
    let csr = idprov_tests::x509::csr(&key, "pem-dev")?;
    let a = d
        .provision_csr("pem-dev", &key, Some(relabel_end(&csr, "CERTIFICATE")))
        .await?;
    assert_eq!((a.status, a.code()), (400, "bad_request"), "{:?}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("begins as")
    );
    assert_eq!(
        d.provision_csr("pem-dev", &key, Some(csr)).await?.status,
        200
    );

    // Admin uploads: a device key and a registry CA.
    let id: idprov_proto::DeviceId = "pem-dev".parse()?;
    let r = admin
        .key_add(
            &id,
            &idprov_proto::x509::AdminKeyAddRequest {
                public_key: relabel_end(&rsa.public_pem, "CERTIFICATE"),
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
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let r = admin
        .registry_ca_add(&relabel_end(&ca_pem, "X509 CRL"))
        .await;
    assert!(
        matches!(
            &r,
            Err(idprov_admin_client::AdminError::Api { status: 400, .. })
        ),
        "{r:?}"
    );
    assert!(admin.registry_cas().await?.is_empty());
    Ok(())
}

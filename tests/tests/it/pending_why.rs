//! Why a device waits (issue 18 item 3): a device the OOB list names but a
//! flag held carries how it matched its entry and the holding flags in the
//! pending view, over HTTPS (list and event), and an unknown device does not.

use anyhow::{Context, Result};
use idprov_proto::admin::{ListQuery, OobHold, OobMatch, PendingView};
use idprov_tests::{DeviceKey, TestDaemon, oob_entry};

async fn pending(d: &TestDaemon, id: &str) -> Result<PendingView> {
    d.admin()?
        .pending_list(&ListQuery::default())
        .await?
        .items
        .into_iter()
        .find(|p| p.device_id.as_str() == id)
        .with_context(|| format!("{id} is not pending"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_listed_device_says_how_it_matched_and_what_holds_it() -> Result<()> {
    let d = TestDaemon::start().await?;
    let shared = DeviceKey::es256();
    d.oob_key("k-1", &shared).await?;
    // Someone queues "x-1" with the key the list gives "k-1": an unknown device.
    assert_eq!(d.provision("x-1", &shared).await?.status, 202);
    let unknown = pending(&d, "x-1").await?;
    assert_eq!(unknown.oob_hold, None, "x-1 is not on the list");

    // k-1 matches its entry by key, and is held by key_reused.
    assert_eq!(d.provision("k-1", &shared).await?.status, 202);
    let held = pending(&d, "k-1").await?;
    assert_eq!(
        held.oob_hold.as_deref(),
        Some(&OobHold {
            matched_by: OobMatch::Key,
            held_by: vec!["key_reused".into()],
        })
    );
    assert_eq!(
        held.oob_hold.as_ref().map(ToString::to_string).as_deref(),
        Some("matched its OOB entry by key, held by flag key_reused")
    );

    // The wire form, as the admin API documents it.
    let (_, profile) = idprov_admin_client::load_profile(Some(&d.profile_path()))?;
    let raw: serde_json::Value = d
        .http()
        .get(d.endpoint("/idprov/v1/admin/pending"))
        .bearer_auth(profile.token.expose())
        .send()
        .await?
        .json()
        .await?;
    let items = raw["items"].as_array().context("items")?;
    let k1 = items
        .iter()
        .find(|p| p["device_id"] == "k-1")
        .context("k-1 listed")?;
    assert_eq!(
        k1["oob_hold"],
        serde_json::json!({"matched_by": "key", "held_by": ["key_reused"]})
    );
    let x1 = items
        .iter()
        .find(|p| p["device_id"] == "x-1")
        .context("x-1 listed")?;
    assert!(x1.get("oob_hold").is_none(), "{x1}");

    // A match by secret, held by a MAC another listed device has.
    let mac: idprov_proto::MacAddr = "b8:27:eb:00:00:42".parse()?;
    d.oob(vec![
        oob_entry("gw-1", None, Some(mac), None),
        oob_entry("gw-secret", None, None, Some("correct horse battery")),
    ])
    .await?;
    let by_secret = d
        .provision_with("gw-secret", &DeviceKey::es256(), |r| {
            r.mac = Some(mac);
            r.secret = Some(idprov_proto::Secret::new("correct horse battery"));
        })
        .await?;
    assert_eq!(by_secret.status, 202, "{:?}", by_secret.body);
    let p = pending(&d, "gw-secret").await?;
    assert_eq!(
        p.oob_hold.map(|h| h.to_string()).as_deref(),
        Some("matched its OOB entry by secret, held by flag mac_reused")
    );
    Ok(())
}

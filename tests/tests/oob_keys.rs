//! One public key, one OOB entry: a key that another entry holds is
//! refused by `POST /admin/oob` and by import commits (a reused factory key
//! would let one device pass as the other), keys can move between entries
//! in one batch, and stores from before the key index get it built.

use std::time::Duration;

use idprov_admin_client::AdminClient;
use idprov_proto::ErrorCode;
use idprov_proto::admin::{OobEntryInput, OobUpsertRequest};
use idprov_proto::oob_import::{OobImportChunk, OobImportCommit, OobImportStart};
use idprov_tests::{DeviceKey, TestDaemon, oob_entry};

type R = anyhow::Result<()>;

fn upsert(entries: Vec<OobEntryInput>, replace: bool) -> OobUpsertRequest {
    OobUpsertRequest {
        entries,
        replace,
        dry_run: false,
    }
}

fn messages(e: &idprov_admin_client::AdminError) -> Vec<String> {
    match e {
        idprov_admin_client::AdminError::Api { body, .. } => {
            body.details.iter().map(|d| d.message.clone()).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Whole import through a session: `chunks` in order, then commit.
async fn import(
    admin: &AdminClient,
    chunks: Vec<Vec<OobEntryInput>>,
    replace: bool,
) -> Result<u64, idprov_admin_client::AdminError> {
    let sid = admin
        .oob_import_start(&OobImportStart {
            replace,
            prune: false,
        })
        .await?
        .id;
    let mut n = 0;
    for (seq, entries) in chunks.into_iter().enumerate() {
        n += entries.len() as u64;
        admin
            .oob_import_chunk(
                &sid,
                &OobImportChunk {
                    seq: seq as u64,
                    entries,
                },
            )
            .await?;
    }
    let r = admin
        .oob_import_commit(
            &sid,
            &OobImportCommit {
                dry_run: false,
                expected_entries: n,
            },
        )
        .await?;
    Ok(r.added + r.changed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_another_entry_is_refused_by_upsert() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let (k, k2) = (DeviceKey::es256(), DeviceKey::es256());
    admin
        .oob_upsert(&upsert(
            vec![oob_entry("own-1", Some(&k), None, None)],
            false,
        ))
        .await?;
    let err = admin
        .oob_upsert(&upsert(
            vec![oob_entry("thief-1", Some(&k), None, None)],
            false,
        ))
        .await
        .expect_err("key of own-1");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    assert_eq!(
        messages(&err),
        ["this public key already belongs to device own-1"]
    );
    // Twice in one request.
    let err = admin
        .oob_upsert(&upsert(
            vec![
                oob_entry("twin-1", Some(&k2), None, None),
                oob_entry("twin-2", Some(&k2), None, None),
            ],
            false,
        ))
        .await
        .expect_err("one key twice");
    assert_eq!(
        messages(&err),
        ["this public key is also given for device twin-1"]
    );
    // The thief is not stored; the rightful device provisions.
    assert_eq!(d.provision("own-1", &k).await?.status, 200);
    assert_eq!(admin.oob_list(&Default::default()).await?.total, 1);

    // A key moves in one batch (listed in either order); a removed entry
    // frees its key.
    admin
        .oob_upsert(&upsert(
            vec![
                oob_entry("new-home", Some(&k), None, None),
                oob_entry("own-1", Some(&k2), None, None),
            ],
            true,
        ))
        .await?;
    admin.oob_remove(&"new-home".parse()?).await?;
    admin
        .oob_upsert(&upsert(
            vec![oob_entry("third", Some(&k), None, None)],
            false,
        ))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_another_entry_is_refused_by_import_commits() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let (k, k2, k3) = (DeviceKey::es256(), DeviceKey::es256(), DeviceKey::es256());
    admin
        .oob_upsert(&upsert(
            vec![oob_entry("stored", Some(&k), None, None)],
            false,
        ))
        .await?;
    // Against a stored entry.
    let err = import(
        &admin,
        vec![vec![oob_entry("imp-1", Some(&k), None, None)]],
        false,
    )
    .await
    .expect_err("stored key");
    assert_eq!(
        messages(&err),
        ["this public key already belongs to device stored"]
    );
    // Across two chunks of one import (each chunk alone is fine).
    let err = import(
        &admin,
        vec![
            vec![oob_entry("a-1", Some(&k2), None, None)],
            vec![oob_entry("a-2", Some(&k2), None, None)],
        ],
        false,
    )
    .await
    .expect_err("one key in two chunks");
    assert_eq!(
        messages(&err),
        ["this public key already belongs to device a-1"]
    );
    assert_eq!(admin.oob_list(&Default::default()).await?.total, 1);
    // Moving the stored key to another entry in one import works.
    let n = import(
        &admin,
        vec![vec![
            oob_entry("mover", Some(&k), None, None),
            oob_entry("stored", Some(&k3), None, None),
        ]],
        true,
    )
    .await?;
    assert_eq!(n, 2);
    assert_eq!(d.provision("mover", &k).await?.status, 200);
    Ok(())
}

/// A store from before the key index: entries are there, the index is not.
/// The daemon builds it when it opens the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_index_is_built_for_an_older_store() -> R {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let mut d = TestDaemon::start_in(&dir).await?;
    let k = DeviceKey::es256();
    d.admin()?
        .oob_upsert(&upsert(
            vec![oob_entry("old-1", Some(&k), None, None)],
            false,
        ))
        .await?;
    d.stop().await?;
    drop(d);
    let path = dir.join("idprov.redb");
    // The stopped daemon's last blocking tasks may still hold the file.
    let mut db = None;
    for _ in 0..50 {
        match redb::Database::open(&path) {
            Ok(x) => {
                db = Some(x);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let db = db.expect("store reopens");
    let tx = db.begin_write()?;
    tx.delete_table(redb::TableDefinition::<&str, &str>::new("oob_kid"))?;
    tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))?
        .remove("oob_kid_indexed")?;
    tx.commit()?;
    drop(db);

    let d = TestDaemon::start_in(&dir).await?;
    let err = d
        .admin()?
        .oob_upsert(&upsert(
            vec![oob_entry("old-2", Some(&k), None, None)],
            false,
        ))
        .await
        .expect_err("indexed again");
    assert_eq!(
        messages(&err),
        ["this public key already belongs to device old-1"]
    );
    Ok(())
}

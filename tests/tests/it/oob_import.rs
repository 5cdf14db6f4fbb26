//! Import sessions (`/admin/oob/imports`) driven directly over HTTPS: two
//! chunks in flight, chunks arriving out of order, resent chunks, chunks
//! outside the window, and sessions closed under a waiting chunk.

use std::time::{Duration, Instant};

use idprov_admin_client::AdminClient;
use idprov_proto::ErrorCode;
use idprov_proto::admin::{ListQuery, OobEntryInput};
use idprov_proto::oob_import::{OobImportChunk, OobImportCommit, OobImportStart};
use idprov_tests::{DeviceKey, TestDaemon, oob_entry};

type R = anyhow::Result<()>;

fn entries(prefix: &str, n: usize) -> Vec<OobEntryInput> {
    (0..n)
        .map(|i| {
            oob_entry(
                &format!("{prefix}-{i}"),
                Some(&DeviceKey::es256()),
                None,
                None,
            )
        })
        .collect()
}

fn chunk(seq: u64, entries: Vec<OobEntryInput>) -> OobImportChunk {
    OobImportChunk { seq, entries }
}

/// Send a chunk from a task of its own, to observe it while it waits.
fn send_later(
    admin: &AdminClient,
    sid: &str,
    c: OobImportChunk,
) -> tokio::task::JoinHandle<
    Result<idprov_proto::oob_import::OobImportChunkAck, idprov_admin_client::AdminError>,
> {
    let (admin, sid) = (admin.clone(), sid.to_string());
    tokio::spawn(async move { admin.oob_import_chunk(&sid, &c).await })
}

async fn start(admin: &AdminClient) -> anyhow::Result<String> {
    Ok(admin.oob_import_start(&OobImportStart::default()).await?.id)
}

async fn commit(admin: &AdminClient, sid: &str, n: u64) -> anyhow::Result<u64> {
    let r = admin
        .oob_import_commit(
            sid,
            &OobImportCommit {
                dry_run: false,
                expected_entries: n,
            },
        )
        .await?;
    Ok(r.added)
}

async fn listed(admin: &AdminClient) -> anyhow::Result<usize> {
    Ok(admin.oob_list(&ListQuery::default()).await?.items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_arrives_early_waits_for_its_turn() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    // Chunk 1 first: it is checked, then waits until chunk 0 is staged.
    let early = send_later(&admin, &sid, chunk(1, entries("late", 3)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!early.is_finished(), "chunk 1 must wait for chunk 0");
    let first = admin
        .oob_import_chunk(&sid, &chunk(0, entries("first", 2)))
        .await?;
    assert_eq!((first.seq, first.staged), (0, 2));
    let second = early.await??;
    assert_eq!((second.seq, second.staged), (1, 5));
    assert_eq!(commit(&admin, &sid, 5).await?, 5);
    assert_eq!(listed(&admin).await?, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_outside_the_window_are_refused_and_resends_are_acknowledged() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    // Two ahead of the next expected chunk: more than the daemon holds.
    let err = admin
        .oob_import_chunk(&sid, &chunk(2, entries("far", 1)))
        .await
        .expect_err("chunk 2 before chunk 0 is outside the window");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));

    let c0 = chunk(0, entries("a", 2));
    assert_eq!(admin.oob_import_chunk(&sid, &c0).await?.staged, 2);
    // The same chunk again (a lost answer): acknowledged, not staged twice.
    assert_eq!(admin.oob_import_chunk(&sid, &c0).await?.staged, 2);
    let c1 = chunk(1, entries("b", 1));
    assert_eq!(admin.oob_import_chunk(&sid, &c1).await?.staged, 3);
    // An old chunk that is not the last one is a conflict.
    let err = admin
        .oob_import_chunk(&sid, &c0)
        .await
        .expect_err("chunk 0 after chunk 1");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert_eq!(commit(&admin, &sid, 3).await?, 3);
    assert_eq!(listed(&admin).await?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_chunk_sent_twice_at_once_is_staged_once() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    let c = chunk(0, entries("twice", 50));
    let (a, b) = tokio::join!(
        admin.oob_import_chunk(&sid, &c),
        admin.oob_import_chunk(&sid, &c)
    );
    assert_eq!((a?.staged, b?.staged), (50, 50));
    assert_eq!(commit(&admin, &sid, 50).await?, 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_answers_a_waiting_chunk_at_once_and_keeps_nothing() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    let waiting = send_later(&admin, &sid, chunk(1, entries("orphan", 2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    admin.oob_import_abort(&sid).await?;
    let err = waiting.await?.expect_err("the session is gone");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(listed(&admin).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chunk_stages_nothing_and_the_next_one_is_not_taken_in_its_place() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    let mut bad = entries("bad", 2);
    bad[1].public_key = Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into());
    let err = admin
        .oob_import_chunk(&sid, &chunk(0, bad))
        .await
        .expect_err("a bad key");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    // Chunk 1 cannot stand in for the refused chunk 0: it waits, and the
    // abort ends it.
    let next = send_later(&admin, &sid, chunk(1, entries("next", 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished());
    admin.oob_import_abort(&sid).await?;
    assert!(next.await?.is_err());
    assert_eq!(listed(&admin).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_administrator_cannot_touch_a_session() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let bob = idprovd::admins::add(&d.dir, "bob", &d.url, &d.ca_pem(), "", d.now())?;
    let bob = AdminClient::new(&bob)?;
    let sid = start(&admin).await?;
    for err in [
        bob.oob_import_chunk(&sid, &chunk(0, entries("bob", 1)))
            .await
            .expect_err("not bob's session"),
        bob.oob_import_abort(&sid).await.expect_err("not bob's"),
    ] {
        assert_eq!(err.code(), Some(ErrorCode::NotFound));
    }
    admin
        .oob_import_chunk(&sid, &chunk(0, entries("alice", 1)))
        .await?;
    assert_eq!(commit(&admin, &sid, 1).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sequence_numbers_are_conflicts_not_crashes() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    for seq in [u64::MAX, u64::MAX - 1, 1 << 63] {
        let err = admin
            .oob_import_chunk(&sid, &chunk(seq, entries("x", 1)))
            .await
            .expect_err("far outside the window");
        assert_eq!(err.code(), Some(ErrorCode::Conflict), "seq {seq}");
    }
    // The session is still usable.
    admin
        .oob_import_chunk(&sid, &chunk(0, entries("ok", 1)))
        .await?;
    assert_eq!(commit(&admin, &sid, 1).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_other_entries_is_a_conflict() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    admin
        .oob_import_chunk(&sid, &chunk(0, entries("orig", 2)))
        .await?;
    let err = admin
        .oob_import_chunk(&sid, &chunk(0, entries("other", 2)))
        .await
        .expect_err("other entries under a staged chunk's number");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert_eq!(commit(&admin, &sid, 2).await?, 2);
    let ids: Vec<String> = admin
        .oob_list(&ListQuery::default())
        .await?
        .items
        .into_iter()
        .map(|e| e.device_id.to_string())
        .collect();
    assert_eq!(ids, ["orig-0", "orig-1"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_the_wrong_count_is_a_conflict_and_imports_nothing() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    admin
        .oob_import_chunk(&sid, &chunk(0, entries("cnt", 3)))
        .await?;
    let err = admin
        .oob_import_commit(
            &sid,
            &OobImportCommit {
                dry_run: false,
                expected_entries: 4,
            },
        )
        .await
        .expect_err("count mismatch");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert!(err.to_string().contains("staged 3"), "{err}");
    assert_eq!(listed(&admin).await?, 0);
    // The session is over.
    let err = commit(&admin, &sid, 3).await.expect_err("closed");
    assert!(err.to_string().contains("no such import session"), "{err}");
    Ok(())
}

/// With all four slots taken, an administrator's own sessions idle for 30 s
/// (a killed tool) make room for a new one; other administrators' do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sessions_of_the_same_administrator_make_room() -> R {
    let d = TestDaemon::start().await?;
    let alice = d.admin()?;
    let bob = idprovd::admins::add(&d.dir, "bob", &d.url, &d.ca_pem(), "", d.now())?;
    let bob = AdminClient::new(&bob)?;
    let mut old = Vec::new();
    for i in 0..4 {
        let sid = start(&alice).await?;
        alice
            .oob_import_chunk(&sid, &chunk(0, entries(&format!("ab{i}"), 1)))
            .await?;
        old.push(sid);
    }
    for who in [&alice, &bob] {
        let err = start(who).await.expect_err("all slots busy");
        assert!(err.to_string().contains("imports are running"), "{err}");
    }
    // 31 s pass on the daemon's clock.
    d.clock.advance(31);
    let err = start(&bob)
        .await
        .expect_err("alice's sessions are not bob's");
    assert!(err.to_string().contains("imports are running"), "{err}");
    let sid = start(&alice).await?;
    alice
        .oob_import_chunk(&sid, &chunk(0, entries("fresh", 1)))
        .await?;
    assert_eq!(commit(&alice, &sid, 1).await?, 1);
    // Every abandoned session went, with what it staged.
    for sid in old {
        let err = commit(&alice, &sid, 1).await.expect_err("evicted");
        assert!(err.to_string().contains("no such import session"), "{err}");
    }
    assert_eq!(listed(&alice).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staging_of_an_interrupted_import_is_swept_when_the_daemon_starts() -> R {
    let d = TestDaemon::start().await?;
    let admin = d.admin()?;
    let sid = start(&admin).await?;
    admin
        .oob_import_chunk(&sid, &chunk(0, entries("swept", 3)))
        .await?;
    // The daemon stops with the session open; the next start must drop what
    // it staged without waiting for another import.
    let d = d.restart().await?;
    let store = d.daemon.store.clone();
    let left = tokio::task::spawn_blocking(move || {
        store.drop_stale_oob_staging(&std::collections::HashSet::new())
    })
    .await?
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(left, 0, "staging tables were left after a restart");
    Ok(())
}

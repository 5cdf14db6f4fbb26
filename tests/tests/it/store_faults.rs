//! The store never starts empty over a damaged or foreign file, and a second
//! daemon on the same data dir stops with a clear message.

use idprov_tests::{TestDaemon, test_config};
use std::sync::Arc;

type R = anyhow::Result<()>;

async fn start_on(dir: &std::path::Path) -> anyhow::Result<idprovd::Running> {
    let cfg = test_config(dir);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    idprovd::start(
        cfg,
        Arc::new(idprovd::SystemClock),
        idprovd::Listeners { https: l },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_the_same_dir_is_refused() -> R {
    let d = TestDaemon::start().await?;
    let err = start_on(&d.dir)
        .await
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("another idprovd is already using"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_missing_and_foreign_stores_stop_the_daemon() -> R {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let mut d = TestDaemon::start_in(&dir).await?;
    d.stop().await?;
    drop(d);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let db = dir.join("idprov.redb");
    let good = std::fs::read(&db)?;

    // Garbage in place of the database.
    std::fs::write(&db, vec![0x5a; good.len()])?;
    let err = start_on(&dir).await.err().expect("corrupt").to_string();
    assert!(
        err.contains("cannot be opened") || err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db)?,
        vec![0x5a; good.len()],
        "the file is left as it was"
    );

    // A valid redb file that is not ours.
    std::fs::remove_file(&db)?;
    {
        let other = redb::Database::create(&db)?;
        let tx = other.begin_write()?;
        tx.open_table(redb::TableDefinition::<&str, u64>::new("something"))?;
        tx.commit()?;
    }
    let err = start_on(&dir).await.err().expect("foreign").to_string();
    assert!(err.contains("not an idprov store"), "{err}");

    // The store is gone but the keys are there.
    std::fs::remove_file(&db)?;
    let err = start_on(&dir).await.err().expect("missing").to_string();
    assert!(err.contains("missing"), "{err}");
    assert!(!db.exists(), "no empty store was created");
    Ok(())
}

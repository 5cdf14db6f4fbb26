//! The answer to an import's commit is lost (issue 13 item 14): a small TCP
//! proxy between the real `idprov-oob` and the daemon forwards everything
//! until the daemon has committed, then closes the tool's connection instead
//! of passing the commit's answer on. The tool must not claim that nothing
//! was imported: it says the outcome is unknown, asks the daemon, and
//! reports the import as committed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idprov_admin_client::AdminClient;
use idprov_proto::admin::ListQuery;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// Forward to `upstream`; the first answer bytes that leave the daemon after
/// the OOB list stopped being empty (only a commit fills it) are dropped
/// with the tool's connection. Later connections pass untouched.
async fn cutting_proxy(
    upstream: SocketAddr,
    admin: AdminClient,
    cut: Arc<AtomicBool>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let admin = Arc::new(admin);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (admin, cut) = (admin.clone(), cut.clone());
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.expect("upstream");
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !cut.load(Ordering::SeqCst) {
                        let total = admin
                            .oob_list(&ListQuery::default())
                            .await
                            .expect("list")
                            .total;
                        if total > 0 {
                            // The commit's answer: cut instead of forwarding.
                            cut.store(true, Ordering::SeqCst);
                            up.abort();
                            return;
                        }
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_is_checked_not_reported_as_nothing_imported() {
    let env = Env::start().await;
    let cut = Arc::new(AtomicBool::new(false));
    let proxy = cutting_proxy(env.daemon.addr, env.admin(), cut.clone()).await;
    let (_, mut profile) = idprov_admin_client::load_profile(Some(&env.profile)).expect("profile");
    profile.server = format!("https://{proxy}");
    let via_proxy = env.write("proxy.toml", &toml::to_string(&profile).expect("toml"));

    env.write(
        "three.csv",
        "device_id,mac\nlost-1,02:00:00:00:01:01\nlost-2,02:00:00:00:01:02\nlost-3,02:00:00:00:01:03\n",
    );
    let out = run_oob(&via_proxy, env.work.path(), &["import", "three.csv"]).await;
    let err = stderr(&out);
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut: {err}");
    assert_eq!(
        env.entries().await.len(),
        3,
        "the daemon committed all three"
    );
    assert!(!err.contains("nothing was imported"), "{err}");
    assert!(err.contains("the outcome is unknown"), "{err}");
    assert!(err.contains("the daemon committed the import"), "{err}");
    assert!(out.status.success(), "{err}");
    assert!(
        stdout(&out).contains("added 3, changed 0, unchanged 0, removed 0"),
        "{}",
        stdout(&out)
    );
}

//! A kill during an import leaves all of it or none of it (invariant I3).
//!
//! The daemon must die for real (SIGKILL, no shutdown path), so it runs in a
//! child process: this test binary runs itself again with `HOST_ENV` set,
//! and [`daemon_host`] then serves a daemon on the given data dir until it
//! is killed. The tool is the real `idprov-oob` binary.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const HOST_ENV: &str = "IDPROV_OOB_TEST_DAEMON_DIR";
const N: usize = 6_000;

/// Only does something when run by the kill test (see the module comment).
#[test]
fn daemon_host() {
    let Some(dir) = std::env::var_os(HOST_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let data = dir.join("data");
        let d = idprov_tests::TestDaemon::start_with(|cfg| cfg.data_dir = data)
            .await
            .expect("daemon starts");
        // The profile written on first start names the first address; each
        // start gets a port of its own.
        let (_, mut profile) =
            idprov_admin_client::load_profile(Some(&d.profile_path())).expect("profile");
        profile.server = d.url.clone();
        let path = dir.join(format!("profile-{}.toml", d.addr.port()));
        std::fs::write(&path, toml::to_string(&profile).expect("toml")).expect("write profile");
        println!("READY {}", path.display());
        std::future::pending::<()>().await;
    });
}

struct Host {
    child: Child,
    profile: PathBuf,
}

async fn start_host(dir: &Path) -> Host {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "kill::daemon_host",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("host.log"))
                .expect("log"),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("spawn daemon host");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let profile = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            // libtest may print "test daemon_host ... " on the same line.
            if let Some((_, p)) = line.split_once("READY ") {
                return PathBuf::from(p.trim());
            }
        }
        panic!("daemon host ended before it was ready");
    })
    .await
    .unwrap_or_else(|_| {
        let log = std::fs::read_to_string(dir.join("host.log")).unwrap_or_default();
        panic!(
            "daemon host in {} not ready in time; its log:\n{log}",
            dir.display()
        )
    });
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Host { child, profile }
}

async fn count(profile: &Path) -> usize {
    let admin = idprov_admin_client::AdminClient::from_profile_path(Some(profile)).expect("client");
    list_all(&admin).await.len()
}

fn import_cmd(profile: &Path, file: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idprov-oob"));
    c.arg("--profile")
        .arg(profile)
        .arg("import")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    c
}

fn big_file(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("big.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    writeln!(f, "device_id,public_key").expect("write");
    for i in 0..N {
        writeln!(f, "kill-{i:06},{}", cell(&es256_public())).expect("write");
    }
    f.flush().expect("flush");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_import_leaves_all_or_nothing() {
    if std::env::var_os(HOST_ENV).is_some() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let file = big_file(work.path());

    // How long a whole import takes here, to spread the kills over it.
    let calib = work.path().join("calibrate");
    std::fs::create_dir_all(&calib).expect("mkdir");
    let mut host = start_host(&calib).await;
    let t0 = Instant::now();
    let st = import_cmd(&host.profile, &file)
        .status()
        .await
        .expect("import");
    let full = t0.elapsed();
    assert!(st.success());
    assert_eq!(count(&host.profile).await, N);
    host.child.kill().await.expect("kill");

    let mut outcomes = Vec::new();
    // Kill the daemon at points spread over the import, most of them late,
    // where the commit runs; then kill the tool instead.
    let points = [0.5, 0.8, 0.9, 0.95, 0.99];
    for (round, frac) in points.iter().enumerate() {
        let dir = work.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut host = start_host(&dir).await;
        let mut tool = import_cmd(&host.profile, &file).spawn().expect("tool");
        tokio::time::sleep(full.mul_f64(*frac)).await;
        host.child.kill().await.expect("kill -9 the daemon");
        let _ = tool.wait().await;

        let mut again = start_host(&dir).await;
        let n = count(&again.profile).await;
        assert!(
            n == 0 || n == N,
            "round {round}: {n} entries after the kill"
        );
        outcomes.push(if n == N { "all" } else { "none" });
        // The list is usable afterwards: the same import completes.
        let st = import_cmd(&again.profile, &file)
            .status()
            .await
            .expect("import");
        assert!(st.success(), "round {round}: import after restart");
        assert_eq!(count(&again.profile).await, N);
        again.child.kill().await.expect("kill");
    }

    for (round, frac) in [0.5, 0.9].iter().enumerate() {
        let dir = work.path().join(format!("tool-{round}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut host = start_host(&dir).await;
        let mut tool = import_cmd(&host.profile, &file).spawn().expect("tool");
        tokio::time::sleep(full.mul_f64(*frac)).await;
        tool.kill().await.expect("kill -9 the tool");
        // A commit already sent still lands; give it the time it needs.
        tokio::time::sleep(full / 4).await;
        let n = count(&host.profile).await;
        assert!(n == 0 || n == N, "tool round {round}: {n} entries");
        outcomes.push(if n == N { "all (tool)" } else { "none (tool)" });
        host.child.kill().await.expect("kill");
    }
    eprintln!("full import {full:?}; outcomes after kills: {outcomes:?}");
}

//! The daemon side of the TUI against a real daemon, through a TCP relay
//! that the test can cut: the event stream drops, the state says so, the
//! stream reconnects by itself, and a device that arrived during the outage
//! is on the list after the reload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idprov_admin_client::{AdminClient, load_profile};
use idprov_tests::{DeviceKey, TestDaemon};
use idprov_tui::app::{App, Conn, Level};
use idprov_tui::daemon::Daemon;
use idprov_tui::msg::Msg;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1:<port> to the daemon; can drop every connection and
/// refuse new ones, like a daemon that went away.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (d, c) = (down.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped at once: connection reset
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                if let Ok(mut v) = c.lock() {
                    v.push(h);
                }
            }
        });
        Ok(Relay {
            port,
            down,
            conns,
            accept,
        })
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        if let Ok(mut v) = self.conns.lock() {
            for h in v.drain(..) {
                h.abort();
            }
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Feed messages to the app and run its commands until `done` holds.
async fn pump(
    app: &mut App,
    rx: &mut mpsc::Receiver<Msg>,
    daemon: &Daemon,
    what: &str,
    done: impl Fn(&App) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(app) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(msg)) => {
                for c in app.on_msg(msg) {
                    daemon.execute(c);
                }
            }
            Ok(None) => panic!("message channel closed while waiting for {what}"),
            Err(_) => panic!(
                "timed out waiting for {what}; conn {:?}, status {:?}",
                app.conn, app.status
            ),
        }
    }
}

fn has(app: &App, id: &str) -> bool {
    app.pending.iter_all().any(|p| p.device_id.as_str() == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reconnects_and_reloads_after_a_drop() -> anyhow::Result<()> {
    let td = TestDaemon::start().await?;
    let relay = Relay::start(td.addr).await?;
    let (_, mut profile) = load_profile(Some(&td.profile_path()))?;
    profile.server = format!("https://127.0.0.1:{}", relay.port);
    let client = AdminClient::new(&profile)?;

    let (tx, mut rx) = mpsc::channel(1024);
    let daemon = Daemon::new(client, tx);
    let stream = daemon.spawn_event_stream();
    let mut app = App::new("admin@relay".into(), td.now());

    pump(&mut app, &mut rx, &daemon, "the first load", |a| {
        a.loaded && a.conn == Conn::Connected
    })
    .await;

    // Live: a device that asks now appears through the event stream.
    let k1 = DeviceKey::es256();
    assert_eq!(td.provision("live-1", &k1).await?.status, 202);
    pump(&mut app, &mut rx, &daemon, "live-1 on the list", |a| {
        has(a, "live-1")
    })
    .await;

    // The connection drops and the daemon is unreachable for a while.
    relay.cut();
    pump(&mut app, &mut rx, &daemon, "the drop to be noticed", |a| {
        matches!(a.conn, Conn::Lost { .. })
    })
    .await;
    let s = app
        .status
        .clone()
        .unwrap_or_else(|| panic!("no status after the drop"));
    assert_eq!(s.level, Level::Error);
    assert!(
        s.text.contains("connection to the daemon lost"),
        "{}",
        s.text
    );

    // Meanwhile a device arrives (straight to the daemon, not via the relay).
    let k2 = DeviceKey::es256();
    assert_eq!(td.provision("during-outage", &k2).await?.status, 202);

    // The daemon is reachable again: the TUI reconnects by itself and the
    // reload brings in what it missed.
    relay.restore();
    pump(
        &mut app,
        &mut rx,
        &daemon,
        "the reconnect and reload",
        |a| a.conn == Conn::Connected && !a.is_loading() && has(a, "during-outage"),
    )
    .await;
    assert!(has(&app, "live-1"));
    let s = app
        .status
        .clone()
        .unwrap_or_else(|| panic!("no status after reconnecting"));
    assert!(s.text.contains("reconnected"), "{}", s.text);

    stream.abort();
    Ok(())
}

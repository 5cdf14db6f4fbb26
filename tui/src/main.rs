//! `idprov-tui`: connect to idprovd with an administrator profile and run
//! the terminal UI until the administrator quits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use idprov_admin_client::{AdminClient, AdminError, exit, load_profile};
use idprov_tui::app::App;
use idprov_tui::cli::Cli;
use idprov_tui::daemon::Daemon;
use idprov_tui::msg::Msg;
use idprov_tui::ui::{self, Theme};
use tokio::sync::mpsc;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // An ordinary error is its message and causes, never a backtrace
        // (returning the error from main would print one under
        // RUST_BACKTRACE=1); the exit code is that of every idprov tool.
        Err(e) => {
            eprintln!("idprov-tui: error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<AdminError>())
                .map_or(exit::FAILURE, AdminError::exit_code);
            std::process::ExitCode::from(code)
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (path, profile) = load_profile(cli.profile.as_deref())?;
    let client =
        AdminClient::new(&profile).with_context(|| format!("profile {}", path.display()))?;
    let server = client.server();
    let identity = format!(
        "{}@{}",
        profile.name,
        server.strip_prefix("https://").unwrap_or(server)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(client, identity))
}

/// Restores the terminal however `run` ends (error return included; the
/// panic hook that `ratatui::try_init` installs covers panics).
struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn run(client: AdminClient, identity: String) -> anyhow::Result<()> {
    let theme = Theme::from_env();
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let daemon = Daemon::new(client, tx);
    let stream = daemon.spawn_event_stream();

    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let _restore = RestoreOnDrop;
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut term = terminate_signal()?;
    let mut app = App::new(identity, now());

    loop {
        terminal.draw(|f| ui::draw(f, &app, &theme))?;
        let cmds = tokio::select! {
            ev = keys.next() => match ev {
                Some(Ok(Event::Key(k))) => app.on_key(k),
                Some(Ok(_)) => Vec::new(), // resize and others: just redraw
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => break,
            },
            Some(msg) = rx.recv() => {
                let mut cmds = app.on_msg(msg);
                // Take what else is waiting before drawing again, so a burst
                // of events costs one frame, not one frame each.
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(m) => cmds.extend(app.on_msg(m)),
                        Err(_) => break,
                    }
                }
                cmds
            },
            _ = tick.tick() => {
                app.tick(now());
                Vec::new()
            },
            _ = term.recv() => break,
        };
        for c in cmds {
            daemon.execute(c);
        }
        if std::mem::take(&mut app.repaint) {
            // Forget what ratatui believes is on screen, so the next frame
            // writes every cell again.
            terminal.clear().context("clearing the terminal")?;
        }
        if app.quit {
            break;
        }
    }
    stream.abort();
    Ok(())
}

/// SIGTERM and SIGHUP end the TUI cleanly (terminal restored).
fn terminate_signal() -> anyhow::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel(1);
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = tx.send(()).await;
    });
    Ok(rx)
}

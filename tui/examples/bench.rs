//! Benchmark of the TUI state and drawing with a large pending queue.
//!
//! `cargo run --release -p idprov-tui --example bench [-- N]` (N defaults to
//! 100,000) loads N synthetic pending requests into the real `App` through
//! the same snapshot message the daemon side sends, then measures:
//! - frame: one full `ui::draw` + buffer diff on a TestBackend (80×24 and
//!   200×60), with the cursor moving between frames;
//! - filter: `set_filter` for typed-in filters, both narrowing (typing) and
//!   widening (Backspace, clearing: full scan);
//! - live insert of one request (`PendingUpserted`) into the full list;
//! - resident memory (VmRSS / VmHWM) after loading.
//!
//! Figures are medians over many runs (also max for frames).

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use idprov_proto::admin::{AdminEvent, ProvisioningState};
use idprov_tui::app::App;
use idprov_tui::msg::{Msg, Snapshot};
use idprov_tui::synthetic;
use idprov_tui::ui::{self, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const NOW: i64 = 1_750_000_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// (VmRSS, VmHWM) in MiB, from /proc/self/status.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 100_000,
    };
    let (rss0, _) = memory();
    let records = synthetic::pending(n, NOW);
    let mut app = App::new("bench@127.0.0.1:8445".into(), NOW);
    app.on_msg(Msg::Connected);
    let t = Instant::now();
    app.on_msg(Msg::Snapshot {
        generation: 1,
        snapshot: Box::new(Snapshot {
            pending: records,
            devices: synthetic::devices(1000, NOW),
            audit: synthetic::audit(5000, NOW),
            provisioning: Some(ProvisioningState {
                paused: false,
                reason: None,
            }),
            ..Snapshot::default()
        }),
    });
    let load = t.elapsed();
    let (rss, hwm) = memory();
    println!("pending requests:  {}", app.pending.total());
    println!("snapshot applied:  {}", ms(load));
    println!(
        "memory:            VmRSS {rss:.1} MiB (before loading {rss0:.1} MiB), peak VmHWM {hwm:.1} MiB"
    );

    let theme = Theme { color: true };
    for (w, h) in [(80u16, 24u16), (200, 60)] {
        let mut term = Terminal::new(TestBackend::new(w, h))?;
        let mut times = Vec::new();
        for i in 0..400 {
            // Alternate short moves and page jumps so frames differ.
            if i % 10 == 0 {
                app.pending.page_down();
            } else {
                app.pending.move_by(1);
            }
            let t = Instant::now();
            term.draw(|f| ui::draw(f, &app, &theme))?;
            times.push(t.elapsed());
        }
        let max = times.iter().max().copied().unwrap_or_default();
        println!(
            "frame {w}x{h}:      median {}  max {}",
            ms(median(times)),
            ms(max)
        );
    }

    // Typing "sensor-0421" one key at a time narrows; Backspace widens.
    let mut narrow = Vec::new();
    let mut widen = Vec::new();
    let mut full = Vec::new();
    for round in 0..20 {
        let target = format!("sensor-0{:03}", 100 + round * 37);
        let mut f = String::new();
        for c in target.chars() {
            f.push(c);
            let t = Instant::now();
            app.pending.set_filter(&f);
            narrow.push(t.elapsed());
        }
        while f.pop().is_some() {
            let t = Instant::now();
            app.pending.set_filter(&f);
            widen.push(t.elapsed());
        }
        // Replacing the filter by an unrelated one: full scan.
        let t = Instant::now();
        app.pending.set_filter("repeated");
        full.push(t.elapsed());
        let t = Instant::now();
        app.pending.set_filter("");
        full.push(t.elapsed());
    }
    println!("filter, typing:    median {}", ms(median(narrow)));
    println!("filter, Backspace: median {}", ms(median(widen)));
    println!("filter, new/clear: median {}", ms(median(full)));

    // Key handling through the keymap, with the filter prompt.
    let t = Instant::now();
    app.on_key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE));
    for c in "sensor-09".chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    println!(
        "typed /sensor-09⏎: {} in total ({} rows match)",
        ms(t.elapsed()),
        app.pending.len()
    );
    app.pending.set_filter("");

    let mut inserts = Vec::new();
    let extra = synthetic::pending(1, NOW).remove(0);
    for i in 0..1000 {
        let mut p = extra.clone();
        p.device_id = format!("live-{i:05}").parse()?;
        let t = Instant::now();
        app.on_msg(Msg::Event(AdminEvent::PendingUpserted { pending: p }));
        inserts.push(t.elapsed());
    }
    println!("live insert:       median {}", ms(median(inserts)));
    Ok(())
}

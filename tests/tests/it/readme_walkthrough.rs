//! The README's walk-through, run as a script exactly as written: the
//! fenced blocks after `<!-- walkthrough: terminal N -->` are extracted from
//! README.md, each terminal's blocks become one shell script, and the
//! scripts run in two windows of a private tmux server, as a reader would
//! run them in two terminals. The TUI step (the last command of terminal 2)
//! is driven with key presses: the stranger is approved, and its log then
//! shows its token.
//!
//! What the test substitutes, and why:
//! - `cargo build --release …`: a release build of the workspace costs
//!   about ten minutes of CI on 2 cores, on top of the debug build the test
//!   run has just made. The scripts get a `cargo` shell function that accepts
//!   that one build command (and says so on the screen) and refuses every
//!   other (so a `cargo run` creeping back into the walk-through fails here),
//!   and `target/release` in the scripts' directory is a link to this test
//!   run's own binaries (`target/debug`, built by `cargo test --workspace`,
//!   which also builds the examples).
//! - Nothing else: the README's fixed port 8445 on 127.0.0.1 is free because
//!   everything runs in a network namespace of its own (only loopback; the
//!   walk-through has DNS-SD off anyway), and in a PID namespace, so every
//!   process the scripts started (the daemon, the background devices) dies
//!   with it.
//!
//! Needs tmux, curl and util-linux's `unshare` (CI installs them); as a
//! normal user, unprivileged user namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// The README's marker before each block of the walk-through, on a line of
/// its own (the prose may name the marker).
const MARKER: &str = "\n<!-- walkthrough: ";

/// One fenced block of the walk-through and the terminal it runs in.
#[derive(Debug)]
struct Block {
    terminal: String,
    text: String,
}

/// Every marked block, in README order.
fn walkthrough_blocks(readme: &str) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut rest = readme;
    while let Some(at) = rest.find(MARKER) {
        let from = &rest[at + MARKER.len()..];
        let end = from
            .find("-->")
            .context("a walkthrough marker without -->")?;
        let terminal = from[..end].trim().to_string();
        let after = from[end + 3..].trim_start_matches([' ', '\n']);
        let body = after.strip_prefix("```sh\n").with_context(|| {
            format!("the walkthrough marker {terminal:?} is not followed by a ```sh block")
        })?;
        let close = body
            .find("\n```")
            .context("an unclosed walkthrough block")?;
        blocks.push(Block {
            terminal,
            text: body[..=close].to_string(),
        });
        rest = &body[close..];
    }
    Ok(blocks)
}

/// The shell function standing in for `cargo` (see the module comment).
const CARGO_SHIM: &str = r#"cargo() {
  case "$*" in
    "build --release"*)
      echo "walkthrough test: not building; target/release links the binaries this test run built"
      return 0 ;;
  esac
  echo "walkthrough test: the walk-through runs built binaries, not: cargo $*" >&2
  return 1
}
"#;

/// One terminal's blocks as a script that stops at the first failure and
/// says how it ended.
fn script(blocks: &[Block], terminal: &str) -> String {
    let mut s = format!("set -e\n{CARGO_SHIM}");
    for b in blocks.iter().filter(|b| b.terminal == terminal) {
        s.push_str(&b.text);
    }
    s
}

/// The binaries of this test run: next to the test executable's `deps/`.
pub(crate) fn built_binaries() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable's directory")?
        .to_path_buf();
    for bin in ["idprovd", "idprov-oob", "idprov-tui", "examples/device"] {
        ensure!(
            dir.join(bin).is_file(),
            "{} is missing: run the walk-through test through `cargo test --workspace` \
             (which builds every binary and example), or build them first with \
             `cargo build -p idprovd -p idprov-oob -p idprov-tui -p idprov-client --bins --examples`",
            dir.join(bin).display()
        );
    }
    Ok(dir)
}

/// A tmux server and everything it starts, inside fresh network and PID
/// namespaces; killing the namespace's first process (on drop) kills them
/// all.
struct Namespace {
    holder: Child,
    socket: PathBuf,
}

impl Namespace {
    fn start(dir: &Path, first_window: &str, cmd: &str) -> Result<Namespace> {
        let unshare =
            which("unshare").context("the walk-through test needs util-linux's unshare")?;
        let ip = which("ip").context("the walk-through test needs iproute2's ip")?;
        let socket = dir.join("tmux.sock");
        let conf = dir.join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n")?;
        let mut c = Command::new(unshare);
        if !is_root() {
            c.args(["--user", "--map-root-user"]);
        }
        // The first process creates the tmux server (which daemonizes and so
        // stays in the namespaces) and then holds the PID namespace open.
        let holder = c
            .args(["--net", "--pid", "--fork", "--kill-child", "--", "sh", "-c"])
            .arg(
                r#""$0" link set lo up && tmux -S "$1" -f "$2" new-session -d -s walk -n "$3" -x 120 -y 40 -c "$5" "$4" && exec sleep 100000"#,
            )
            .arg(ip)
            .arg(&socket)
            .arg(&conf)
            .arg(first_window)
            .arg(cmd)
            .arg(dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .spawn()
            .context("starting unshare")?;
        let ns = Namespace { holder, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns
            .tmux(&["has-session", "-t", "walk"])
            .is_ok_and(|o| o.status.success())
        {
            ensure!(
                Instant::now() < deadline,
                "the tmux server did not start in its namespace"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ns)
    }

    fn tmux(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let o = self.tmux(args).context("running tmux")?;
        ensure!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    }

    /// The visible screen of `window`, with its scrollback.
    fn screen(&self, window: &str) -> String {
        let target = format!("walk:{window}");
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-200", "-t", &target])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    async fn wait_screen(
        &self,
        window: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String> {
        wait(
            what,
            || {
                let s = self.screen(window);
                ok(&s).then_some(s)
            },
            || format!("window {window} shows:\n{}", self.screen(window)),
        )
        .await
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // unshare --kill-child: its child, the namespace's init, is killed
        // with it, and the kernel kills every process left in the namespace.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Poll `probe` every 100 ms for up to 60 s (debug binaries on a loaded
/// machine); on timeout fail with `show()`.
async fn wait<T>(
    what: &str,
    probe: impl Fn() -> Option<T>,
    show: impl Fn() -> String,
) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; {}", show());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_blocks_are_found_in_order() -> Result<()> {
    let readme = "x\n<!-- walkthrough: terminal 1 -->\n```sh\na\nb\n```\n\n<!-- walkthrough: terminal 2 -->\n\n```sh\nc\n```\n";
    let b = walkthrough_blocks(readme)?;
    assert_eq!(b.len(), 2);
    assert_eq!(
        (b[0].terminal.as_str(), b[0].text.as_str()),
        ("terminal 1", "a\nb\n")
    );
    assert_eq!(
        (b[1].terminal.as_str(), b[1].text.as_str()),
        ("terminal 2", "c\n")
    );
    assert!(walkthrough_blocks("\n<!-- walkthrough: t -->\ntext\n").is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written() -> Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let blocks = walkthrough_blocks(&readme)?;
    let terminals: Vec<&str> = blocks.iter().map(|b| b.terminal.as_str()).collect();
    ensure!(
        terminals.first() == Some(&"terminal 1") && terminals.contains(&"terminal 2"),
        "README.md: the walk-through's blocks are marked for terminals {terminals:?}"
    );
    let bins = built_binaries()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    std::fs::create_dir(dir.join("target"))?;
    std::os::unix::fs::symlink(&bins, dir.join("target/release"))?;
    for t in ["terminal 1", "terminal 2"] {
        let name = t.replace(' ', "-");
        std::fs::write(dir.join(format!("{name}.sh")), script(&blocks, t))?;
    }
    // Each window says how its script ended (the TUI's screen is restored
    // when it quits, so the line is visible after it).
    let run =
        |name: &str| format!("sh {name}.sh; echo \"walkthrough: {name} ended with status $?\"");

    // Terminal 1: the build (substituted) and the daemon, which stays up.
    let ns = Namespace::start(dir, "terminal-1", &run("terminal-1"))?;
    let hub = ns
        .wait_screen("terminal-1", "the daemon's start-up output", |s| {
            s.contains("next:")
        })
        .await?;
    assert!(hub.contains("walkthrough test: not building"), "{hub}");
    assert!(hub.contains("listening on https://127.0.0.1:8445"), "{hub}");
    assert!(
        hub.contains("first administrator profile: ./hub/admin.profile"),
        "{hub}"
    );
    // The next step names the tool as it can be pasted here.
    assert!(
        hub.contains("target/release/idprov-tui --profile ./hub/admin.profile"),
        "the daemon prints its next step:\n{hub}"
    );
    assert!(
        hub.contains("target/release/idprov-oob --profile ./hub/admin.profile import"),
        "{hub}"
    );

    // Terminal 2: curl, the batch, the listed device, the stranger, the TUI.
    ns.run(&[
        "new-window",
        "-t",
        "walk",
        "-n",
        "terminal-2",
        "-c",
        &dir.display().to_string(),
        &run("terminal-2"),
    ])?;
    let sensor_log = dir.join("devices/sensor-1.log");
    wait(
        "sensor-1 (listed) to provision with no touch",
        || {
            read(&sensor_log)
                .contains("event: provisioned")
                .then_some(())
        },
        || {
            format!(
                "its log:\n{}\nterminal 2:\n{}",
                read(&sensor_log),
                ns.screen("terminal-2")
            )
        },
    )
    .await?;
    let label_log = dir.join("devices/label-1.log");
    wait(
        "label-1 (setup code only) to provision",
        || {
            read(&label_log)
                .contains("event: provisioned")
                .then_some(())
        },
        || format!("its log:\n{}", read(&label_log)),
    )
    .await?;
    ns.wait_screen("terminal-2", "the TUI listing the stranger", |s| {
        s.contains("stranger-1")
    })
    .await?;
    ns.run(&["send-keys", "-t", "walk:terminal-2", "a"])?;
    ns.wait_screen("terminal-2", "the approval dialog", |s| {
        s.contains("Approve stranger-1?")
    })
    .await?;
    ns.run(&["send-keys", "-t", "walk:terminal-2", "y"])?;
    ns.wait_screen("terminal-2", "the approval", |s| {
        s.contains("approved stranger-1")
    })
    .await?;
    let stranger_log = dir.join("devices/stranger-1.log");
    wait(
        "the approved stranger's token",
        || {
            read(&stranger_log)
                .contains("event: provisioned")
                .then_some(())
        },
        || format!("its log:\n{}", read(&stranger_log)),
    )
    .await?;
    // The devices wrote nothing into the TUI's terminal.
    let tui = ns.screen("terminal-2");
    assert!(
        !tui.contains("event:"),
        "device output garbles the TUI:\n{tui}"
    );

    ns.run(&["send-keys", "-t", "walk:terminal-2", "q"])?;
    let done = ns
        .wait_screen("terminal-2", "terminal 2's script to end", |s| {
            s.contains("walkthrough: terminal-2 ended")
        })
        .await?;
    assert!(done.contains("terminal-2 ended with status 0"), "{done}");
    // Steps 2 and 3 said what they did, before the TUI took the screen.
    assert!(
        done.contains("\"daemon_id\""),
        "curl printed the daemon's info:\n{done}"
    );
    eprintln!("terminal 1:\n{hub}\nterminal 2:\n{done}");
    Ok(())
}

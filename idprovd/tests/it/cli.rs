//! The real `idprovd` binary: configuration layering, check-config, the CA
//! and admin commands while the daemon runs, and a clean SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_idprovd");

fn idprovd(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    // Never advertise on the machine's own interfaces from a test.
    c.env("IDPROVD_MDNS__ENABLED", "false")
        // Many daemons run at once in tests: no fixed metrics port.
        .env("IDPROVD_METRICS__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .env_remove("IDPROVD_LISTEN")
        .env_remove("IDPROVD_CONFIG")
        .arg("--data-dir")
        .arg(dir);
    c
}

fn out(c: &mut Command) -> (bool, String, String) {
    let o = c.output().expect("idprovd runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn flags_beat_env_beat_file_beat_defaults_and_unknown_keys_fail() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let file = tmp.path().join("idprovd.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\n[tokens]\nlifetime = \"1h\"\n",
    )
    .expect("write config");

    let (ok, stdout, _) = out(idprovd(&dir).arg("check-config"));
    assert!(ok);
    assert!(stdout.contains("listen = \"0.0.0.0:8445\""), "{stdout}");
    assert!(stdout.contains("lifetime = \"30days\""), "{stdout}");

    let (ok, stdout, _) = out(idprovd(&dir).arg("--config").arg(&file).arg("check-config"));
    assert!(ok);
    assert!(
        stdout.contains("127.0.0.1:1111") && stdout.contains("lifetime = \"1h\""),
        "{stdout}"
    );

    let (ok, stdout, _) = out(idprovd(&dir)
        .env("IDPROVD_LISTEN", "127.0.0.1:2222")
        .arg("--config")
        .arg(&file)
        .arg("check-config"));
    assert!(ok);
    assert!(stdout.contains("127.0.0.1:2222"), "{stdout}");

    let (ok, stdout, _) = out(idprovd(&dir)
        .env("IDPROVD_LISTEN", "127.0.0.1:2222")
        .env("IDPROVD_PENDING__CAP", "7")
        .arg("--config")
        .arg(&file)
        .arg("--listen")
        .arg("127.0.0.1:3333")
        .arg("check-config"));
    assert!(ok);
    assert!(
        stdout.contains("127.0.0.1:3333") && stdout.contains("cap = 7"),
        "{stdout}"
    );

    std::fs::write(&file, "[tokens]\nlifetme = \"1h\"\n").expect("write");
    let (ok, _, stderr) = out(idprovd(&dir).arg("--config").arg(&file).arg("check-config"));
    assert!(!ok);
    assert!(stderr.contains("lifetme"), "{stderr}");

    let (ok, _, stderr) = out(idprovd(&dir).env("IDPROVD_BOGUS", "1").arg("check-config"));
    assert!(!ok);
    assert!(stderr.contains("bogus"), "{stderr}");

    let (ok, _, stderr) = out(idprovd(&dir)
        .env("IDPROVD_TOKENS__LIFETIME", "soon")
        .arg("check-config"));
    assert!(!ok, "{stderr}");
    assert!(!dir.exists(), "check-config creates nothing");
}

#[test]
fn check_config_shows_the_store_backend_never_the_password() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    let file = tmp.path().join("idprovd.toml");
    let pg = "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"host=/run/postgresql dbname=idprov\"\n";
    std::fs::write(&file, format!("{pg}password_env = \"IDPROV_TEST_DB_PW\"\n")).expect("write");
    let (ok, stdout, stderr) = out(idprovd(&dir)
        .env("IDPROV_TEST_DB_PW", "hunter2-not-shown")
        .arg("--config")
        .arg(&file)
        .arg("check-config"));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("backend = \"postgres\""), "{stdout}");
    assert!(
        stdout.contains("host=/run/postgresql dbname=idprov"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    // The default is the embedded store.
    let (ok, stdout, _) = out(idprovd(&dir).arg("check-config"));
    assert!(ok);
    assert!(stdout.contains("backend = \"redb\""), "{stdout}");
    // PostgreSQL without a URL, or with two password sources: refused.
    std::fs::write(&file, "[store]\nbackend = \"postgres\"\n").expect("write");
    let (ok, _, stderr) = out(idprovd(&dir).arg("--config").arg(&file).arg("check-config"));
    assert!(!ok);
    assert!(stderr.contains("store.postgres.url"), "{stderr}");
    std::fs::write(
        &file,
        format!("{pg}password_env = \"X\"\npassword_file = \"/etc/pw\"\n"),
    )
    .expect("write");
    let (ok, _, stderr) = out(idprovd(&dir).arg("--config").arg(&file).arg("check-config"));
    assert!(!ok);
    assert!(stderr.contains("not both"), "{stderr}");
    assert!(!dir.exists(), "check-config creates nothing");
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Daemon, String, String) {
    let mut child = idprovd(dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn idprovd");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut fp) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && (url.is_empty() || fp.is_empty()) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.trim().to_string();
        }
        if let Some(rest) = line.strip_prefix("CA fingerprint (SHA-256): ") {
            fp = rest.trim().to_string();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(!url.is_empty() && !fp.is_empty(), "daemon announced itself");
    (Daemon(child), url, fp)
}

#[test]
fn admin_commands_work_while_the_daemon_runs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let (mut daemon, url, fp) = start(&dir);

    let (ok, stdout, _) = out(idprovd(&dir).args(["ca", "fingerprint"]));
    assert!(ok);
    assert_eq!(stdout.trim(), fp);
    for f in [
        "ca.key",
        "server.key",
        "signing.key",
        "admin.profile",
        "admins.json",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(f))
            .expect(f)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    let profile = tmp.path().join("bob.profile");
    let (ok, _, stderr) = out(idprovd(&dir)
        .args(["admin", "add", "bob", "--server", &url, "--out"])
        .arg(&profile));
    assert!(ok, "{stderr}");
    let (ok, _, _) = out(idprovd(&dir)
        .args(["admin", "add", "bob", "--out"])
        .arg(tmp.path().join("x")));
    assert!(!ok, "duplicate name refused");
    let (ok, stdout, _) = out(idprovd(&dir).args(["admin", "list", "--json"]));
    assert!(ok);
    assert!(
        stdout.contains("\"admin\"") && stdout.contains("\"bob\""),
        "{stdout}"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client =
        idprov_admin_client::AdminClient::from_profile_path(Some(&profile)).expect("profile");
    let who = rt.block_on(client.whoami()).expect("bob is accepted");
    assert_eq!(who.name, "bob");
    let (ok, _, _) = out(idprovd(&dir).args(["admin", "remove", "bob"]));
    assert!(ok);
    assert!(
        rt.block_on(client.whoami()).is_err(),
        "bob is refused at once"
    );

    // SIGTERM: a clean, prompt exit.
    let pid = daemon.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = daemon.0.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Restart on the same dir reuses everything.
    let (_d2, _, fp2) = start(&dir);
    assert_eq!(fp2, fp);
}

#[test]
fn a_readable_private_key_stops_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    {
        let (_d, _, _) = start(&dir);
    }
    std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let (ok, _, stderr) = out(idprovd(&dir).args(["--listen", "127.0.0.1:0"]));
    assert!(!ok);
    assert!(stderr.contains("readable by others"), "{stderr}");
}

#[test]
fn a_daemon_without_administrators_says_so_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    // The first start creates the first administrator.
    drop(start(&dir));
    std::fs::remove_file(dir.join("admins.json")).expect("remove admins.json");
    let mut child = idprovd(&dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn idprovd");
    let stderr = child.stderr.take().expect("stderr");
    let daemon = Daemon(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut warned = false;
    while Instant::now() < deadline && !warned {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        warned = line.contains("no administrator can use this daemon");
        seen.push(line);
    }
    // The line after it says how to add one.
    if let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    drop(daemon);
    assert!(warned, "no warning on stderr: {seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("admin add NAME")),
        "the warning says how to add an administrator: {seen:#?}"
    );
}

#[test]
fn a_second_daemon_on_a_held_data_dir_changes_nothing_and_exits_4() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let (first, _url, _fp) = start(&dir);
    let files = [
        "server.pem",
        "server.key",
        "ca.pem",
        "identity.json",
        "admins.json",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("data dir file"))
        .collect();
    let o = idprovd(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("second idprovd runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("another idprovd is already using"),
        "{stderr}"
    );
    for (f, b) in files.iter().zip(&before) {
        let now = std::fs::read(dir.join(f)).expect("data dir file");
        assert!(&now == b, "the second daemon rewrote {f}");
    }
    drop(first);
}

/// Issue 18 item 5: removing the last administrator would leave a daemon
/// nobody can administer; and a profile file in the way can be replaced
/// with `--force`.
#[test]
#[allow(clippy::expect_used)]
fn the_last_administrator_cannot_be_removed_and_force_replaces_a_profile() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let (_daemon, url, _) = start(&dir);
    let code = |c: &mut Command| c.output().expect("runs").status.code();

    let o = idprovd(&dir)
        .args(["admin", "remove", "admin"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("last administrator"), "{err}");
    let (_, list, _) = out(idprovd(&dir).args(["admin", "list", "--json"]));
    assert!(list.contains("\"admin\""), "still there: {list}");
    // A date, not unix seconds (issue 18 item 6).
    let (_, list, _) = out(idprovd(&dir).args(["admin", "list"]));
    let created = list.trim().rsplit(' ').next().unwrap_or_default();
    assert!(
        list.starts_with("admin\tcreated 20") && created.ends_with('Z'),
        "{list}"
    );

    let (_, help, _) = out(idprovd(&dir).args(["admin", "list", "--help"]));
    assert!(help.contains("Print the list as JSON"), "{help}");

    // With a second administrator the first can go; then bob is the last.
    let bob = tmp.path().join("bob.profile");
    let add = |name: &str, profile: &std::path::Path, force: bool| {
        let mut c = idprovd(&dir);
        c.args(["admin", "add", name, "--server", &url, "--out"])
            .arg(profile);
        if force {
            c.arg("--force");
        }
        c
    };
    assert_eq!(code(&mut add("bob", &bob, false)), Some(0));
    assert_eq!(
        code(idprovd(&dir).args(["admin", "remove", "admin"])),
        Some(0)
    );
    assert_eq!(
        code(idprovd(&dir).args(["admin", "remove", "bob"])),
        Some(1)
    );

    // Re-creating "admin": its old profile file is in the way.
    let first = dir.join("admin.profile");
    let old = std::fs::read_to_string(&first).expect("first profile");
    let o = add("admin", &first, false).output().expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--force"), "{err}");
    let (_, list, _) = out(idprovd(&dir).args(["admin", "list", "--json"]));
    assert!(!list.contains("\"admin\""), "nothing added: {list}");
    assert_eq!(code(&mut add("admin", &first, true)), Some(0));
    assert_ne!(std::fs::read_to_string(&first).expect("new"), old);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = idprov_admin_client::AdminClient::from_profile_path(Some(&first)).expect("p");
    assert_eq!(rt.block_on(client.whoami()).expect("works").name, "admin");
}

//! One test run again in a private mount namespace of its own, so that it
//! can mount a small tmpfs (a real filesystem to fill up) without touching
//! the machine's mounts: `unshare --mount` as root, `unshare --user
//! --map-root-user --mount` otherwise. The child's outcome is the test's
//! outcome; where neither works the test fails with the reason (it never
//! skips).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::netns::{effective_uid_is_root, find_program};

/// Set in the child process that runs the test in its mount namespace.
const MOUNTNS_ENV: &str = "IDPROV_TESTS_IN_MOUNTNS";

/// True when `test` (in `module`, as `module_path!()` gives it) ran in a
/// child process in a private mount namespace and passed; false when it is
/// to run here (in that child). Use it through [`mount_ns_test!`].
/// `env` is set in the child only (e.g. `NOTIFY_SOCKET`).
pub fn ran_in_mount_namespace(module: &str, test: &str, env: &[(&str, &str)]) -> Result<bool> {
    if std::env::var_os(MOUNTNS_ENV).is_some() {
        return Ok(false);
    }
    let unshare = find_program("unshare")
        .context("this test needs util-linux's `unshare` (apt-get install util-linux)")?;
    let name = match module.split_once("::") {
        Some((_, m)) => format!("{m}::{test}"),
        None => test.to_string(),
    };
    let exe = std::env::current_exe().context("the test binary")?;
    let mut cmd = Command::new(&unshare);
    if !effective_uid_is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    let out = cmd
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .args(["--exact", &name, "--test-threads=1", "--nocapture"])
        .env(MOUNTNS_ENV, "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", unshare.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {name} in a mount namespace ---\n{stdout}{stderr}");
    if stderr.starts_with("unshare:") {
        bail!(
            "cannot create a mount namespace for this test (as a normal user it needs \
             unprivileged user namespaces; see /proc/sys/user/max_user_namespaces); \
             run it as root instead:\n{stderr}"
        );
    }
    if !out.status.success() {
        bail!("{name} failed in its mount namespace ({})", out.status);
    }
    if !stdout.contains(&format!("test {name} ... ok")) || !stdout.contains(" 1 passed;") {
        bail!("{name} did not run in its mount namespace:\n{stdout}{stderr}");
    }
    Ok(true)
}

/// Mount a tmpfs of `size` (e.g. `"16m"`) on `dir`, in the mount namespace
/// [`ran_in_mount_namespace`] made.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Result<()> {
    if std::env::var_os(MOUNTNS_ENV).is_none() {
        bail!("mount_tmpfs outside the test's own mount namespace");
    }
    std::fs::create_dir_all(dir)?;
    let out = Command::new(find_program("mount").context("`mount`")?)
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .context("running mount")?;
    if !out.status.success() {
        bail!(
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The first line of a test that needs its own mount namespace (a test
/// returning `Result`): in the child the test goes on; here this returns
/// the child's outcome. The arguments are the test function's name and the
/// environment of the child.
#[macro_export]
macro_rules! mount_ns_test {
    ($test:ident, $env:expr) => {
        if $crate::mountns::ran_in_mount_namespace(module_path!(), stringify!($test), $env)? {
            return Ok(());
        }
    };
}

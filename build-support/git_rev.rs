// Puts the git revision into `IDPROV_GIT_REV` for `--version` and the
// `idprov_build_info` metric. Falls back to `unknown` outside a git
// checkout (a source tarball) or without git; `IDPROV_GIT_REV` in the
// environment wins (packagers).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=IDPROV_GIT_REV");
    let rev = std::env::var("IDPROV_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_rev)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=IDPROV_GIT_REV={rev}");
}

fn git_rev() -> Option<String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git_dir = manifest
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|g| g.exists())?;
    watch(&git_dir);
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&manifest)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!rev.is_empty()).then_some(rev)
}

/// Re-run when HEAD moves: HEAD itself (branch switch) and the branch ref
/// it points to (a commit). Only existing paths: a missing one would make
/// cargo re-run the script on every build.
fn watch(git_dir: &Path) {
    let head = git_dir.join("HEAD");
    if !head.is_file() {
        return;
    }
    println!("cargo:rerun-if-changed={}", head.display());
    if let Ok(s) = std::fs::read_to_string(&head)
        && let Some(r) = s.strip_prefix("ref: ")
    {
        let r = git_dir.join(r.trim());
        if r.exists() {
            println!("cargo:rerun-if-changed={}", r.display());
        }
    }
    let packed = git_dir.join("packed-refs");
    if packed.exists() {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}

//! `cargo xtask dist-docs --out DIR`: write man pages and shell completions
//! for the idprov binaries, generated from the very clap definitions the
//! binaries parse their arguments with (so they cannot drift).
//!
//! ```text
//! DIR/man/idprovd.1  DIR/man/idprovd-backup.1 ...   (one page per subcommand)
//! DIR/completions/{bash,zsh,fish,elvish,powershell}/<binary completion file>
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use clap_complete::Shell;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "idprov build chores")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Generate man pages and shell completions.
    DistDocs {
        /// Output directory (created).
        #[arg(long, default_value = "target/dist")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    match Args::parse().task {
        Task::DistDocs { out } => {
            let written = dist_docs(&out)?;
            println!("wrote {} files under {}", written.len(), out.display());
            Ok(())
        }
    }
}

/// The binaries and their clap commands.
fn commands() -> Vec<clap::Command> {
    vec![
        idprovd::cli::command(),
        idprov_oob::cli::command(),
        idprov_tui::cli::command(),
        idprovctl::cli::command(),
    ]
}

/// Write everything; returns the files written.
fn dist_docs(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    for cmd in commands() {
        let mut cmd = cmd;
        cmd.build();
        man_pages(&cmd, &man, &mut written)?;
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let name = cmd.get_name().to_string();
            let path = clap_complete::generate_to(shell, &mut cmd.clone(), name, &dir)
                .with_context(|| format!("{shell} completions"))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// One page for the command and one per subcommand (`idprovd-backup.1`),
/// the way git and cargo ship theirs.
fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(format!("{}.1", cmd.get_name()));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("rendering {}", path.display()))?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    // clap's generated `help` subcommand gets no page of its own.
    let subs = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in subs {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        let sub =
            sub.clone()
                .name(name)
                .display_name(format!("{} {}", cmd.get_name(), sub.get_name()));
        man_pages(&sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions_for_every_binary() {
        let tmp = tempfile::tempdir().expect("tmp");
        let files = dist_docs(tmp.path()).expect("dist-docs");
        let man = tmp.path().join("man");
        let page = std::fs::read_to_string(man.join("idprovd.1")).expect("idprovd.1");
        assert!(
            page.starts_with(".ie") || page.contains(".TH"),
            "roff: {page}"
        );
        assert!(
            page.contains("backup") && page.contains("restore"),
            "{page}"
        );
        let backup = std::fs::read_to_string(man.join("idprovd-backup.1")).expect("subpage");
        assert!(backup.contains("\\-\\-out"), "{backup}");
        // Nested: `idprovd admin add`.
        assert!(man.join("idprovd-admin-add.1").exists());
        assert!(!man.join("idprovd-help.1").exists());
        let bash = std::fs::read_to_string(tmp.path().join("completions/bash/idprovd.bash"))
            .expect("bash completion");
        assert!(bash.contains("check-config") && bash.contains("--metrics-listen"));
        assert!(tmp.path().join("completions/zsh/_idprovd").exists());
        assert!(tmp.path().join("completions/fish/idprovd.fish").exists());
        for bin in ["idprov-oob", "idprov-tui", "idprovctl"] {
            assert!(man.join(format!("{bin}.1")).exists(), "{bin}");
            assert!(
                tmp.path()
                    .join(format!("completions/bash/{bin}.bash"))
                    .exists()
            );
        }
        assert!(man.join("idprov-oob-import.1").exists());
        assert!(man.join("idprovctl-approve.1").exists());
        assert!(man.join("idprovctl-devices-revoke.1").exists());
        assert!(files.len() >= 20, "{files:?}");
    }
}

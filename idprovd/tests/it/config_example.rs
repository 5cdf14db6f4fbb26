//! `packaging/config.example.toml` must show every configuration key with
//! its default value. These tests keep it from drifting: a key added to
//! `Config` without a line in the example, or a default changed in one place
//! only, fails here.
//!
//! `Config::load` also reads `IDPROVD_*` environment variables, which would
//! mask what the file says. The loading test therefore runs itself again in a
//! child process whose environment has every `IDPROVD_*` variable removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use idprovd::config::{Config, FlagOverrides, default_data_dir};

/// Set (to anything) in the child process; deliberately not `IDPROVD_*`,
/// which the configuration loader would read as a key.
const CHILD_MARKER: &str = "IDPROV_CONFIG_EXAMPLE_CHILD";

/// The loading test's name in this test binary (module path included).
const LOAD_TEST: &str = "config_example::example_loads_to_the_defaults";

/// Keys the example shows commented out, because their default cannot be
/// written as a value: `data_dir` depends on the environment, and
/// `mdns.instance_name` is unset by default (TOML has no null).
const COMMENTED_KEYS: &[&str] = &["data_dir", "mdns.instance_name"];

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.example.toml")
}

fn example_text() -> String {
    let path = example_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn example_loads_to_the_defaults() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        check_loaded_example();
        return;
    }
    // Re-run exactly this test in a clean environment.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", LOAD_TEST, "--nocapture", "--test-threads=1"]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("IDPROVD_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env(CHILD_MARKER, "1");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running the child test: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child test failed:\n{stdout}\n{stderr}"
    );
    // The child must really have run the check, not filtered it away.
    assert!(
        stdout.contains(&format!("test {LOAD_TEST} ... ok")),
        "child did not run the check:\n{stdout}\n{stderr}"
    );
}

/// Runs in the child: no `IDPROVD_*` variable is set here.
fn check_loaded_example() {
    let path = example_path();
    let cfg = Config::load(Some(&path), &FlagOverrides::default())
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
    let defaults = Config::default();
    // data_dir is commented out in the example, so the environment-dependent
    // default applies; check it on its own, then compare everything else.
    assert_eq!(cfg.data_dir, default_data_dir());
    let expected = Config {
        data_dir: cfg.data_dir.clone(),
        ..defaults
    };
    assert_eq!(
        cfg, expected,
        "packaging/config.example.toml differs from Config::default()"
    );
}

/// Every leaf key of the default configuration, as dotted paths.
fn leaf_keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaf_keys(&path, t, out),
            _ => out.push(path),
        }
    }
}

fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut value = table.get(parts.next()?)?;
    for p in parts {
        value = value.as_table()?.get(p)?;
    }
    Some(value)
}

#[test]
fn example_names_every_key() {
    // Serialising a Config that has every optional key set yields every key
    // there is; `instance_name` is the only Option today.
    let mut all = Config::default();
    all.mdns.instance_name = Some("x".into());
    let full: toml::Table = toml::Table::try_from(&all)
        .unwrap_or_else(|e| panic!("serialising the default config: {e}"));
    let mut keys = Vec::new();
    leaf_keys("", &full, &mut keys);
    assert!(keys.len() > 20, "suspiciously few keys: {keys:?}");

    let text = example_text();
    let example: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("example is not TOML: {e}"));
    let mut missing = Vec::new();
    for key in &keys {
        if COMMENTED_KEYS.contains(&key.as_str()) {
            let leaf = key.rsplit('.').next().unwrap_or(key);
            let commented = format!("# {leaf} = ");
            if !text.lines().any(|l| l.trim_start().starts_with(&commented)) {
                missing.push(format!(
                    "{key} (expected a commented-out `{commented}...` line)"
                ));
            }
            if lookup(&example, key).is_some() {
                missing.push(format!("{key} must stay commented out"));
            }
        } else if lookup(&example, key).is_none() {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "packaging/config.example.toml lacks keys: {missing:?}"
    );
}

#[test]
fn commented_out_examples_are_valid() {
    // Uncommenting the sample lines must give a configuration that loads.
    let text: String = example_text()
        .lines()
        .map(|l| {
            let uncommented = COMMENTED_KEYS.iter().any(|k| {
                let leaf = k.rsplit('.').next().unwrap_or(k);
                l.starts_with(&format!("# {leaf} = "))
            });
            if uncommented {
                format!("{}\n", &l[2..])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let cfg: Config =
        toml::from_str(&text).unwrap_or_else(|e| panic!("uncommented example fails: {e}"));
    cfg.validate()
        .unwrap_or_else(|e| panic!("uncommented example is invalid: {e}"));
    assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/idprovd"));
    assert_eq!(cfg.mdns.instance_name.as_deref(), Some("hub-1"));
}

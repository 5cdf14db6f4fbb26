//! `[[policy.rules]]` in the configuration file: parsed into typed values
//! when the daemon loads it (check-config shows them back), unknown keys and
//! malformed values refused with the key named.

#![allow(clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_idprovd");

fn check(dir: &std::path::Path, toml: &str) -> (bool, String, String) {
    let file = dir.join("idprovd.toml");
    std::fs::write(&file, toml).expect("write config");
    let o = Command::new(BIN)
        .env("IDPROVD_MDNS__ENABLED", "false")
        .env_remove("IDPROVD_CONFIG")
        .arg("--data-dir")
        .arg(dir.join("d"))
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .expect("idprovd runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn rules_in_the_config_are_typed_and_checked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = r#"
[[policy.rules]]
name = "kitchen"
action = "approve"
device_id = "kitchen-*"
key_type = "es256"
mac_oui = "00-1A-2B"
source = "192.168.10.0/24"
flags = ["mac_reused"]
time = "08:00-18:00"
"#;
    let (ok, stdout, stderr) = check(tmp.path(), good);
    assert!(ok, "{stderr}");
    // Shown back in canonical form: the OUI was parsed, not kept as text.
    assert!(stdout.contains("mac_oui = \"00:1a:2b\""), "{stdout}");
    assert!(stdout.contains("device_id = \"kitchen-*\""), "{stdout}");

    let bad = [
        ("colour = \"red\"", "colour"),
        ("action = \"maybe\"", "maybe"),
        ("mac_oui = \"00:1a\"", "MAC OUI"),
        ("source = \"10.0.0.0/40\"", "prefix"),
        ("time = \"8-18\"", "HH:MM"),
        ("flags = [\"key_conflict\"]", "key_conflict"),
        ("device_id = \"a b\"", "pattern"),
    ];
    for (line, said) in bad {
        let toml = format!("[[policy.rules]]\nname = \"r\"\naction = \"hold\"\n{line}\n")
            .replace("action = \"hold\"\naction", "action");
        let (ok, _, stderr) = check(tmp.path(), &toml);
        assert!(!ok, "{line} was accepted");
        assert!(stderr.contains(said), "{line}: {stderr}");
    }
    let twice = "[[policy.rules]]\nname = \"r\"\naction = \"hold\"\n[[policy.rules]]\nname = \"r\"\naction = \"approve\"\n";
    let (ok, _, stderr) = check(tmp.path(), twice);
    assert!(!ok && stderr.contains("two rules are named r"), "{stderr}");
}

//! Configuration errors name the file and line, and quote each key once
//! (issue 18 item 6), through the real binary.

use std::process::Command;

fn check_config(file: &std::path::Path) -> std::io::Result<(Option<i32>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_idprovd"))
        .arg("--config")
        .arg(file)
        .arg("check-config")
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn an_unknown_key_names_its_file_and_line_and_is_quoted_once() -> std::io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("idprovd.toml");
    std::fs::write(
        &file,
        "# hub\nlisten = \"127.0.0.1:8445\"\n\n[tokens]\nlifetime = \"1h\"\nlifetme = \"2h\"\n",
    )?;
    let (code, err) = check_config(&file)?;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.starts_with("idprovd: error: invalid configuration: tokens.lifetme: unknown key `lifetme` (known keys here: `lifetime`"),
        "{err}"
    );
    assert!(
        err.contains(&format!("({} line 6)", file.display())),
        "{err}"
    );
    assert!(!err.contains("``"), "doubled quotes: {err}");
    Ok(())
}

#[test]
fn a_bad_value_names_its_file_and_line() -> std::io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("idprovd.toml");
    std::fs::write(&file, "\n\nlisten = 5\n")?;
    let (code, err) = check_config(&file)?;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("listen: invalid type"), "{err}");
    assert!(
        err.contains(&format!("({} line 3)", file.display())),
        "{err}"
    );
    Ok(())
}

//! `idprov-oob`: the command line. Each subcommand is a short function over
//! the library modules.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use idprov_admin_client::{AdminClient, exit};
use idprov_oob::cli::{Cli, Command};
use idprov_oob::export;
use idprov_oob::generate::{self, Plan};
use idprov_oob::source::{Format, Input};
use idprov_oob::upload::{self, ImportOptions, Refused};
use idprov_oob::validate::{self, print_problems};
use idprov_proto::DeviceId;
use idprov_proto::admin::{ListQuery, MAX_OOB_BATCH};
use indicatif::{ProgressBar, ProgressStyle};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only these write their results to standard output; elsewhere a broken
    // pipe (to the daemon, say) is a real error.
    let to_stdout = matches!(
        &cli.command,
        Command::Export { out: None, .. } | Command::List { .. }
    );
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`export | head`): nothing
        // left to say, as with any Unix filter.
        Err(e) if to_stdout && e.chain().any(is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<Refused>() {
                eprintln!("error: {e}");
                for p in &r.problems {
                    eprintln!("  entry: {}", p.message);
                }
            } else {
                eprintln!("error: {e:#}");
            }
            // The numbers every idprov tool shares: an unreachable daemon
            // is 5, a missing or invalid profile 3, anything else 1.
            ExitCode::from(
                e.chain()
                    .find_map(|c| c.downcast_ref::<idprov_admin_client::AdminError>())
                    .map_or(exit::FAILURE, idprov_admin_client::AdminError::exit_code),
            )
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn client(profile: Option<&std::path::Path>) -> anyhow::Result<AdminClient> {
    Ok(AdminClient::from_profile_path(profile)?)
}

/// A progress bar on standard error, only when that is a terminal.
fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style);
    }
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

fn inputs(files: Vec<PathBuf>, format: Option<Format>) -> anyhow::Result<Vec<Input>> {
    files.into_iter().map(|f| Input::new(f, format)).collect()
}

/// Pass one over the files; prints every problem. `None` when any.
fn check(inputs: &[Input]) -> anyhow::Result<Option<validate::Summary>> {
    let spinner = bar(None, "{spinner} checking: {pos} rows {elapsed}");
    let summary = validate::validate(inputs, &|n| spinner.set_position(n))?;
    spinner.finish_and_clear();
    print_problems(inputs, "warning", &summary.warnings);
    if !summary.problems.is_empty() {
        print_problems(inputs, "error", &summary.problems);
        let rows: std::collections::BTreeSet<_> = summary
            .problems
            .iter()
            .map(|p| (p.loc.file, p.loc.line))
            .collect();
        eprintln!(
            "{} problem(s) in {} row(s); nothing was imported",
            summary.problems.len(),
            rows.len()
        );
        return Ok(None);
    }
    Ok(Some(summary))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile = cli.profile.as_deref();
    match cli.command {
        Command::Check {
            files,
            format,
            json: true,
        } => {
            // Machine-readable: every problem and warning on stdout, the
            // exit code as without --json.
            let inputs = inputs(files, format)?;
            let s = validate::validate(&inputs, &|_| {})?;
            let list = |ps: &[validate::Problem]| -> Vec<serde_json::Value> {
                ps.iter()
                    .map(|p| {
                        serde_json::json!({
                            "at": validate::loc_label(&inputs, p.loc),
                            "message": p.message,
                        })
                    })
                    .collect()
            };
            let v = serde_json::json!({
                "entries": s.entries,
                "ok": s.problems.is_empty(),
                "problems": list(&s.problems),
                "warnings": list(&s.warnings),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(if s.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Check { files, format, .. } => {
            let inputs = inputs(files, format)?;
            Ok(match check(&inputs)? {
                Some(s) => {
                    println!("{} entries, no problems", s.entries);
                    ExitCode::SUCCESS
                }
                None => ExitCode::FAILURE,
            })
        }
        Command::Import {
            files,
            format,
            dry_run,
            replace,
            prune,
            allow_empty,
            chunk,
            show,
            timings,
        } => {
            let inputs = inputs(files, format)?;
            // Load the profile first: no point checking a million rows for a
            // daemon we cannot reach.
            let client = client(profile)?;
            let started = std::time::Instant::now();
            let Some(summary) = check(&inputs)? else {
                return Ok(ExitCode::FAILURE);
            };
            if summary.entries == 0 && !prune {
                println!("no entries; nothing to do");
                return Ok(ExitCode::SUCCESS);
            }
            if summary.entries == 0 && !allow_empty {
                eprintln!(
                    "error: the files list no entries, so --prune would remove every entry on the daemon; add --allow-empty if that is what you want"
                );
                return Ok(ExitCode::FAILURE);
            }
            let progress = bar(
                Some(summary.entries),
                "{msg:10} [{bar:40}] {pos}/{len} {per_sec} {elapsed}",
            );
            progress.set_message("uploading");
            let opts = ImportOptions {
                replace,
                prune,
                dry_run,
                chunk: usize::try_from(chunk)
                    .unwrap_or(MAX_OOB_BATCH)
                    .clamp(1, MAX_OOB_BATCH),
            };
            let inputs = Arc::new(inputs);
            let checked = started.elapsed();
            let mut phases = upload::Phases::default();
            let result = runtime()?.block_on(upload::import(
                &client,
                inputs.clone(),
                &summary,
                opts,
                &progress,
                &mut phases,
            ));
            progress.finish_and_clear();
            if timings {
                eprintln!(
                    "timings: check {:.2} s, upload {:.2} s, commit {:.2} s, total {:.2} s",
                    checked.as_secs_f64(),
                    phases.upload.as_secs_f64(),
                    phases.commit.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
            }
            match result {
                Ok(r) => {
                    upload::print_result(&r, show);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => match e.downcast::<Refused>() {
                    Ok(r) => {
                        for p in &r.problems {
                            match upload::label(&inputs, p) {
                                Some(at) => eprintln!("{at}: error: {}", p.message),
                                None => eprintln!("error: {}", p.message),
                            }
                        }
                        eprintln!("error: {}", with_outcome(&r.message));
                        Ok(ExitCode::FAILURE)
                    }
                    Err(e) => Err(anyhow::anyhow!("{}", with_outcome(&format!("{e:#}")))),
                },
            }
        }
        Command::Export { out, format, query } => {
            let format = match (format, &out) {
                (Some(f), _) => f,
                (None, Some(p)) => Format::from_path(p).unwrap_or(Format::Csv),
                (None, None) => Format::Csv,
            };
            let client = client(profile)?;
            let rt = runtime()?;
            // Signals are watched before the temporary file exists: one
            // then ends the export through the error path, and the file is
            // removed (the default action would kill the process and leave
            // it).
            let interrupt = {
                let _in_runtime = rt.enter();
                upload::interrupted()?
            };
            let file = out.as_deref().map(export::OutFile::create).transpose()?;
            let sink: Box<dyn std::io::Write> = match &file {
                Some(f) => Box::new(std::io::BufWriter::new(f.file())),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut w = export::Writer::new(format, sink)?;
            let n = rt.block_on(async {
                tokio::select! {
                    r = export::for_each_entry(&client, query, |e| w.write(&e)) => r,
                    signal = interrupt => Err(anyhow::anyhow!("interrupted by {signal}")),
                }
            });
            let n = match (n, &out) {
                (Ok(n), _) => n,
                (Err(e), Some(p)) => {
                    return Err(e.context(format!("{} was not changed", p.display())));
                }
                (Err(e), None) => return Err(e),
            };
            let left_out = w.secrets_left_out;
            let setups_left_out = w.setup_codes_left_out;
            let (secret_only, secret_only_count) = (w.secret_only.clone(), w.secret_only_count);
            w.finish()?;
            if let (Some(f), Some(p)) = (file, &out) {
                f.commit()?;
                eprintln!("exported {n} entries to {}", p.display());
            }
            if left_out > 0 {
                eprintln!(
                    "note: {left_out} entries have an unused one-time secret; the daemon stores only its hash, so the secret column is empty"
                );
            }
            if setups_left_out > 0 {
                eprintln!(
                    "note: {setups_left_out} entries have a setup code; the daemon gives its verifier back to no one, so the setup_verifier column is empty (importing them so keeps the stored code)"
                );
            }
            if secret_only_count > 0 {
                eprintln!(
                    "warning: {secret_only_count} entries have only a secret or a setup code, so the file cannot be imported again as it is (fill in their secret, or leave them out): {}{}",
                    secret_only.join(", "),
                    if secret_only_count > secret_only.len() as u64 {
                        ", …"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { json, query } => {
            let client = client(profile)?;
            let rt = runtime()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            use std::io::Write;
            if json {
                // Nothing is written before the first answer (see below).
                let mut first = true;
                rt.block_on(export::for_each_entry(&client, query, |e| {
                    out.write_all(if first { b"[\n  " } else { b",\n  " })?;
                    first = false;
                    serde_json::to_writer(&mut out, &e)?;
                    Ok(())
                }))?;
                out.write_all(if first { b"[]\n" } else { b"\n]\n" })?;
            } else {
                // The header goes out with the first answer, so an
                // unreachable daemon prints only the error.
                let mut header = true;
                let n = rt.block_on(export::for_each_entry(&client, query, |e| {
                    if std::mem::take(&mut header) {
                        writeln!(out, "{}", export::table_header())?;
                    }
                    writeln!(out, "{}", export::table_row(&e))?;
                    Ok(())
                }))?;
                if header {
                    writeln!(out, "{}", export::table_header())?;
                }
                writeln!(out, "{n} entries")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Remove { ids } => {
            let ids: Vec<DeviceId> = ids
                .iter()
                .map(|s| {
                    s.parse().with_context(|| {
                        format!("{}: not a device id", idprov_oob::record::quoted(s))
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let client = client(profile)?;
            let rt = runtime()?;
            rt.block_on(remove_all(&client, ids))
        }
        Command::Generate {
            count,
            prefix,
            out,
            alg,
            rsa_bits,
            start,
            note,
            setup_codes,
            no_keys,
            kdf_memory_kib,
        } => {
            if let Some(n) = &note
                && n.chars().any(char::is_control)
            {
                bail!("--note must not contain control characters");
            }
            let plan = Plan {
                count,
                prefix,
                start,
                out,
                alg,
                rsa_bits,
                note,
                setup_codes: setup_codes.then_some(idprov_pake::KdfParams {
                    memory_kib: kdf_memory_kib,
                    ..idprov_pake::KdfParams::DEFAULT
                }),
                no_keys,
            };
            let progress = bar(
                Some(count),
                "generating [{bar:40}] {pos}/{len} {per_sec} {elapsed}",
            );
            let csv = generate::run(&plan, &|n| progress.set_position(n))?;
            progress.finish_and_clear();
            println!(
                "generated {count} key pairs: private keys in {}/*.key.pem (mode 0600), public keys in {}",
                plan.out.display(),
                csv.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An import error message that says once that nothing was imported (the
/// daemon's and the checks' messages often say so already).
fn with_outcome(message: &str) -> String {
    if message.contains("nothing was imported")
        || message.contains("nothing was stored")
        || message.contains("the outcome is unknown")
    {
        message.to_string()
    } else {
        format!("{message}; nothing was imported")
    }
}

/// A write to a closed pipe, directly or inside the CSV or JSON writer's
/// error (neither lists the I/O error as its source).
fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.kind() == BrokenPipe;
    }
    if let Some(j) = e.downcast_ref::<serde_json::Error>() {
        return j.io_error_kind() == Some(BrokenPipe);
    }
    if let Some(c) = e.downcast_ref::<csv::Error>() {
        return matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == BrokenPipe);
    }
    false
}

/// `remove ID...`, all or nothing like import: every ID must name an entry
/// before any is removed (a typo removes nothing). The daemon removes one
/// entry per request, so an entry removed by someone else between the check
/// and its turn, or a daemon lost half-way, is reported with exactly what
/// was and was not removed.
async fn remove_all(client: &AdminClient, mut ids: Vec<DeviceId>) -> anyhow::Result<ExitCode> {
    ids.sort();
    ids.dedup();
    let mut missing = Vec::new();
    for id in &ids {
        if !has_entry(client, id).await? {
            missing.push(id.to_string());
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "error: no OOB entry for {}: nothing was removed",
            missing.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    for (i, id) in ids.iter().enumerate() {
        if let Err(e) = client.oob_remove(id).await {
            let done: Vec<String> = ids[..i].iter().map(ToString::to_string).collect();
            let left: Vec<String> = ids[i..].iter().map(ToString::to_string).collect();
            eprintln!(
                "error: {id}: {e}\nremoved: {}\nnot removed: {}",
                if done.is_empty() {
                    "none".to_string()
                } else {
                    done.join(", ")
                },
                left.join(", ")
            );
            return Err(anyhow::Error::new(e).context("removing OOB entries"));
        }
        println!("removed {id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the daemon has an OOB entry for `id`. The list is filtered by
/// substring and ordered by device ID, so the pages are read until the ID
/// is found or passed.
async fn has_entry(client: &AdminClient, id: &DeviceId) -> anyhow::Result<bool> {
    let mut q = ListQuery {
        q: Some(id.to_string()),
        limit: Some(idprov_proto::admin::MAX_PAGE),
        after: None,
    };
    loop {
        let page = client.oob_list(&q).await?;
        if page.items.iter().any(|e| &e.device_id == id) {
            return Ok(true);
        }
        let passed = page
            .items
            .last()
            .is_some_and(|e| e.device_id.as_str() > id.as_str());
        match page.next {
            Some(next) if !passed => q.after = Some(next),
            _ => return Ok(false),
        }
    }
}

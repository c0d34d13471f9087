//! The fuzz targets (`fuzz/`): a short run of each in `cargo xtask test`, and long
//! campaigns (`cargo xtask fuzz`) that report executions and coverage per target.
//!
//! Targets start from the seeds checked in under `fuzz/corpus/<target>` (real
//! captures and RFC examples, written by `fuzz/seeds/capture.py`); what a run
//! learns goes to a working corpus under the target dir, so the repository only
//! changes when someone adds seeds on purpose. A crash is saved under
//! `fuzz/artifacts/<target>/` and fails the command.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{Result, setup, step, target_dir, workspace_root};

/// Every fuzz target, the sans-IO code it drives.
pub const TARGETS: [(&str, &str); 11] = [
    (
        "ws_gate",
        "frametap-session: the WebSocket gate (rules, injection, re-encoding)",
    ),
    (
        "http_entry",
        "frametap-session: HTTP/1.x bytes to traffic entries",
    ),
    (
        "ws_frames",
        "frametap-proto: WebSocket frames and permessage-deflate",
    ),
    (
        "h2_entry",
        "frametap-session: HTTP/2 bytes to traffic entries and RFC 8441 WebSockets",
    ),
    ("http1_stream", "frametap-proto: HTTP/1.x framing"),
    (
        "h2_frames",
        "frametap-proto: HTTP/2 frames and header blocks",
    ),
    (
        "hpack",
        "frametap-proto: HPACK decoding, against loona-hpack as reference",
    ),
    ("tls_hello", "frametap-proto: TLS ClientHello sniffing"),
    (
        "control_codec",
        "frametap-control: the control socket's messages",
    ),
    ("store_codec", "frametap-model: stored values and keys"),
    (
        "replay_client",
        "frametap-session: the replay client against hostile servers, its handshake",
    ),
];

/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 12;

/// How long and how far a campaign runs each target.
pub struct Budget {
    pub seconds: u64,
    /// Stop a target after this many executions (0: only the time limit).
    pub executions: u64,
}

/// What libFuzzer said at the end of a target's run.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub executions: u64,
    pub coverage: u64,
    pub features: u64,
    pub corpus: u64,
    pub per_second: u64,
}

fn fuzz_command(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", setup::EBPF_TOOLCHAIN, "cargo", "fuzz"])
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir().join("fuzz"))
        .env("PATH", setup::path_with_cargo_bin());
    c
}

/// Safe Rust needs no AddressSanitizer; overflow checks and debug assertions stay on.
const BUILD_FLAGS: [&str; 4] = [
    "--fuzz-dir",
    "fuzz",
    "--sanitizer=none",
    "--debug-assertions",
];

fn working_corpus(target: &str) -> PathBuf {
    target_dir().join("fuzz-corpus").join(target)
}

/// Longest input tried. The gate's inputs are scenarios (a few dozen messages);
/// longer ones only slow it down. The parsers get room for a 16 KiB read.
fn max_len(target: &str) -> usize {
    match target {
        "ws_gate" => 2048,
        _ => 16 * 1024,
    }
}

fn log_path(target: &str) -> PathBuf {
    target_dir().join("fuzz-logs").join(format!("{target}.log"))
}

fn start(target: &str, budget: &Budget) -> Result<Child> {
    let corpus = working_corpus(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let log = log_path(target);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let log = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let seeds = workspace_root().join("fuzz/corpus").join(target);
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(BUILD_FLAGS.iter().map(|s| s.to_string()));
    args.push(target.into());
    args.push(corpus.display().to_string());
    if seeds.is_dir() {
        args.push(seeds.display().to_string());
    }
    args.push("--".into());
    args.push(format!("-max_total_time={}", budget.seconds));
    if budget.executions > 0 {
        args.push(format!("-runs={}", budget.executions));
    }
    args.push(format!("-max_len={}", max_len(target)));
    args.extend(["-rss_limit_mb=2048".into(), "-print_final_stats=1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fuzz_command(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start cargo fuzz: {e}"))
}

/// The numbers of libFuzzer's last status line (`#N DONE cov: C ft: F corp: K/..
/// exec/s: E`), and the exact count from `-print_final_stats`.
pub fn parse_outcome(log: &str) -> Outcome {
    let mut outcome = Outcome::default();
    let field = |line: &str, name: &str| -> Option<u64> {
        let rest = line.split(name).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    for line in log.lines() {
        let status = line.split_whitespace().nth(1);
        if line.starts_with('#') && matches!(status, Some("DONE" | "pulse")) {
            outcome.executions = field(line, "#").unwrap_or(outcome.executions);
            outcome.coverage = field(line, "cov:").unwrap_or(outcome.coverage);
            outcome.features = field(line, "ft:").unwrap_or(outcome.features);
            outcome.corpus = field(line, "corp:").unwrap_or(outcome.corpus);
            outcome.per_second = field(line, "exec/s:").unwrap_or(outcome.per_second);
        }
        if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            outcome.executions = rest.trim().parse().unwrap_or(outcome.executions);
        }
    }
    outcome
}

fn finish(target: &str, status: std::process::ExitStatus) -> Result<Outcome> {
    let path = log_path(target);
    let log = std::fs::read_to_string(&path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {target} failed ({status}); the input is saved under \
             fuzz/artifacts/{target}/, replay it with `rustup run {} cargo fuzz run --fuzz-dir \
             fuzz --sanitizer=none {target} FILE` (log: {}):\n{}",
            setup::EBPF_TOOLCHAIN,
            path.display(),
            tail.join("\n")
        ));
    }
    Ok(parse_outcome(&log))
}

/// Runs `targets` within `budget` each, two at a time (one per core): the next
/// starts as soon as one ends.
pub fn run(targets: &[&str], budget: &Budget) -> Result<Vec<(String, Outcome)>> {
    let mut build = fuzz_command(&["build"]);
    build.args(BUILD_FLAGS);
    crate::status(build)?;
    let mut queue = targets.iter().copied();
    let mut running: Vec<(&str, Child)> = Vec::new();
    let mut results = Vec::new();
    loop {
        while running.len() < 2
            && let Some(target) = queue.next()
        {
            running.push((target, start(target, budget)?));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let exited = running[i]
                .1
                .try_wait()
                .map_err(|e| format!("fuzz target {}: {e}", running[i].0))?;
            let Some(status) = exited else {
                i += 1;
                continue;
            };
            let (target, _) = running.remove(i);
            let outcome = match finish(target, status) {
                Ok(outcome) => outcome,
                Err(e) => {
                    for (_, mut child) in running {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(e);
                }
            };
            println!(
                "fuzz {target}: {} executions, coverage {} edges, {} features, corpus {}",
                outcome.executions, outcome.coverage, outcome.features, outcome.corpus
            );
            results.push((target.to_string(), outcome));
        }
    }
    Ok(results)
}

/// The bounded runs of `cargo xtask test`.
pub fn test() -> Result {
    step(&format!("bounded fuzz runs ({TEST_SECONDS} s per target)"));
    let names: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    run(
        &names,
        &Budget {
            seconds: TEST_SECONDS,
            executions: 0,
        },
    )?;
    Ok(())
}

/// `cargo xtask fuzz [--minutes N] [--executions N] [TARGET...]`: a campaign; the
/// table it prints goes into the issue note.
pub fn campaign(rest: &[String]) -> Result {
    let mut minutes = 10u64;
    let mut executions = 0u64;
    let mut chosen = Vec::new();
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--minutes" => minutes = number("--minutes")?,
            "--executions" => executions = number("--executions")?,
            name if TARGETS.iter().any(|(t, _)| *t == name) => chosen.push(name.to_string()),
            other => {
                return Err(format!(
                    "unknown fuzz argument {other:?}: expected --minutes N, --executions N or a \
                     target ({})",
                    TARGETS.map(|(t, _)| t).join(", ")
                ));
            }
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    }
    step(&format!(
        "fuzz campaign: {} target(s), {minutes} min each{}",
        chosen.len(),
        if executions > 0 {
            format!(" or {executions} executions")
        } else {
            String::new()
        }
    ));
    let names: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let results = run(
        &names,
        &Budget {
            seconds: minutes * 60,
            executions,
        },
    )?;
    let table = report_table(&results);
    println!("\n{table}");
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let section = format!(
        "## {date}: {}\n\nWritten by `cargo xtask fuzz`: {minutes} min or {} per target, \
         two targets at a time on this 2-core machine, from the seeds in `fuzz/corpus/` and \
         the working corpus of earlier runs. No target crashed.\n\n{table}",
        names.join(", "),
        if executions > 0 {
            format!("{executions} executions")
        } else {
            "no execution limit".into()
        }
    );
    let path = workspace_root().join("fuzz/CAMPAIGNS.md");
    let earlier = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, with_newest_first(&earlier, &section))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

/// The campaign's results as a Markdown table, one row per target.
const CAMPAIGNS_TITLE: &str = "# Fuzz campaigns\n\n";

/// The campaign log with `section` first, under the title: earlier campaigns and the
/// notes on them are kept.
fn with_newest_first(earlier: &str, section: &str) -> String {
    let rest = earlier.strip_prefix(CAMPAIGNS_TITLE).unwrap_or(earlier);
    format!("{CAMPAIGNS_TITLE}{section}\n{rest}")
}

pub fn report_table(results: &[(String, Outcome)]) -> String {
    let mut table = String::from(
        "| target | what it drives | executions | exec/s | coverage (edges) | features | corpus |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for (target, o) in results {
        let what = TARGETS
            .iter()
            .find(|(t, _)| t == target)
            .map_or("", |(_, w)| w);
        let _ = writeln!(
            table,
            "| `{target}` | {what} | {} | {} | {} | {} | {} |",
            o.executions, o.per_second, o.coverage, o.features, o.corpus
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_goes_first_and_keeps_the_earlier_ones() {
        let first = with_newest_first("", "## one\n");
        assert_eq!(first, "# Fuzz campaigns\n\n## one\n\n");
        let second = with_newest_first(&first, "## two\n");
        assert_eq!(second, "# Fuzz campaigns\n\n## two\n\n## one\n\n");
    }

    #[test]
    fn the_report_has_one_row_per_target() {
        let outcome = Outcome {
            executions: 10_000_000,
            coverage: 3432,
            features: 12644,
            corpus: 1411,
            per_second: 1640,
        };
        let table = report_table(&[("ws_gate".into(), outcome)]);
        assert_eq!(table.lines().count(), 3);
        assert!(table.ends_with(
            "| `ws_gate` | frametap-session: the WebSocket gate (rules, injection, re-encoding) \
             | 10000000 | 1640 | 3432 | 12644 | 1411 |\n"
        ));
    }

    #[test]
    fn reads_libfuzzer_final_lines() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #128604\tDONE   cov: 3357 ft: 11094 corp: 1640/70Kb lim: 168 exec/s: 4148 rss: 39Mb\n\
                   stat::number_of_executed_units: 128605\n";
        assert_eq!(
            parse_outcome(log),
            Outcome {
                executions: 128605,
                coverage: 3357,
                features: 11094,
                corpus: 1640,
                per_second: 4148,
            }
        );
    }
}

//! `cargo xtask <command>`: the project's own commands.
//!
//! * `setup`: install what the build needs, idempotently (Debian packages, the pinned
//!   nightly with rust-src, bpf-linker built against that nightly's LLVM).
//! * `run [-- SERVE ARGS]`: setup, build (release), start the API and the agent on the
//!   agent's effective data dir, and say how to use them.
//! * `test`: setup, format and lint checks, every test (end-to-end ones need root).
//! * `bench`: setup, build (release), run the side-by-side benchmarks and write
//!   BENCHMARKS.md.
//! * `soak [-- ARGS]`: setup, build (release), mixed load through the agent with
//!   faults injected in turn, then check that nothing a peer received is missing from
//!   the store; writes RELIABILITY.md (`-- --minutes 60` for the hour-long run).
//! * `churn [-- --containers N]`: setup, build (release), then N real Podman
//!   containers (200 by default) started and stopped under one agent; fails if its
//!   threads or descriptors do not come back.
//! * `contract [--minutes N]`: setup, build (release), then the API contract test
//!   (Schemathesis against a real agent and recording, see tests/tests/api.rs) with a
//!   time budget of N minutes (default 10) instead of its bounded test-suite run.
//!
//! Builds go to one persistent target directory (`$CARGO_TARGET_DIR`, default
//! /var/tmp/frametap/target) so that a fresh clone does not rebuild every dependency.
mod fuzz;
#[cfg(test)]
mod imports;
mod run;
mod setup;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

pub const DEFAULT_TARGET_DIR: &str = "/var/tmp/frametap/target";

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <setup|run|test|bench|soak|churn|fuzz|contract>\n\
         \n  setup            install toolchains and tools (idempotent)\
         \n  run [-- ARGS]    build, start the API and the agent (ARGS go to `frametap-agent serve`)\
         \n  test             fmt, clippy and every test\
         \n  bench            side-by-side benchmarks, results in BENCHMARKS.md\
         \n  soak [-- ARGS]   load with faults injected, results in RELIABILITY.md\
         \n  churn [-- --containers N]\
         \n                   Podman containers started and stopped under one agent\
         \n  fuzz [--minutes N] [--executions N] [TARGET...]\
         \n                   fuzz campaign: executions and coverage per target\
         \n  contract [--minutes N]\
         \n                   fuzz the API from its OpenAPI document for N minutes (default 10)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "setup" => setup::run(),
        "run" => run(rest),
        "test" => test(),
        "bench" => bench(rest),
        "soak" => soak(rest),
        "churn" => churn(rest),
        "fuzz" => fuzz::campaign(rest),
        "contract" => match contract_minutes(rest) {
            Ok(minutes) => contract(minutes),
            Err(e) => {
                eprintln!("xtask: {e}");
                return usage();
            }
        },
        "-h" | "--help" | "help" => return usage(),
        other => {
            eprintln!("xtask: unknown command {other:?}");
            return usage();
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, String>;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TARGET_DIR))
}

/// A cargo command in the workspace, with the persistent target dir and the
/// cargo bin dir (bpf-linker) on PATH.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env("PATH", setup::path_with_cargo_bin());
    cmd
}

pub fn status(mut cmd: Command) -> Result {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({st})"))
    }
}

pub fn step(title: &str) {
    eprintln!("\n==> {title}");
}

fn test() -> Result {
    setup::run()?;
    step("cargo fmt --check");
    status(cargo(&["fmt", "--all", "--check"]))?;
    step("cargo clippy (host crates)");
    status(cargo(&[
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("cargo clippy (eBPF crate, pinned nightly)");
    let ebpf_manifest = workspace_root().join("capture-ebpf/Cargo.toml");
    let mut clippy_ebpf = Command::new("rustup");
    clippy_ebpf
        .args([
            "run",
            setup::EBPF_TOOLCHAIN,
            "cargo",
            "clippy",
            "--manifest-path",
        ])
        .arg(&ebpf_manifest)
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env("CARGO_TARGET_DIR", target_dir().join("ebpf-clippy"))
        .env("PATH", setup::path_with_cargo_bin());
    status(clippy_ebpf)?;
    fuzz::test()?;
    step("cargo test");
    // SAFETY: geteuid has no preconditions; checked only to say what runs.
    if !is_root() {
        eprintln!(
            "note: not root, so the end-to-end tests (eBPF, namespaces) will be skipped; \
             run `sudo -E cargo xtask test` for all of them"
        );
    }
    // Default members: everything but the eBPF crate (built by the agent's build.rs).
    // Everything builds in the release profile, so RocksDB's C++ is compiled once for
    // lints, tests, benchmarks and `run` alike.
    // The end-to-end tests run the agent's binary, which `cargo test` alone does not build.
    status(cargo(&["build", "--release", "--bins"]))?;
    run_tests(cargo(&["test", "--release", "--no-fail-fast"]))
}

/// Run `cargo test`, passing its output through, and close with one plain line
/// totalling every test binary's "test result:" line.
fn run_tests(mut cmd: Command) -> Result {
    use std::io::{BufRead as _, Write as _};
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading test output: {e}"))?;
        println!("{line}");
        let _ = std::io::stdout().flush();
        if let Some((p, f)) = parse_test_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let st = child
        .wait()
        .map_err(|e| format!("waiting for {shown}: {e}"))?;
    println!("\ntests: {passed} passed, {failed} failed");
    if st.success() && failed == 0 {
        Ok(())
    } else {
        Err(format!("{shown} failed ({st})"))
    }
}

/// Counts from "test result: ok. 18 passed; 0 failed; ...".
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(rest: &[String]) -> Result {
    setup::run()?;
    step("cargo build --release");
    status(cargo(&["build", "--release"]))?;
    let serve_args: Vec<&str> = rest
        .iter()
        .skip_while(|a| a.as_str() == "--")
        .map(String::as_str)
        .collect();
    run::run(
        &target_dir().join("release/frametap-agent"),
        &target_dir().join("release/frametap-api"),
        &serve_args,
    )
}

fn bench(rest: &[String]) -> Result {
    setup::run()?;
    // mitmproxy is the side-by-side reference of the WebSocket benchmark.
    setup::mitmproxy()?;
    if !is_root() {
        return Err(
            "the benchmarks attach eBPF programs and create namespaces: run as root".into(),
        );
    }
    step("cargo build --release");
    status(cargo(&["build", "--release"]))?;
    // hudsucker, the Rust MITM peer, is a crate of its own (its dependency tree is
    // not ours), built into a target dir of its own beside the workspace's.
    step("cargo build --release (bench/hudsucker-peer)");
    let peers_target = target_dir().join("peers");
    let mut peer = cargo(&["build", "--release", "--manifest-path"]);
    peer.arg(workspace_root().join("bench/hudsucker-peer/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &peers_target);
    status(peer)?;
    let mut cmd = Command::new(target_dir().join("release/frametap-bench"));
    cmd.arg("--write")
        .arg(workspace_root().join("BENCHMARKS.md"))
        .arg("--mitmdump")
        .arg(setup::mitmdump_bin())
        .arg("--hudsucker")
        .arg(peers_target.join("release/hudsucker-peer"))
        .args(rest);
    status(cmd)
}

fn soak(rest: &[String]) -> Result {
    setup::run()?;
    if !is_root() {
        return Err(
            "the soak run attaches eBPF programs and creates namespaces: run as root".into(),
        );
    }
    step("cargo build --release");
    status(cargo(&["build", "--release"]))?;
    let mut cmd = Command::new(target_dir().join("release/frametap-soak"));
    cmd.arg("--write")
        .arg(workspace_root().join("RELIABILITY.md"))
        .args(rest.iter().skip_while(|a| a.as_str() == "--"));
    status(cmd)
}

fn churn(rest: &[String]) -> Result {
    setup::run()?;
    if !is_root() {
        return Err(
            "the churn run attaches eBPF programs and starts containers: run as root".into(),
        );
    }
    step("cargo build --release");
    status(cargo(&["build", "--release"]))?;
    let mut cmd = Command::new(target_dir().join("release/frametap-churn"));
    cmd.args(rest.iter().skip_while(|a| a.as_str() == "--"));
    status(cmd)
}

/// Minutes of `cargo xtask contract` when `--minutes` is not given.
const CONTRACT_MINUTES: u64 = 10;
/// The end-to-end test that fuzzes the API from its OpenAPI document.
const CONTRACT_TEST: &str = "api_keeps_its_openapi_contract_under_schemathesis";

/// `[--minutes N]` (N >= 1).
fn contract_minutes(args: &[String]) -> Result<u64> {
    match args {
        [] => Ok(CONTRACT_MINUTES),
        [flag, n] if flag == "--minutes" => n
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("--minutes takes a whole number of minutes >= 1, got {n:?}")),
        other => Err(format!("contract takes `--minutes N`, got {other:?}")),
    }
}

/// The contract test with a time budget: Schemathesis repeats its fuzzing and
/// stateful rounds until `minutes` are spent, and prints its summary.
fn contract(minutes: u64) -> Result {
    setup::run()?;
    if !is_root() {
        return Err(
            "the contract test runs the agent (eBPF, namespaces) under the API: run as root".into(),
        );
    }
    step("cargo build --release --bins");
    status(cargo(&["build", "--release", "--bins"]))?;
    step(&format!(
        "Schemathesis against the API for {minutes} minute(s) ({CONTRACT_TEST})"
    ));
    let mut c = cargo(&[
        "test",
        "--release",
        "-p",
        "frametap-e2e",
        "--test",
        "api",
        CONTRACT_TEST,
        "--",
        "--exact",
        "--nocapture",
    ]);
    c.env("FRAMETAP_CONTRACT_SECONDS", (minutes * 60).to_string());
    status(c)
}

#[cfg(test)]
mod tests {
    use super::{contract_minutes, parse_test_result};

    #[test]
    fn contract_takes_whole_minutes() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(contract_minutes(&args(&[])), Ok(10));
        assert_eq!(contract_minutes(&args(&["--minutes", "3"])), Ok(3));
        for bad in [
            &["--minutes", "0"][..],
            &["--minutes", "x"],
            &["--minutes"],
            &["5"],
        ] {
            assert!(contract_minutes(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_cargo_test_summaries() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 18 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.05s"
            ),
            Some((18, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 17 passed; 1 failed; 0 ignored; 0 measured"),
            Some((17, 1))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }
}

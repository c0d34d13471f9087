//! Idempotent installation of everything the build and the tests need. Each step
//! first checks the exact file or command used afterwards, and does nothing when it
//! is there.
//!
//! What each check tests (and what it installs when the check fails):
//!
//! * Debian packages (`apt-get install --no-install-recommends`), each by what the
//!   build or the tests run: the commands `ip` (iproute2), `curl`, `jq`, `setpriv`
//!   (util-linux), `cc` (build-essential) and `c++` (g++), which the `cc` crate calls
//!   for RocksDB, and `python3`; `python3 -c "import pip"` (python3-pip); the file
//!   `/usr/lib/llvm-*/lib/libclang.so` that bindgen loads (libclang-dev); the file
//!   `/etc/ssl/certs/ca-certificates.crt`, the system trust store the agent verifies
//!   upstream servers with (ca-certificates).
//! * The workspace's (stable) toolchain: `cargo fmt --version` and
//!   `cargo clippy --version`, run the way `cargo xtask test` runs them (`rustup component add rustfmt clippy`: a
//!   toolchain installed with rustup's minimal profile has neither).
//! * `rustup run nightly-2026-08-01 rustc --version`, then that toolchain's
//!   `rustup component list --installed` holding `rust-src` (build-std for the eBPF
//!   target) and `clippy` (`rustup toolchain install --profile minimal`).
//! * The symlinks in `/opt/frametap/llvm-22/lib` pointing at that toolchain's
//!   `libLLVM.so.*` (recreated when they point elsewhere).
//! * `~/.cargo/bin/bpf-linker --version` printing version 0.13.0, and `ldd` showing it
//!   loads libLLVM from `/opt/frametap/llvm-22/lib`, i.e. the nightly's LLVM
//!   (`cargo install bpf-linker --features llvm-22` against those links).
//! * Python modules, each by `python3 -c "import MODULE"` run as the tests run it (same
//!   PATH, from the `tests` package directory, where pyenv looks for a
//!   `.python-version`), installed by `python3 -m pip install` with pinned versions
//!   (allowed into Debian's own python3 despite PEP 668; pyenv shims are rehashed; then
//!   checked again).
//! * `~/.cargo/bin/cargo-fuzz --version` printing version 0.13.2 (`cargo install`).
//! * `/opt/frametap/schemathesis/bin/schemathesis --version` printing
//!   `schemathesis, version 4.32.5`, the command the API contract test runs (a venv of
//!   its own, made with Python 3.12: pyenv's `versions/3.12.*`, else `python3.12` on
//!   PATH; on 3.11 a CPython AST bug inside Hypothesis aborts some operations. Then
//!   `pip install schemathesis==4.32.5` into it, and checked again).
//! * By `cargo xtask bench` only (not by `run`):
//!   `/opt/frametap/mitmproxy/bin/mitmdump --version` printing `Mitmproxy: 12.3.1` as
//!   its first line, the command the benchmark runs as its side-by-side reference (a
//!   venv of its own made with Python 3.12 like Schemathesis', as mitmproxy 12 requires
//!   it; then `pip install mitmproxy==12.3.1` into it, and checked again).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Result, status};

/// Must match capture-ebpf/rust-toolchain.toml and agent/build.rs.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-08-01";
/// bpf-linker's LLVM must be the toolchain's LLVM (22 for the nightly above).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// Holds symlinks to the toolchain's libLLVM; bpf-linker finds it through an rpath
/// into this folder, so it must stay.
const LLVM_PREFIX: &str = "/opt/frametap/llvm-22";

/// What must be on the machine for a Debian package to count as installed: the exact
/// command or file that the build or the tests use afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A command on PATH (`command -v`).
    Command(&'static str),
    /// A file matching this glob (one `*` in a directory name, for LLVM's versioned dirs).
    File(&'static str),
    /// A module that `python3` (run as the tests run it) imports.
    PythonModule(&'static str),
}

/// Debian packages and what proves each is there.
const DEBIAN: &[(Need, &str)] = &[
    (Need::Command("ip"), "iproute2"),
    (Need::Command("curl"), "curl"),
    (Need::Command("jq"), "jq"),
    (Need::Command("setpriv"), "util-linux"),
    (Need::Command("cc"), "build-essential"),
    (Need::Command("c++"), "g++"),
    (Need::Command("python3"), "python3"),
    // The Python test peers are installed with `python3 -m pip`.
    (Need::PythonModule("pip"), "python3-pip"),
    // The system trust store the agent verifies upstream servers with
    // (rustls-native-certs reads it through openssl-probe).
    (
        Need::File("/etc/ssl/certs/ca-certificates.crt"),
        "ca-certificates",
    ),
    // Node's http2 and https modules are the TLS test servers (tests/peers/tls_server.js).
    (Need::Command("node"), "nodejs"),
    // A real browser: Chromium opens WebSockets over HTTP/2 (RFC 8441) in the tests,
    // and drives the web UI; so does Firefox (over WebDriver BiDi, built in).
    (Need::Command("chromium"), "chromium"),
    (Need::Command("firefox-esr"), "firefox-esr"),
    // h2load, the HTTP/2 load client of the benchmark's h2 section.
    (Need::Command("h2load"), "nghttp2-client"),
    // Real containers for the container tests (tests/src/podman.rs): Podman with runc
    // (crun refuses hybrid cgroup layouts), its monitor and its bridge network.
    (Need::Command("podman"), "podman"),
    (Need::Command("runc"), "runc"),
    (Need::Command("conmon"), "conmon"),
    (
        Need::File("/usr/lib/cni/bridge"),
        "containernetworking-plugins",
    ),
    // bindgen (librocksdb-sys) loads `libclang.so` at build time; clang-sys finds it in
    // /usr/lib/llvm-N/lib. `libclang-cpp.so.N` (often preinstalled) is not it.
    (
        Need::File("/usr/lib/llvm-*/lib/libclang.so"),
        "libclang-dev",
    ),
];

/// Python test peers: what proves each is there -> pip requirement.
const PYTHON: &[(Need, &str)] = &[
    (Need::PythonModule("websockets"), "websockets==17.4"),
    // A Socket.IO client we did not write, for the live-event tests.
    (Need::PythonModule("socketio"), "python-socketio==5.14.3"),
    // Its asyncio client's transport: events printed in the order they came.
    (Need::PythonModule("aiohttp"), "aiohttp==3.14.5"),
    (Need::PythonModule("websocket"), "websocket-client==1.9.2"),
    (Need::PythonModule("requests"), "requests==2.34.2"),
    // An independent HAR reader, to re-import what the API exports.
    (Need::PythonModule("haralyzer"), "haralyzer==2.4.0"),
    // A gRPC client and server we did not write, for the HTTP/2 tests.
    (Need::PythonModule("grpc"), "grpcio==1.85.4"),
];

/// cargo-fuzz, for the bounded fuzz runs of `cargo xtask test`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The Python the venvs are made with: on 3.11 a CPython AST bug inside Hypothesis
/// aborts some of Schemathesis' operations, and mitmproxy 12 requires 3.12.
const VENV_PYTHON: &str = "3.12";

/// A command installed by pip into a venv of its own (made with Python 3.12), so its
/// pins meet nothing else, and checked by its `--version` output.
struct Venv {
    /// What the messages call it.
    name: &'static str,
    dir: &'static str,
    /// The pip package, installed as `PACKAGE==VERSION`.
    package: &'static str,
    version: &'static str,
    /// The command in the venv's `bin` that is checked and then run.
    command: &'static str,
    /// Whether `COMMAND --version`'s stdout names exactly `version`.
    reports: fn(stdout: &str, version: &str) -> bool,
    /// What the check wants to see, for the error message (`VERSION` is appended).
    shows: &'static str,
    /// Why it needs Python 3.12, for the error message when there is none.
    why_python: &'static str,
    /// The command to run again once Python 3.12 is there.
    rerun: &'static str,
}

/// Schemathesis, which fuzzes the API from its OpenAPI document (tests/tests/api.rs,
/// `cargo xtask contract`).
const SCHEMATHESIS: Venv = Venv {
    name: "Schemathesis",
    dir: "/opt/frametap/schemathesis",
    package: "schemathesis",
    version: "4.32.5",
    command: "schemathesis",
    reports: schemathesis_reports,
    shows: "schemathesis, version ",
    why_python: "3.11 trips a CPython bug in Hypothesis",
    rerun: "cargo xtask setup",
};

/// mitmproxy, the side-by-side reference of the WebSocket benchmark (`cargo xtask
/// bench` installs it; `run` does not).
const MITMPROXY: Venv = Venv {
    name: "mitmproxy",
    dir: "/opt/frametap/mitmproxy",
    package: "mitmproxy",
    version: "12.3.1",
    command: "mitmdump",
    reports: mitmdump_reports,
    shows: "Mitmproxy: ",
    why_python: "version 12 does not run on 3.11",
    rerun: "cargo xtask bench",
};

pub fn cargo_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with cargo's bin dir (where bpf-linker lives) in front, once.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let bin = cargo_bin();
    let mut paths = vec![bin.clone()];
    if let Some(p) = env::var_os("PATH") {
        paths.extend(env::split_paths(&p).filter(|p| *p != bin));
    }
    env::join_paths(paths).expect("PATH")
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.env("PATH", path_with_cargo_bin())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `python3` as the end-to-end tests run it: the same PATH, and the directory of the
/// `tests` package (cargo runs test binaries there), which is where pyenv looks for a
/// `.python-version`. The check and the install must reach the interpreter the tests get.
fn python3() -> Command {
    let mut c = Command::new("python3");
    c.current_dir(crate::workspace_root().join("tests"))
        .env("PATH", path_with_cargo_bin());
    c
}

/// Whether `need` is met on this machine.
fn have(need: Need) -> bool {
    match need {
        Need::Command(command) => {
            succeeds(Command::new("sh").args(["-c", &format!("command -v {command}")]))
        }
        Need::PythonModule(module) => succeeds(python3().args(["-c", &format!("import {module}")])),
        Need::File(pattern) => file_matches(pattern, |dir| {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        }),
    }
}

/// Whether a file matches `pattern` (a path with at most one `*`, inside one component),
/// given a way to list a directory's entries. Pure, so the decision is unit-tested.
fn file_matches(pattern: &str, list_dir: impl Fn(&Path) -> Vec<String>) -> bool {
    let path = Path::new(pattern);
    let Some(star) = path
        .components()
        .position(|c| c.as_os_str().to_string_lossy().contains('*'))
    else {
        let (dir, name) = (path.parent().unwrap_or(Path::new("/")), path.file_name());
        return name.is_some_and(|n| list_dir(dir).iter().any(|e| e.as_str() == n));
    };
    let components: Vec<_> = path.components().collect();
    let dir: PathBuf = components[..star].iter().collect();
    let glob = components[star].as_os_str().to_string_lossy().into_owned();
    let rest: PathBuf = components[star + 1..].iter().collect();
    let (prefix, suffix) = glob.split_once('*').expect("has a star");
    list_dir(&dir)
        .iter()
        .filter(|e| e.len() >= prefix.len() + suffix.len())
        .filter(|e| e.starts_with(prefix) && e.ends_with(suffix))
        .any(|e| {
            let candidate = dir.join(e).join(&rest);
            if rest.as_os_str().is_empty() {
                return true;
            }
            let parent = candidate.parent().unwrap_or(Path::new("/")).to_path_buf();
            let name = candidate
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| list_dir(&parent).contains(&n))
        })
}

/// The packages to install: those whose need `have` says is unmet.
fn missing(packages: &[(Need, &'static str)], have: impl Fn(Need) -> bool) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|(need, _)| !have(*need))
        .map(|(_, pkg)| *pkg)
        .collect()
}

fn missing_debian(have: impl Fn(Need) -> bool) -> Vec<&'static str> {
    missing(DEBIAN, have)
}

pub fn run() -> Result {
    debian_packages()?;
    host_toolchain_components()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    python_packages(PYTHON)?;
    cargo_fuzz()?;
    SCHEMATHESIS.install()?;
    Ok(())
}

fn python_packages(packages: &[(Need, &'static str)]) -> Result {
    let to_install = missing(packages, have);
    if to_install.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Python packages {}", to_install.join(" "));
    let mut c = python3();
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(&to_install)
    // Debian's own python3 refuses pip installs (PEP 668) without this; older pips
    // ignore it. The packages go to /usr/local, beside Debian's.
    .env("PIP_BREAK_SYSTEM_PACKAGES", "1");
    status(c)?;
    // pyenv makes the commands of newly installed packages reachable through shims,
    // which `python3 -m pip` does not refresh by itself.
    if succeeds(Command::new("sh").args(["-c", "command -v pyenv"])) {
        let _ = succeeds(Command::new("pyenv").arg("rehash"));
    }
    let still = missing(packages, have);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "pip installed {} but python3 (run from tests/) still lacks them: is `python3` on PATH \
             the interpreter pip installed into?",
            still.join(" ")
        ))
    }
}

/// The output of `PROGRAM --version` names exactly this version ("bpf-linker 0.13.0").
fn reports_version(stdout: &str, version: &str) -> bool {
    stdout.split_whitespace().nth(1) == Some(version)
}

fn cargo_fuzz() -> Result {
    let ok = Command::new(cargo_bin().join("cargo-fuzz"))
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && reports_version(&String::from_utf8_lossy(&o.stdout), CARGO_FUZZ_VERSION)
        });
    if ok {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let mut c = Command::new("cargo");
    c.args([
        "install",
        "--locked",
        "--force",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ])
    .env("PATH", path_with_cargo_bin());
    status(c)
}

/// The mitmdump command the benchmark runs.
pub fn mitmdump_bin() -> PathBuf {
    MITMPROXY.bin()
}

/// mitmproxy for the benchmark (`cargo xtask bench`), which `run` leaves out.
pub fn mitmproxy() -> Result {
    MITMPROXY.install()
}

/// `schemathesis --version` output naming exactly this version
/// ("schemathesis, version 4.32.5").
fn schemathesis_reports(stdout: &str, version: &str) -> bool {
    stdout.trim().strip_prefix("schemathesis, version ") == Some(version)
}

/// `mitmdump --version` output naming exactly this version on its first line
/// ("Mitmproxy: 12.3.1", then the Python, OpenSSL and platform lines).
fn mitmdump_reports(stdout: &str, version: &str) -> bool {
    stdout
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("Mitmproxy:"))
        .map(str::trim)
        == Some(version)
}

/// The newest `versions/3.12.*/bin/python3.12` under `pyenv_root`, given its entries.
fn pyenv_python(pyenv_root: &Path, versions: &[String]) -> Option<PathBuf> {
    let prefix = format!("{VENV_PYTHON}.");
    let patch = |v: &str| v.strip_prefix(&prefix)?.parse::<u32>().ok();
    versions
        .iter()
        .filter_map(|v| Some((patch(v)?, v)))
        .max()
        .map(|(_, v)| {
            pyenv_root
                .join("versions")
                .join(v)
                .join(format!("bin/python{VENV_PYTHON}"))
        })
}

/// Python 3.12 for a venv: pyenv's, else `python3.12` on PATH.
fn python312(venv: &Venv) -> Result<PathBuf> {
    let pyenv_root = Command::new("pyenv")
        .arg("root")
        .env("PATH", path_with_cargo_bin())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(root) = pyenv_root {
        let versions: Vec<String> = std::fs::read_dir(root.join("versions"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(python) = pyenv_python(&root, &versions).filter(|p| p.is_file()) {
            return Ok(python);
        }
    }
    let name = format!("python{VENV_PYTHON}");
    if succeeds(Command::new(&name).arg("--version")) {
        return Ok(PathBuf::from(name));
    }
    Err(format!(
        "{} needs Python {VENV_PYTHON} ({}) and there is none: install it with `pyenv install \
         {VENV_PYTHON}` (or a python{VENV_PYTHON} package), then run `{}` again",
        venv.name, venv.why_python, venv.rerun
    ))
}

impl Venv {
    /// The checked command, in the venv.
    fn bin(&self) -> PathBuf {
        Path::new(self.dir).join("bin").join(self.command)
    }

    fn ok(&self) -> bool {
        Command::new(self.bin())
            .arg("--version")
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && (self.reports)(&String::from_utf8_lossy(&o.stdout), self.version)
            })
    }

    /// Makes the venv and installs the pinned package into it, unless the command is
    /// already there and reports that version.
    fn install(&self) -> Result {
        if self.ok() {
            return Ok(());
        }
        let python = python312(self)?;
        eprintln!(
            "setup: installing {} {} into {} (with {})",
            self.name,
            self.version,
            self.dir,
            python.display()
        );
        // A venv left by another Python (or half made) is made again from scratch.
        let mut venv = Command::new(&python);
        venv.args(["-m", "venv", "--clear", self.dir])
            .env("PATH", path_with_cargo_bin());
        status(venv)?;
        let mut pip = Command::new(Path::new(self.dir).join("bin/python"));
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{}=={}", self.package, self.version),
        ]);
        status(pip)?;
        if self.ok() {
            Ok(())
        } else {
            Err(format!(
                "{} --version does not print `{}{}` after installing it; see the output above",
                self.bin().display(),
                self.shows,
                self.version
            ))
        }
    }
}

fn debian_packages() -> Result {
    let missing = missing_debian(have);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    status({
        let mut c = Command::new("apt-get");
        c.arg("update");
        c
    })?;
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "--no-install-recommends"])
        .args(&missing);
    c.env("DEBIAN_FRONTEND", "noninteractive");
    status(c)
}

/// `cargo xtask test` runs `cargo fmt` and `cargo clippy` with the workspace's
/// toolchain; rustup's minimal profile (Docker's rust images, for one) has neither.
fn host_toolchain_components() -> Result {
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(subcommand, _)| !succeeds(&mut crate::cargo(&[subcommand, "--version"])))
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding {} to the Rust toolchain", missing.join(", "));
    let mut c = Command::new("rustup");
    c.args(["component", "add"])
        .args(&missing)
        .current_dir(crate::workspace_root());
    status(c)
}

/// rust-src for build-std=core; clippy to lint the eBPF crate.
const EBPF_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

fn ebpf_toolchain() -> Result {
    let has_toolchain =
        succeeds(Command::new("rustup").args(["run", EBPF_TOOLCHAIN, "rustc", "--version"]));
    if !has_toolchain {
        eprintln!("setup: installing Rust {EBPF_TOOLCHAIN} (for the eBPF programs)");
        let mut c = Command::new("rustup");
        c.args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
        ]);
        for comp in EBPF_COMPONENTS {
            c.args(["-c", comp]);
        }
        return status(c);
    }
    let installed = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = EBPF_COMPONENTS
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding {} to {EBPF_TOOLCHAIN}", missing.join(", "));
    let mut c = Command::new("rustup");
    c.args(["component", "add", "--toolchain", EBPF_TOOLCHAIN])
        .args(&missing);
    status(c)
}

fn toolchain_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !out.status.success() {
        return Err(format!("rustup run {EBPF_TOOLCHAIN} rustc failed"));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Point `LLVM_PREFIX/lib` at the toolchain's libLLVM, under its own name and as
/// libLLVM.so (what llvm-sys links against).
fn llvm_prefix() -> Result<PathBuf> {
    let lib_dir = toolchain_sysroot()?.join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .map_err(|e| format!("cannot list {}: {e}", lib_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let prefix = PathBuf::from(LLVM_PREFIX);
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .map_err(|e| format!("cannot create {}: {e}", prefix_lib.display()))?;
    for name in [lib.as_str(), "libLLVM.so"] {
        let link = prefix_lib.join(name);
        let target = lib_dir.join(&lib);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)
                .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        }
    }
    Ok(prefix)
}

/// bpf-linker runs, is the pinned version, and loads libLLVM through the links in
/// `LLVM_PREFIX` (so its LLVM is the nightly's, not another one on the machine).
fn bpf_linker_ok() -> bool {
    let bin = cargo_bin().join("bpf-linker");
    let output = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(version) = output(Command::new(&bin).arg("--version")) else {
        return false;
    };
    let Some(libraries) = output(Command::new("ldd").arg(&bin)) else {
        return false;
    };
    reports_version(&version, BPF_LINKER_VERSION)
        && loads_llvm_from(&libraries, &Path::new(LLVM_PREFIX).join("lib"))
}

/// Whether `ldd` output shows libLLVM resolved inside `lib_dir`.
fn loads_llvm_from(ldd: &str, lib_dir: &Path) -> bool {
    ldd.lines()
        .filter_map(|line| line.trim().split_once(" => "))
        .filter(|(name, _)| name.starts_with("libLLVM"))
        .any(|(_, resolved)| {
            let path = resolved.split(" (").next().unwrap_or_default();
            Path::new(path).parent() == Some(lib_dir)
        })
}

fn bpf_linker() -> Result {
    // The links must exist even when bpf-linker is installed: it loads libLLVM through them.
    let prefix = llvm_prefix()?;
    if bpf_linker_ok() {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {EBPF_TOOLCHAIN}'s LLVM (about 2 minutes)"
    );
    let mut c = Command::new("cargo");
    c.args([
        "install",
        "--locked",
        "--force",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
    ])
    .args([
        "--no-default-features",
        "--features",
        BPF_LINKER_LLVM_FEATURE,
    ])
    .env("LLVM_PREFIX", &prefix)
    .env("PATH", path_with_cargo_bin());
    status(c)?;
    if !bpf_linker_ok() {
        return Err("bpf-linker was installed but does not run; see the output above".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use super::{
        Need, file_matches, loads_llvm_from, missing_debian, mitmdump_reports, pyenv_python,
        reports_version, schemathesis_reports,
    };

    /// A directory tree as `dir -> entries`, for `file_matches`.
    fn tree(files: &[&str]) -> BTreeMap<String, Vec<String>> {
        let mut dirs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for file in files {
            let mut path = Path::new(file);
            while let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
                let entries = dirs.entry(parent.display().to_string()).or_default();
                let name = name.to_string_lossy().into_owned();
                if !entries.contains(&name) {
                    entries.push(name);
                }
                path = parent;
            }
        }
        dirs
    }

    fn libclang_present(files: &[&str]) -> bool {
        let dirs = tree(files);
        let need = Need::File("/usr/lib/llvm-*/lib/libclang.so");
        let Need::File(pattern) = need else {
            unreachable!()
        };
        file_matches(pattern, |d| {
            dirs.get(&d.display().to_string())
                .cloned()
                .unwrap_or_default()
        })
    }

    #[test]
    fn libclang_cpp_alone_means_install_libclang_dev() {
        // What a fresh machine of this kind has preinstalled: not what bindgen loads.
        let fresh = [
            "/usr/lib/llvm-14/lib/libclang-cpp.so.14",
            "/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        ];
        assert!(!libclang_present(&fresh));
        let dirs = tree(&fresh);
        let missing = missing_debian(|need| match need {
            Need::File(p) if p.contains("libclang") => file_matches(p, |d| {
                dirs.get(&d.display().to_string())
                    .cloned()
                    .unwrap_or_default()
            }),
            _ => true,
        });
        assert_eq!(missing, ["libclang-dev"]);
    }

    #[test]
    fn libclang_dev_of_any_llvm_version_is_enough() {
        assert!(libclang_present(&["/usr/lib/llvm-14/lib/libclang.so"]));
        assert!(libclang_present(&[
            "/usr/lib/llvm-16/lib/libclang-cpp.so.16",
            "/usr/lib/llvm-16/lib/libclang.so",
        ]));
        assert!(!libclang_present(&["/usr/lib/llvm-14/lib/libclang.so.1"]));
        assert!(!libclang_present(&[
            "/usr/lib/x86_64-linux-gnu/libclang.so"
        ]));
    }

    #[test]
    fn commands_are_checked_by_name() {
        let missing = missing_debian(|need| need != Need::Command("jq"));
        assert_eq!(missing, ["jq"]);
    }

    #[test]
    fn a_fresh_debian_gets_pip_and_the_trust_store() {
        // Debian's python3 comes without pip; a minimal image has no CA bundle.
        let missing = missing_debian(|need| {
            !matches!(
                need,
                Need::PythonModule("pip") | Need::File("/etc/ssl/certs/ca-certificates.crt")
            )
        });
        assert_eq!(missing, ["python3-pip", "ca-certificates"]);
    }

    #[test]
    fn versions_must_match_exactly() {
        assert!(reports_version("bpf-linker 0.13.0\n", "0.13.0"));
        assert!(!reports_version("bpf-linker 0.13.01\n", "0.13.0"));
        assert!(!reports_version("cargo-fuzz 0.12.0\n", "0.13.2"));
        assert!(!reports_version("", "0.13.2"));
    }

    #[test]
    fn schemathesis_must_be_the_pinned_version() {
        assert!(schemathesis_reports(
            "schemathesis, version 4.32.5\n",
            "4.32.5"
        ));
        assert!(!schemathesis_reports(
            "schemathesis, version 4.32.50\n",
            "4.32.5"
        ));
        assert!(!schemathesis_reports(
            "schemathesis, version 3.39.16\n",
            "4.32.5"
        ));
        // A venv whose interpreter is gone prints nothing (or an error on stderr).
        assert!(!schemathesis_reports("", "4.32.5"));
    }

    #[test]
    fn mitmproxy_must_be_the_pinned_version() {
        // What `mitmdump --version` of mitmproxy 12.3.1 really prints.
        let real = "Mitmproxy: 12.3.1\n\
            Python:    3.12.1\n\
            OpenSSL:   OpenSSL 4.0.3 29 Sep 2026\n\
            Platform:  Linux-6.18.44-fc-v1300-x86_64-with-glibc2.36\n";
        assert!(mitmdump_reports(real, "12.3.1"));
        assert!(!mitmdump_reports(real, "12.3"));
        assert!(!mitmdump_reports("Mitmproxy: 12.3.10\n", "12.3.1"));
        assert!(!mitmdump_reports("Mitmproxy: 11.0.2\n", "12.3.1"));
        // A development build names its commit after the version.
        assert!(!mitmdump_reports(
            "Mitmproxy: 12.3.1 (+12, commit 0123abc)\n",
            "12.3.1"
        ));
        // The version must be on the first line, not just anywhere.
        assert!(!mitmdump_reports(
            "Mitmproxy: 11.0.2\nPython:    12.3.1\n",
            "12.3.1"
        ));
        // A venv whose interpreter is gone prints nothing (or an error on stderr).
        assert!(!mitmdump_reports("", "12.3.1"));
    }

    #[test]
    fn the_venv_is_made_with_pyenvs_newest_3_12() {
        let root = Path::new("/root/.pyenv");
        let versions = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pyenv_python(root, &versions(&["3.11.7", "3.12.1", "3.12.10", "3.13.0"])),
            Some(root.join("versions/3.12.10/bin/python3.12"))
        );
        assert_eq!(pyenv_python(root, &versions(&["3.11.7", "3.13.0"])), None);
        assert_eq!(
            pyenv_python(root, &versions(&["3.12-dev", "3.120.1"])),
            None
        );
    }

    #[test]
    fn bpf_linker_must_load_the_nightlys_llvm_through_the_links() {
        let lib = Path::new("/opt/frametap/llvm-22/lib");
        let through_links = "\tlinux-vdso.so.1 (0x00007ffd5a5f2000)\n\
            \tlibLLVM.so.22.1-rust-1.99.0-nightly => /opt/frametap/llvm-22/lib/libLLVM.so.22.1-rust-1.99.0-nightly (0x00007f3da4000000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3da3e1f000)\n";
        assert!(loads_llvm_from(through_links, lib));
        // Built against another LLVM on the machine.
        let system =
            "\tlibLLVM-19.so => /usr/lib/x86_64-linux-gnu/libLLVM-19.so (0x00007f0000000000)\n";
        assert!(!loads_llvm_from(system, lib));
        // The links are gone: the loader cannot find it.
        let unresolved = "\tlibLLVM.so.22.1-rust-1.99.0-nightly => not found\n";
        assert!(!loads_llvm_from(unresolved, lib));
        // Statically linked LLVM: no libLLVM at all.
        assert!(!loads_llvm_from(
            "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n",
            lib
        ));
    }
}

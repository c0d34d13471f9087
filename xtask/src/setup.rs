//! Idempotent installation of everything the build and the tests need. Each step
//! checks first and does nothing when the thing is already there.
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
    (Need::Command("openssl"), "openssl"),
    // bindgen (librocksdb-sys) loads `libclang.so` at build time; clang-sys finds it in
    // /usr/lib/llvm-N/lib. `libclang-cpp.so.N` (often preinstalled) is not it.
    (
        Need::File("/usr/lib/llvm-*/lib/libclang.so"),
        "libclang-dev",
    ),
];

/// Python test peers: module to import -> pip requirement.
const PYTHON: &[(&str, &str)] = &[
    ("websockets", "websockets==17.4"),
    // A Socket.IO client we did not write, for the live-event tests.
    ("socketio", "python-socketio==5.14.3"),
    ("websocket", "websocket-client==1.9.2"),
    ("requests", "requests==2.34.2"),
    // An independent HAR reader, to re-import what the API exports.
    ("haralyzer", "haralyzer==2.4.0"),
];
/// Python packages only the benchmarks need.
pub const PYTHON_BENCH: &[(&str, &str)] = &[("mitmproxy", "mitmproxy==11.0.2")];

/// cargo-fuzz, for the bounded fuzz runs of `cargo xtask test`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

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

/// Whether `need` is met on this machine.
fn have(need: Need) -> bool {
    match need {
        Need::Command(command) => {
            succeeds(Command::new("sh").args(["-c", &format!("command -v {command}")]))
        }
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

/// The Debian packages to install: those whose need `have` says is unmet.
fn missing_debian(have: impl Fn(Need) -> bool) -> Vec<&'static str> {
    DEBIAN
        .iter()
        .filter(|(need, _)| !have(*need))
        .map(|(_, pkg)| *pkg)
        .collect()
}

pub fn run() -> Result {
    debian_packages()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    python_packages(PYTHON)?;
    cargo_fuzz()?;
    Ok(())
}

pub fn python_packages(packages: &[(&str, &str)]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(module, _)| {
            !succeeds(Command::new("python3").args(["-c", &format!("import {module}")]))
        })
        .map(|(_, req)| *req)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Python packages {}", missing.join(" "));
    let mut c = Command::new("python3");
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(&missing);
    status(c)
}

fn cargo_fuzz() -> Result {
    let ok = Command::new(cargo_bin().join("cargo-fuzz"))
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
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

fn bpf_linker_ok() -> bool {
    let bin = cargo_bin().join("bpf-linker");
    Path::new(&bin).exists()
        && Command::new(&bin).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
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

    use super::{Need, file_matches, missing_debian};

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
            Need::Command(_) => true,
            Need::File(p) => file_matches(p, |d| {
                dirs.get(&d.display().to_string())
                    .cloned()
                    .unwrap_or_default()
            }),
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
}

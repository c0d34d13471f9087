//! Builds the eBPF programs (capture-ebpf) with the pinned nightly and bpf-linker,
//! and leaves the object at `$OUT_DIR/capture-ebpf` for `include_bytes_aligned!`.
//!
//! This does what aya-build does, by hand: aya-ebpf 0.3 requires aya-build 0.2.1,
//! which requires rustc 1.98, while the host side builds on stable 1.95. One lockfile
//! cannot hold both, so the host build script has no aya dependency at all.
use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Must match capture-ebpf/rust-toolchain.toml and the toolchain `cargo xtask setup` installs.
const EBPF_TOOLCHAIN: &str = "nightly-2026-08-01";
const TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("agent crate has no parent folder")?;
    let ebpf_dir = root.join("capture-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("capture-common").display()
    );
    println!("cargo:rerun-if-env-changed=PATH");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    if env::var("CARGO_CFG_TARGET_ENDIAN")? != "little" {
        bail!("frametap's eBPF build only targets little-endian hosts ({TARGET})");
    }
    // Own target dir: cargo must not wait on the lock of the build running us.
    let target_dir = out_dir.join("ebpf-target");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_string(),
        "-Clink-arg=--btf".to_string(),
    ]
    .join("\x1f");

    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        EBPF_TOOLCHAIN,
        "cargo",
        "build",
        "--release",
        "--bins",
    ])
    .args(["--target", TARGET, "-Z", "build-std=core"])
    .arg("--manifest-path")
    .arg(ebpf_dir.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("RUSTFLAGS")
    .stdout(Stdio::inherit())
    .stderr(Stdio::piped());
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}; run `cargo xtask setup` first"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        bail!(
            "building the eBPF programs failed ({}). If the toolchain or bpf-linker is missing, \
             run `cargo xtask setup`.\n{stderr}",
            output.status
        );
    }
    let object = target_dir.join(TARGET).join("release").join("capture-ebpf");
    std::fs::copy(&object, out_dir.join("capture-ebpf"))
        .with_context(|| format!("eBPF object not found at {}", object.display()))?;
    Ok(())
}

//! bpf-linker is what links the eBPF object; say so plainly when it is missing.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if which::which("bpf-linker").is_err() {
        println!("cargo:warning=bpf-linker is not on PATH: run `cargo xtask setup`");
    }
}

//! `frametap-churn` (run by `cargo xtask churn`): real Podman containers started and
//! stopped one after the other under one agent that captures them all (the
//! `libpod_parent` cgroup), each one served before it stops; then whether the
//! agent's threads and descriptors are back where they were, and every namespace
//! it served was let go again.
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use frametap_e2e::{Agent, podman::Container, require_root, wait_for};

#[derive(Parser)]
struct Args {
    /// Containers started and stopped.
    #[arg(long, default_value_t = 200)]
    containers: usize,
}

const SERVING: &str = "capturing in another network namespace";
const STOPPED: &str = "stopped capturing in a network namespace";

fn count(agent: &Agent, message: &str) -> usize {
    agent
        .logs()
        .iter()
        .filter(|l| l["message"] == message)
        .count()
}

/// Warnings and errors the agent logged so far.
fn warnings(agent: &Agent) -> usize {
    agent
        .logs()
        .iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .count()
}

/// (threads, open descriptors) of the agent.
fn usage(agent: &Agent) -> (usize, usize) {
    let entries = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (
        entries(format!("/proc/{}/task", agent.pid())),
        entries(format!("/proc/{}/fd", agent.pid())),
    )
}

/// Start a container, wait until the agent serves its namespace, stop it.
fn cycle(agent: &Agent, name: &str, served_before: usize) -> anyhow::Result<()> {
    let container = Container::start(name, &["sleep", "60"]);
    wait_for(Duration::from_secs(10), || {
        (count(agent, SERVING) > served_before).then_some(())
    })
    .with_context(|| format!("container {} was never served", container.id))?;
    drop(container);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !require_root() {
        bail!("the churn run attaches eBPF programs and starts containers: run as root");
    }
    let name = format!("ft-churn-{}", std::process::id());
    // libpod_parent exists once Podman (cgroupfs) has run a container.
    cycle_free_start(&name);
    let agent = Agent::start_on_host(&[
        "--cgroup",
        "libpod_parent",
        "--ports",
        "18999",
        "--listen",
        "127.0.0.1:15079",
    ]);
    // Two warm-up cycles: what each thread sets up once is not a leak.
    for _ in 0..2 {
        cycle(&agent, &name, count(&agent, SERVING))?;
    }
    let settled = |n: usize| {
        wait_for(Duration::from_secs(10), || {
            (count(&agent, STOPPED) >= n).then_some(())
        })
    };
    settled(2).context("the warm-up namespaces were not let go")?;
    let before = usage(&agent);
    let warnings_before = warnings(&agent);
    let started = Instant::now();
    for i in 0..args.containers {
        cycle(&agent, &name, 2 + i)?;
    }
    let total = 2 + args.containers;
    settled(total).context("some namespaces were never let go")?;
    let after = usage(&agent);
    let warnings = warnings(&agent) - warnings_before;
    println!(
        "{} containers started and stopped in {:.0} s, each served before it stopped; \
         namespaces served {}, let go {}; agent threads {} -> {}, open descriptors {} -> {}; \
         {warnings} warnings or errors logged",
        args.containers,
        started.elapsed().as_secs_f64(),
        count(&agent, SERVING),
        count(&agent, STOPPED),
        before.0,
        after.0,
        before.1,
        after.1,
    );
    if after != before || warnings > 0 {
        bail!("the agent did not come back to where it started");
    }
    Ok(())
}

/// A first container before the agent starts, so that Podman's cgroup parent exists.
fn cycle_free_start(name: &str) {
    drop(Container::start(name, &["true"]));
}

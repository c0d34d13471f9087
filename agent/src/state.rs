//! `agent.json` in the data dir: written while an agent serves, removed on a clean
//! exit. `exec` reads it to warn when nothing is capturing.
use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "agent.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    pub pid: u32,
    pub listen: SocketAddrV4,
    pub cgroups: Vec<String>,
    pub ports: Vec<u16>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

pub fn write(data_dir: &Path, state: &AgentState) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let tmp = data_dir.join(format!(".{STATE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path(data_dir)).context("cannot publish agent state")?;
    Ok(())
}

pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}

/// The state of a live agent, if one is serving from this data dir.
pub fn live(data_dir: &Path) -> Option<AgentState> {
    let text = std::fs::read(path(data_dir)).ok()?;
    let state: AgentState = serde_json::from_slice(&text).ok()?;
    Path::new(&format!("/proc/{}", state.pid))
        .exists()
        .then_some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        assert!(live(dir.path()).is_none());
        let me = AgentState {
            pid: std::process::id(),
            listen: "127.0.0.1:15001".parse().unwrap(),
            cgroups: vec!["frametap".into()],
            ports: vec![80, 443],
        };
        write(dir.path(), &me).unwrap();
        assert_eq!(live(dir.path()), Some(me));
        let dead = AgentState {
            pid: u32::MAX - 1,
            listen: "127.0.0.1:15001".parse().unwrap(),
            cgroups: vec![],
            ports: vec![],
        };
        write(dir.path(), &dead).unwrap();
        assert!(live(dir.path()).is_none());
        remove(dir.path());
        assert!(!path(dir.path()).exists());
    }
}

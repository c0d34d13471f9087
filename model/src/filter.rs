//! [`TrafficFilter`]: which traffic entries a list shows or a deletion removes. One
//! definition for both, so `GET /api/traffic?…` and `DELETE /api/traffic?…` with the
//! same query select the same entries; it crosses the agent's control socket as
//! JSON. The API parses and validates it from the query string; here it only
//! matches.

use serde::{Deserialize, Serialize};

use crate::records::TrafficEntry;

/// A response status, or a class of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatusMatch {
    /// Exactly this status.
    Code(u16),
    /// Any status of this hundred: `4` is `4xx` (400 to 499).
    Class(u8),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(code) => status == code,
            StatusMatch::Class(class) => status / 100 == u16::from(class),
        }
    }
}

/// Which traffic entries match. Every condition given must hold; `None` matches
/// everything, so the default filter matches every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficFilter {
    /// The method is one of these (compared without regard to case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// The URL, host or path contains this, ignoring case (lower-cased).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// The protocol is one of these (`http`, `https`, `ws`, `wss`, `tls`, `tcp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// The client process id is one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    /// The client process name is one of these (compared without regard to case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<String>>,
    /// The client's container id starts with one of these (lower-cased), or its
    /// name is one of them (ignoring case); entries from outside containers never
    /// match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// The response status matches one of these; entries without a response never
    /// match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<StatusMatch>>,
    /// `true`: the entry has an error; `false`: it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_error: Option<bool>,
    /// The error contains this, ignoring case (lower-cased); entries without an
    /// error never match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
}

impl TrafficFilter {
    /// No condition at all: matches every entry.
    pub fn is_empty(&self) -> bool {
        *self == TrafficFilter::default()
    }

    pub fn matches(&self, entry: &TrafficEntry) -> bool {
        let one_of = |list: &Option<Vec<String>>, value: &str| {
            list.as_ref()
                .is_none_or(|list| list.iter().any(|item| item.eq_ignore_ascii_case(value)))
        };
        if !one_of(&self.methods, &entry.method) || !one_of(&self.protocols, &entry.protocol) {
            return false;
        }
        if let Some(pids) = &self.pids
            && !entry.pid.is_some_and(|pid| pids.contains(&pid))
        {
            return false;
        }
        if let Some(processes) = &self.processes
            && !entry.process.as_deref().is_some_and(|name| {
                processes
                    .iter()
                    .any(|wanted| wanted.eq_ignore_ascii_case(name))
            })
        {
            return false;
        }
        if let Some(containers) = &self.containers
            && !entry.container_id.as_deref().is_some_and(|id| {
                containers.iter().any(|wanted| {
                    id.to_ascii_lowercase().starts_with(wanted.as_str())
                        || entry
                            .container_name
                            .as_deref()
                            .is_some_and(|name| name.eq_ignore_ascii_case(wanted))
                })
            })
        {
            return false;
        }
        if let Some(statuses) = &self.statuses
            && !entry
                .status
                .is_some_and(|status| statuses.iter().any(|m| m.matches(status)))
        {
            return false;
        }
        if self
            .has_error
            .is_some_and(|wanted| wanted != entry.error.is_some())
        {
            return false;
        }
        if let Some(needle) = &self.error_contains
            && !entry
                .error
                .as_deref()
                .is_some_and(|error| contains_ignoring_case(error, needle))
        {
            return false;
        }
        match &self.search {
            None => true,
            Some(needle) => [&entry.url, &entry.host, &entry.path]
                .into_iter()
                .any(|field| contains_ignoring_case(field, needle)),
        }
    }
}

/// Whether `haystack` contains `needle_lower` (already lower-cased), ignoring case.
/// ASCII needles (the usual case) are matched without allocating, since a list scans
/// every stored entry.
pub fn contains_ignoring_case(haystack: &str, needle_lower: &str) -> bool {
    if !needle_lower.is_ascii() {
        return haystack.to_lowercase().contains(needle_lower);
    }
    let needle = needle_lower.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests;

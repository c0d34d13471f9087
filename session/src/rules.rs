//! Message rules: drop, replace or close, decided per reassembled WebSocket message.
//!
//! Rules come from the config file and from the API (over the control socket). The
//! [`RuleBook`] compiles every rule before it takes effect, so a rule that does not
//! compile is refused whole and nothing changes. Connections pick up a new set at
//! their next read: each keeps the version it last saw and re-filters when the
//! book's version moved (one atomic load per read when nothing changed).
use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, Ordering},
};

use frametap_model::{MessageType, Refusal, Rule, RuleAction};
use frametap_proto::Peer;
use regex::bytes::{Regex as BytesRegex, RegexBuilder as BytesRegexBuilder};
use regex::{Regex, RegexBuilder};

/// Compiled regexes are bounded so that a rule cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// At most this many rules: each message is checked against all of them.
pub const MAX_RULES: usize = 256;

/// What a rule does to the message it matched, compiled.
#[derive(Clone, Debug)]
pub enum Action {
    Drop,
    Replace { pattern: Regex, replacement: String },
    Close { code: u16, reason: String },
}

/// One rule, ready to match (cheap to clone: regexes share their program).
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub spec: Rule,
    host: Option<HostPattern>,
    path: Option<String>,
    /// The sender a rule matches (the direction names the receiver).
    sender: Option<Peer>,
    text: Option<bool>,
    contains: Option<Vec<u8>>,
    regex: Option<BytesRegex>,
    pub action: Action,
}

#[derive(Clone, Debug)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        // The Host header may carry a port.
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .to_ascii_lowercase();
        match self {
            Self::Exact(name) => host == *name,
            Self::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

/// The connection facts rules match on.
#[derive(Clone, Debug, Default)]
pub struct ConnectionFacts {
    pub host: String,
    pub path: String,
}

/// A message, as the rules see it.
pub struct MessageFacts<'a> {
    pub sender: Peer,
    pub is_text: bool,
    pub content: &'a [u8],
}

impl CompiledRule {
    pub fn compile(spec: Rule) -> Result<Self, String> {
        spec.check()?;
        let host = match spec.host.as_deref().map(frametap_model::rule_host) {
            None | Some("") | Some("*") => None,
            Some(host) => Some(match host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => {
                    HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
                }
                Some(_) => return Err(format!("host {host:?}: expected *.domain")),
                None if host.contains('*') => {
                    return Err(format!(
                        "host {host:?}: only a leading \"*.\" wildcard is supported"
                    ));
                }
                None => HostPattern::Exact(host.to_ascii_lowercase()),
            }),
        };
        let regex = spec
            .regex
            .as_deref()
            .map(|pattern| {
                BytesRegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("regex {pattern:?} does not compile: {e}"))
            })
            .transpose()?;
        let text = spec.message_type.map(|t| t == MessageType::Text);
        let action = match &spec.action {
            RuleAction::Drop {} => Action::Drop,
            RuleAction::Replace {
                pattern,
                replacement,
            } => {
                let pattern = RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("replace pattern {pattern:?} does not compile: {e}"))?;
                Action::Replace {
                    pattern,
                    replacement: replacement.clone(),
                }
            }
            RuleAction::Close { code, reason } => Action::Close {
                code: *code,
                reason: reason.clone(),
            },
        };
        Ok(Self {
            host,
            path: spec.path.clone().filter(|p| !p.is_empty()),
            sender: spec.direction.map(|d| d.receiver().other()),
            text,
            contains: spec
                .contains
                .clone()
                .filter(|c| !c.is_empty())
                .map(String::into_bytes),
            regex,
            action,
            spec,
        })
    }

    /// Could this rule match messages of this connection at all?
    pub fn applies_to(&self, conn: &ConnectionFacts) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(&conn.host))
            && self.path.as_ref().is_none_or(|p| conn.path.starts_with(p))
    }

    /// Does it match this message (of a connection it applies to)?
    pub fn matches(&self, message: &MessageFacts<'_>) -> bool {
        if self.sender.is_some_and(|p| p != message.sender)
            || self.text.is_some_and(|t| t != message.is_text)
        {
            return false;
        }
        // A replace rule only takes text its pattern occurs in: one that would
        // change nothing leaves the message to the rules after it.
        if let Action::Replace { pattern, .. } = &self.action {
            let text = std::str::from_utf8(message.content).ok();
            if !message.is_text || !text.is_some_and(|t| pattern.is_match(t)) {
                return false;
            }
        }
        if let Some(needle) = &self.contains
            && !message
                .content
                .windows(needle.len())
                .any(|window| window == needle.as_slice())
        {
            return false;
        }
        self.regex
            .as_ref()
            .is_none_or(|r| r.is_match(message.content))
    }
}

/// The rules in force, in order, with the version they were published as.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub version: u64,
    pub rules: Vec<CompiledRule>,
}

impl RuleSet {
    /// The rules that could apply to a connection, in order (empty: forward untouched).
    pub fn for_connection(&self, conn: &ConnectionFacts) -> Vec<CompiledRule> {
        self.rules
            .iter()
            .filter(|r| r.applies_to(conn))
            .cloned()
            .collect()
    }
}

/// The agent's rules, shared by every connection and the control socket.
#[derive(Debug, Default)]
pub struct RuleBook {
    current: RwLock<Arc<RuleSet>>,
    version: AtomicU64,
    next_id: AtomicU64,
}

impl RuleBook {
    /// A book holding `rules` (from the config file). Any rule that does not
    /// compile is an error naming it.
    pub fn new(rules: Vec<Rule>) -> Result<Self, String> {
        let book = Self::default();
        for (i, rule) in rules.into_iter().enumerate() {
            book.add(rule)
                .map_err(|(_, e)| format!("rule {} in the config file: {e}", i + 1))?;
        }
        Ok(book)
    }

    /// Version of the current set: changes whenever a rule is added or removed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn list(&self) -> Vec<Rule> {
        self.current()
            .rules
            .iter()
            .map(|r| r.spec.clone())
            .collect()
    }

    /// Compiles and appends a rule; returns it with its id. Refused as a bad request
    /// when it does not compile, as a conflict when its id is taken or the book is full.
    pub fn add(&self, mut rule: Rule) -> Result<Rule, (Refusal, String)> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.rules.len() >= MAX_RULES {
            let message = format!("at most {MAX_RULES} rules; delete one first");
            return Err((Refusal::Conflict, message));
        }
        let taken = |id: &str| {
            current
                .rules
                .iter()
                .any(|r| r.spec.id.as_deref() == Some(id))
        };
        if let Some(id) = rule.id.as_deref()
            && taken(id)
        {
            let message = format!("a rule with id {id:?} exists already");
            return Err((Refusal::Conflict, message));
        }
        let mut compiled =
            CompiledRule::compile(rule.clone()).map_err(|e| (Refusal::BadRequest, e))?;
        if rule.id.is_none() {
            // Assigned only to rules that compiled, and never reused.
            let id = loop {
                let id = format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
                if !taken(&id) {
                    break id;
                }
            };
            rule.id = Some(id);
            compiled.spec.id = rule.id.clone();
        }
        let mut set = current.rules.clone();
        set.push(compiled);
        self.publish(&mut current, set);
        Ok(rule)
    }

    /// Removes a rule; false when there is none with that id.
    pub fn delete(&self, id: &str) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if !current
            .rules
            .iter()
            .any(|r| r.spec.id.as_deref() == Some(id))
        {
            return false;
        }
        let set = current
            .rules
            .iter()
            .filter(|r| r.spec.id.as_deref() != Some(id))
            .cloned()
            .collect();
        self.publish(&mut current, set);
        true
    }

    fn publish(&self, current: &mut Arc<RuleSet>, rules: Vec<CompiledRule>) {
        let version = self.version.load(Ordering::Relaxed) + 1;
        *current = Arc::new(RuleSet { version, rules });
        self.version.store(version, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;

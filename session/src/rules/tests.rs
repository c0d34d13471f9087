//! Unit tests of [`super`] (rules).
use super::*;

fn rule(json: &str) -> Rule {
    serde_json::from_str(json).unwrap()
}

fn facts(host: &str, path: &str) -> ConnectionFacts {
    ConnectionFacts {
        host: host.into(),
        path: path.into(),
    }
}

fn text(sender: Peer, content: &str) -> MessageFacts<'_> {
    MessageFacts {
        sender,
        is_text: true,
        content: content.as_bytes(),
    }
}

#[test]
fn conditions_all_have_to_hold() {
    let r = CompiledRule::compile(rule(
        r#"{"host":"*.chat.test","path":"/ws","direction":"to-server","type":"text",
            "contains":"pass","regex":"word\\d","action":{"kind":"drop"}}"#,
    ))
    .unwrap();
    assert!(r.applies_to(&facts("eu.chat.test:443", "/ws?room=1")));
    assert!(!r.applies_to(&facts("chat.test", "/ws")));
    assert!(!r.applies_to(&facts("eu.chat.test", "/other")));
    assert!(r.matches(&text(Peer::Client, "my password1")));
    assert!(!r.matches(&text(Peer::Server, "my password1")));
    assert!(!r.matches(&text(Peer::Client, "my password")));
    assert!(!r.matches(&text(Peer::Client, "word1 only")));
    let binary = MessageFacts {
        sender: Peer::Client,
        is_text: false,
        content: b"password1",
    };
    assert!(!r.matches(&binary));
}

#[test]
fn replace_only_touches_text() {
    let r = CompiledRule::compile(rule(
        r#"{"action":{"kind":"replace","pattern":"s(e)cret","replacement":"x$1x"}}"#,
    ))
    .unwrap();
    assert!(r.matches(&text(Peer::Server, "a secret")));
    assert!(!r.matches(&text(Peer::Server, "nothing to replace")));
    let binary = MessageFacts {
        sender: Peer::Server,
        is_text: false,
        content: b"secret",
    };
    assert!(!r.matches(&binary));
    assert!(
        CompiledRule::compile(rule(
            r#"{"type":"binary","action":{"kind":"replace","pattern":"a","replacement":"b"}}"#
        ))
        .is_err()
    );
}

#[test]
fn bad_rules_are_refused_whole() {
    let book = RuleBook::default();
    let good = book.add(rule(r#"{"action":{"kind":"drop"}}"#)).unwrap();
    assert_eq!(good.id.as_deref(), Some("r1"));
    let version = book.version();
    for bad in [
        r#"{"regex":"(unclosed","action":{"kind":"drop"}}"#,
        r#"{"action":{"kind":"replace","pattern":"[z-a]","replacement":""}}"#,
        r#"{"action":{"kind":"close","code":1005}}"#,
        r#"{"action":{"kind":"close","code":999}}"#,
        r#"{"host":"a*b.test","action":{"kind":"drop"}}"#,
        r#"{"id":"r1","action":{"kind":"drop"}}"#,
    ] {
        assert!(book.add(rule(bad)).is_err(), "{bad}");
    }
    assert_eq!(book.version(), version);
    assert_eq!(book.list().len(), 1);
    assert!(book.delete("r1"));
    assert!(!book.delete("r1"));
    assert!(book.version() > version);
    assert!(book.list().is_empty());
    // Ids are not reused after a delete.
    let next = book.add(rule(r#"{"action":{"kind":"drop"}}"#)).unwrap();
    assert_eq!(next.id.as_deref(), Some("r2"));
}

#[test]
fn config_rules_with_an_error_name_it() {
    let err = RuleBook::new(vec![
        rule(r#"{"action":{"kind":"drop"}}"#),
        rule(r#"{"regex":"(","action":{"kind":"drop"}}"#),
    ])
    .unwrap_err();
    assert!(err.starts_with("rule 2 in the config file"), "{err}");
}

//! JSON shapes of what the agent does on the API's behalf: message rules and injected
//! messages.
//!
//! [`Rule`], [`RuleAction`] and [`InjectDirection`] mirror `frametap_control`'s types
//! field for field, with the same serde attributes, so a rule reads the same in the
//! agent's config file, on the control socket and over the API; the mirrors exist
//! because the control crate has no OpenAPI schemas. `From` converts both ways, and a
//! test checks that both serialise to the same JSON.

use frametap_control as control;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::views::MessageType;

/// Which peer receives a message: the direction a rule matches, or where an injected
/// message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InjectDirection {
    /// Towards the client (sent by the server).
    ToClient,
    /// Towards the server (sent by the client).
    ToServer,
}

/// A message rule. Every condition given must hold; absent conditions match anything.
/// Rules are tried in order; the first that matches a message decides what happens
/// to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Assigned by the agent when absent. When given: 1 to 128 of `A-Z a-z 0-9 . _ ~ -`
    /// (it goes into `DELETE /api/rules/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "redact-secrets", pattern = "^[A-Za-z0-9._~-]{1,128}$")]
    pub id: Option<String>,
    /// Host of the connection (the Host header, else SNI): `chat.example.com`, or
    /// `*.example.com` for any subdomain. Case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "*.example.com")]
    pub host: Option<String>,
    /// Prefix of the upgrade request's path (query included), e.g. `/chat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which way the message travels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<InjectDirection>,
    /// `text` or `binary`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    /// The content contains this text (bytes of its UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The content matches this regex (Rust `regex` syntax; binary messages are
    /// matched as bytes). The agent compiles it and refuses the rule (400) if it can't.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// What happens to a matching message.
    pub action: RuleAction,
}

/// What a matching rule does to the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum RuleAction {
    /// Not forwarded; recorded with `dropped`.
    Drop,
    /// Text messages only: every match of `pattern` (a regex) is replaced by
    /// `replacement` (`$1`, `${name}` refer to groups). The original is recorded with
    /// `dropped`, what is forwarded with `modified`.
    Replace {
        /// The regex to replace.
        pattern: String,
        /// Its replacement.
        replacement: String,
    },
    /// Close the connection: both peers get a close frame with this code and reason.
    Close {
        /// A close code an endpoint may send: 1000 to 1003, 1007 to 1014, 3000 to 4999.
        #[schema(minimum = 1000, maximum = 4999)]
        code: u16,
        /// At most 123 bytes of UTF-8 (a close frame carries 125 bytes).
        #[serde(default)]
        reason: String,
    },
}

impl Rule {
    /// What the API can check itself before asking the agent (which compiles the
    /// regexes): the id's form, close codes and reasons, `replace` on binary messages.
    pub fn check(&self) -> Result<(), String> {
        if let Some(id) = &self.id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)))
        {
            return Err(format!(
                "rule `id` must be 1 to 128 of A-Z a-z 0-9 . _ ~ -, got {:?}",
                crate::error::excerpt(id)
            ));
        }
        match &self.action {
            RuleAction::Replace { .. } if self.message_type == Some(MessageType::Binary) => Err(
                "a `replace` action applies to text messages only: drop `\"type\": \"binary\"` \
                 or choose another action"
                    .into(),
            ),
            RuleAction::Close { code, reason } => {
                if !sendable_close_code(*code) {
                    return Err(format!(
                        "close code {code} can't be sent: use 1000 to 1003, 1007 to 1014 or \
                         3000 to 4999"
                    ));
                }
                if reason.len() > 123 {
                    return Err(format!(
                        "close reason is {} bytes: a close frame holds at most 123",
                        reason.len()
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Close codes an endpoint may put in a close frame (RFC 6455 §7.4): the defined
/// ones except 1004 (reserved), 1005, 1006 and 1015 (never sent), and the ranges for
/// libraries and applications.
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl From<control::InjectDirection> for InjectDirection {
    fn from(direction: control::InjectDirection) -> InjectDirection {
        match direction {
            control::InjectDirection::ToClient => InjectDirection::ToClient,
            control::InjectDirection::ToServer => InjectDirection::ToServer,
        }
    }
}

impl From<InjectDirection> for control::InjectDirection {
    fn from(direction: InjectDirection) -> control::InjectDirection {
        match direction {
            InjectDirection::ToClient => control::InjectDirection::ToClient,
            InjectDirection::ToServer => control::InjectDirection::ToServer,
        }
    }
}

impl From<control::MessageType> for MessageType {
    fn from(message_type: control::MessageType) -> MessageType {
        match message_type {
            control::MessageType::Text => MessageType::Text,
            control::MessageType::Binary => MessageType::Binary,
        }
    }
}

impl From<MessageType> for control::MessageType {
    fn from(message_type: MessageType) -> control::MessageType {
        match message_type {
            MessageType::Text => control::MessageType::Text,
            MessageType::Binary => control::MessageType::Binary,
        }
    }
}

impl From<control::RuleAction> for RuleAction {
    fn from(action: control::RuleAction) -> RuleAction {
        match action {
            control::RuleAction::Drop => RuleAction::Drop,
            control::RuleAction::Replace {
                pattern,
                replacement,
            } => RuleAction::Replace {
                pattern,
                replacement,
            },
            control::RuleAction::Close { code, reason } => RuleAction::Close { code, reason },
        }
    }
}

impl From<RuleAction> for control::RuleAction {
    fn from(action: RuleAction) -> control::RuleAction {
        match action {
            RuleAction::Drop => control::RuleAction::Drop,
            RuleAction::Replace {
                pattern,
                replacement,
            } => control::RuleAction::Replace {
                pattern,
                replacement,
            },
            RuleAction::Close { code, reason } => control::RuleAction::Close { code, reason },
        }
    }
}

impl From<control::Rule> for Rule {
    fn from(rule: control::Rule) -> Rule {
        Rule {
            id: rule.id,
            host: rule.host,
            path: rule.path,
            direction: rule.direction.map(Into::into),
            message_type: rule.message_type.map(Into::into),
            contains: rule.contains,
            regex: rule.regex,
            action: rule.action.into(),
        }
    }
}

impl From<Rule> for control::Rule {
    fn from(rule: Rule) -> control::Rule {
        control::Rule {
            id: rule.id,
            host: rule.host,
            path: rule.path,
            direction: rule.direction.map(Into::into),
            message_type: rule.message_type.map(Into::into),
            contains: rule.contains,
            regex: rule.regex,
            action: rule.action.into(),
        }
    }
}

/// `GET /api/rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleList {
    /// The rules in force, in the order they are tried.
    pub rules: Vec<Rule>,
}

/// `DELETE /api/rules/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleDeleted {
    /// Always `true` (failures are error responses).
    pub success: bool,
    /// The id of the rule removed.
    pub id: String,
}

/// `POST /api/websocket/{trafficId}/send`: a message to inject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    /// Which peer receives it.
    pub direction: InjectDirection,
    /// The content: the text itself when `isBinary` is false (sent as a text
    /// message), standard base64 of the bytes when it is true (a binary message).
    #[schema(example = "{\"action\":\"ping\"}")]
    pub data: String,
    /// Send a binary message (`data` is base64). Default `false`.
    #[serde(default)]
    pub is_binary: bool,
}

/// The answer to a [`SendMessage`]: the frame the agent recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// Id of the injected frame (its `injected` flag is set).
    #[schema(
        example = "0191a2b3c4d50001-000000fb",
        pattern = "^[0-9a-f]{16}-[0-9a-f]{8,16}$"
    )]
    pub frame_id: String,
    /// The connection.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// Which peer received it, as requested.
    pub direction: InjectDirection,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn control_rules() -> Vec<control::Rule> {
        let base = control::Rule {
            id: None,
            host: None,
            path: None,
            direction: None,
            message_type: None,
            contains: None,
            regex: None,
            action: control::RuleAction::Drop,
        };
        vec![
            base.clone(),
            control::Rule {
                id: Some("r1".into()),
                host: Some("*.chat.test".into()),
                path: Some("/ws".into()),
                direction: Some(control::InjectDirection::ToServer),
                message_type: Some(control::MessageType::Text),
                contains: Some("secret".into()),
                regex: Some("s[e]cret".into()),
                action: control::RuleAction::Replace {
                    pattern: "secret".into(),
                    replacement: "REDACTED".into(),
                },
            },
            control::Rule {
                direction: Some(control::InjectDirection::ToClient),
                message_type: Some(control::MessageType::Binary),
                action: control::RuleAction::Close {
                    code: 4000,
                    reason: "bye".into(),
                },
                ..base
            },
        ]
    }

    #[test]
    fn mirrors_write_and_read_the_control_json() {
        for rule in control_rules() {
            let theirs = serde_json::to_value(&rule).unwrap();
            let mirror = Rule::from(rule.clone());
            assert_eq!(serde_json::to_value(&mirror).unwrap(), theirs);
            let read: Rule = serde_json::from_value(theirs.clone()).unwrap();
            assert_eq!(control::Rule::from(read), rule);
        }
        for direction in [
            control::InjectDirection::ToClient,
            control::InjectDirection::ToServer,
        ] {
            assert_eq!(
                serde_json::to_value(InjectDirection::from(direction)).unwrap(),
                serde_json::to_value(direction).unwrap()
            );
        }
        // Both refuse the same mistakes.
        for bad in [
            json!({"action": {"kind": "drop"}, "hots": "x"}),
            json!({"action": {"kind": "explode"}}),
            json!({"action": {"kind": "close", "code": 4000, "extra": 1}}),
            json!({"action": {"kind": "replace", "pattern": "a"}}),
            json!({"direction": "up", "action": {"kind": "drop"}}),
            json!({"type": "TEXT", "action": {"kind": "drop"}}),
            json!({}),
        ] {
            assert!(
                serde_json::from_value::<Rule>(bad.clone()).is_err(),
                "{bad}"
            );
            assert!(
                serde_json::from_value::<control::Rule>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        // And accept the same: serde ignores extra keys next to a unit variant's tag.
        let lenient = json!({"action": {"kind": "drop", "extra": 1}});
        assert_eq!(
            serde_json::from_value::<Rule>(lenient.clone()).is_ok(),
            serde_json::from_value::<control::Rule>(lenient).is_ok()
        );
    }

    #[test]
    fn checks_what_the_api_can() {
        let rule = |action: RuleAction| Rule {
            id: None,
            host: None,
            path: None,
            direction: None,
            message_type: None,
            contains: None,
            regex: None,
            action,
        };
        let close = |code, reason: &str| {
            rule(RuleAction::Close {
                code,
                reason: reason.into(),
            })
        };
        assert!(close(1000, "bye").check().is_ok());
        assert!(close(4999, &"x".repeat(123)).check().is_ok());
        for code in [0, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert!(close(code, "").check().is_err(), "{code}");
        }
        assert!(close(1000, &"x".repeat(124)).check().is_err());
        let replace = Rule {
            message_type: Some(MessageType::Binary),
            ..rule(RuleAction::Replace {
                pattern: "a".into(),
                replacement: "b".into(),
            })
        };
        assert!(replace.check().unwrap_err().contains("text messages only"));
        for id in ["", "a/b", "with space", &"x".repeat(129)] {
            let bad = Rule {
                id: Some(id.into()),
                ..rule(RuleAction::Drop)
            };
            assert!(bad.check().is_err(), "{id:?}");
        }
        let good = Rule {
            id: Some("redact-1.v2_~".into()),
            ..rule(RuleAction::Drop)
        };
        assert!(good.check().is_ok());
    }
}

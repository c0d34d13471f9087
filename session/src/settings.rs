//! [`Settings`]: what the sessions of one agent share.
use std::sync::Arc;

use frametap_model::TrafficIds;

use crate::rules::RuleBook;
use crate::ws::MaskKeys;

/// What the sessions of one agent share: where traffic ids come from, the caps,
/// the rules, and the masking keys of frames frametap writes.
#[derive(Clone)]
pub struct Settings {
    pub ids: Arc<TrafficIds>,
    /// Most payload bytes recorded (and held for rules) per frame or message.
    pub payload_cap: usize,
    /// Most bytes stored per HTTP body.
    pub body_cap: u64,
    pub rules: Arc<RuleBook>,
    pub mask_keys: MaskKeys,
}

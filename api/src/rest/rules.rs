//! `/api/rules`: the agent's message rules (drop, replace, close), listed, added and
//! removed through the agent, which holds them and compiles their regexes. The API
//! checks what it can first (body shape, close codes, ids), so only the agent's own
//! verdicts (a regex that does not compile, an id in use, no such rule) come back as
//! its refusals. While the agent is down, the list comes from the store, where the
//! agent records its rules at start and on every change.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::common::{JsonBody, PathText, agent_error, follower};
use crate::agent_views::{RuleDeleted, RuleList};
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::state::{AppState, ControlError};
use frametap_control::{Rule, RuleSnapshot};

/// List the message rules.
///
/// The rules in force, in the order the agent tries them (the first that matches a
/// message decides), with `live: true`. While the agent is not running: the rules
/// it last recorded in the store (at its start, from its config file, and on every
/// change), with `live: false` and `recordedAt`.
#[utoipa::path(
    get,
    path = "/api/rules",
    tag = "rules",
    operation_id = "listRules",
    responses(
        (status = 200, description = "The rules, in order", body = RuleList),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 502, description = "The agent failed to answer", body = ErrorBody),
        (status = 503, description = "The agent is not running and never recorded rules in this data dir (or the store is not readable)", body = ErrorBody),
    )
)]
pub(crate) async fn list_rules(State(state): State<AppState>) -> Result<Json<RuleList>, ApiError> {
    match state.agent.list_rules().await {
        Ok(rules) => Ok(Json(RuleList {
            rules,
            live: true,
            recorded_at: None,
        })),
        Err(ControlError::AgentDown(reason)) => last_known_rules(&state, reason).map(Json),
        Err(error) => Err(agent_error(error, "list its rules", "no rules to show")),
    }
}

/// The rules the agent last recorded in the store, for when it is down.
fn last_known_rules(state: &AppState, agent_down: String) -> Result<RuleList, ApiError> {
    let none = |why: &str| {
        agent_error(
            ControlError::AgentDown(agent_down.clone()),
            "list its rules",
            &format!("no rules to show ({why})"),
        )
    };
    let store = follower(state).map_err(|_| none("the capture store is not readable either"))?;
    // Rule changes are not announced like records: read what the agent wrote last.
    store.catch_up().map_err(|e| ApiError::store_read(&e))?;
    let stored = store
        .latest_rules()
        .map_err(|e| ApiError::store_read(&e))?
        .ok_or_else(|| none("it never recorded its rules in this data dir"))?;
    let snapshot: RuleSnapshot = serde_json::from_slice(&stored.value).map_err(|e| {
        ApiError::store_read(&anyhow::anyhow!(
            "the rules recorded in the store do not decode: {e}"
        ))
    })?;
    Ok(RuleList {
        rules: snapshot.rules,
        live: false,
        recorded_at: Some(snapshot.recorded_at_ms),
    })
}

/// Add a message rule.
///
/// Appends the rule (tried after the existing ones); it applies to messages from now
/// on, in every connection. Answers the rule as the agent stored it, with its `id`
/// (assigned when the body has none).
#[utoipa::path(
    post,
    path = "/api/rules",
    tag = "rules",
    operation_id = "addRule",
    request_body(content = Rule, description = "The rule (the agent's config-file format)",
        example = json!({"host": "chat.example.com", "direction": "to-client", "type": "text",
            "contains": "password", "action": {"kind": "replace", "pattern": "password=\\S+", "replacement": "password=***"}})),
    responses(
        (status = 201, description = "The rule as added", body = Rule),
        (status = 400, description = "A malformed body (not JSON, unknown or missing fields, a bad close code), or a rule the agent refused (a regex that does not compile)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 409, description = "The agent refused the rule: its id is in use", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 502, description = "The agent failed to add the rule", body = ErrorBody),
        (status = 503, description = "The agent is not running (no rule was added)", body = ErrorBody),
    )
)]
pub(crate) async fn add_rule(
    State(state): State<AppState>,
    JsonBody(rule): JsonBody<Rule>,
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    rule.check().map_err(ApiError::BadRequest)?;
    let added = state
        .agent
        .add_rule(rule)
        .await
        .map_err(|e| agent_error(e, "add the rule", "no rule was added"))?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// Remove a message rule.
#[utoipa::path(
    delete,
    path = "/api/rules/{id}",
    tag = "rules",
    operation_id = "deleteRule",
    params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "The rule was removed", body = RuleDeleted),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody,
            example = json!({"error": "no rule with id \"r1\""})),
        (status = 502, description = "The agent failed to remove the rule", body = ErrorBody),
        (status = 503, description = "The agent is not running (the rule is still in force)", body = ErrorBody),
    )
)]
pub(crate) async fn delete_rule(
    State(state): State<AppState>,
    id: PathText,
) -> Result<Json<RuleDeleted>, ApiError> {
    // Not UTF-8: no rule can have that id.
    let Some(id) = id.0 else {
        return Err(ApiError::NotFound("Rule not found".into()));
    };
    state.agent.delete_rule(id.clone()).await.map_err(|e| {
        agent_error(
            e,
            &format!("remove rule {:?}", excerpt(&id)),
            "the rule is still in force",
        )
    })?;
    Ok(Json(RuleDeleted { success: true, id }))
}

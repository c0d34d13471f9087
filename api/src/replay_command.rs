//! `frametap-api replay`: the REST replay from a shell. Asks the running API to play a
//! recorded conversation again, follows the replay until it ends (Ctrl-C cancels it),
//! and prints how the new conversation compares with the original. A thin client of
//! `POST /api/websocket/{id}/replay`, `GET /api/replays/{id}` and
//! `GET /api/websocket/{id}/compare/{other}`; the request and the summary are built
//! by plain functions, so they are tested without a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use signal_hook::consts::{SIGINT, SIGTERM};

/// How often the replay's progress is asked for.
const POLL: Duration = Duration::from_millis(200);

/// Pace of the replayed messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Timing {
    /// The recorded gaps between the client's messages (times --scale).
    Recorded,
    /// No waiting.
    Fast,
    /// Each message once the server has sent what it had at that point.
    Answers,
}

/// Play a recorded WebSocket conversation again (through the running frametap-api and
/// its agent), wait for it to end, and print how it compares with the original.
#[derive(clap::Args, Debug)]
pub struct ReplayCommand {
    /// Traffic id of the recorded WebSocket connection (as GET /api/traffic lists it).
    pub traffic_id: String,
    /// ws:// or wss:// URL of another server to play it against [default: the
    /// original server].
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Pace of the client's messages.
    #[arg(long, value_enum, default_value = "recorded")]
    pub timing: Timing,
    /// With --timing recorded: multiply the recorded gaps by this (0.5 is twice as
    /// fast). [default: 1]
    #[arg(long, value_name = "FACTOR")]
    pub scale: Option<f64>,
    /// A handshake header to set, `Name: value`, or to leave out, `Name:`
    /// (repeatable). [default: the original's]
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A regular expression whose matches the comparison ignores (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub ignore: Vec<String>,
    /// A JSONPath (such as `$..timestamp`) whose values the comparison ignores in
    /// JSON messages (repeatable).
    #[arg(long = "ignore-path", value_name = "JSONPATH")]
    pub ignore_paths: Vec<String>,
    /// Print the replay and the comparison as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The body of `POST .../replay` for these arguments.
pub fn request_body(args: &ReplayCommand) -> anyhow::Result<Value> {
    let mut body = Map::new();
    if let Some(target) = &args.target {
        body.insert("target".into(), json!(target));
    }
    let timing = match args.timing {
        Timing::Recorded => "recorded",
        Timing::Fast => "fast",
        Timing::Answers => "answers",
    };
    body.insert("timing".into(), json!(timing));
    if let Some(scale) = args.scale {
        body.insert("scale".into(), json!(scale));
    }
    let mut headers = Map::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header {header:?}: write it as `Name: value` (or `Name:` to leave it out)");
        };
        let value = value.trim();
        let value = if value.is_empty() {
            Value::Null
        } else {
            json!(value)
        };
        headers.insert(name.trim().to_string(), value);
    }
    if !headers.is_empty() {
        body.insert("headers".into(), Value::Object(headers));
    }
    Ok(Value::Object(body))
}

/// The comparison's query string.
pub fn compare_query(args: &ReplayCommand) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for pattern in &args.ignore {
        query.append_pair("ignore", pattern);
    }
    for path in &args.ignore_paths {
        query.append_pair("ignorePath", path);
    }
    query.finish()
}

/// What a person reads: how the replay went, then the comparison by direction, with
/// the messages that differ.
pub fn summary(status: &Value, comparison: Option<&Value>) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut out = format!(
        "replay {} of {} to {}: {} of {} messages sent, {} from the server: {}\n",
        text(&status["id"]),
        text(&status["replayOf"]),
        text(&status["url"]),
        status["messagesSent"],
        status["messagesTotal"],
        status["serverMessages"],
        text(&status["state"]),
    );
    if let Some(error) = status["error"].as_str() {
        out.push_str(&format!("  {error}\n"));
    }
    if let Some(traffic) = status["trafficId"].as_str() {
        out.push_str(&format!("new connection {traffic}\n"));
    }
    let Some(comparison) = comparison else {
        return out;
    };
    out.push_str(if comparison["same"] == true {
        "the same as the original\n"
    } else {
        "different from the original\n"
    });
    for (key, side) in [("toServer", "to the server"), ("toClient", "to the client")] {
        let lines = comparison[key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let count = |s: &str| lines.iter().filter(|l| l["status"] == s).count();
        out.push_str(&format!(
            "  {side}: {} same, {} changed, {} missing, {} extra\n",
            count("same"),
            count("changed"),
            count("missing"),
            count("extra")
        ));
        for line in lines.iter().filter(|l| l["status"] != "same") {
            let content = |m: &Value| {
                if m.is_null() {
                    "-".to_string()
                } else {
                    excerpt(&text(&m["content"]))
                }
            };
            out.push_str(&format!(
                "    {}: {} -> {}\n",
                text(&line["status"]),
                content(&line["a"]),
                content(&line["b"])
            ));
        }
    }
    out
}

/// `request` with the API token, when there is one.
fn authorized<B>(request: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(auth) => request.header("Authorization", auth),
        None => request,
    }
}

/// At most 60 characters of a message, quoted.
fn excerpt(content: &str) -> String {
    let mut cut: String = content.chars().take(60).collect();
    if cut.len() < content.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Runs the command against the API at `base` (`http://host:port`) with `token`;
/// returns whether the replay ended `done`.
pub fn run(args: &ReplayCommand, base: &str, token: Option<&str>) -> anyhow::Result<bool> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let call = |method: &str, path: &str, body: Option<&Value>| -> anyhow::Result<(u16, Value)> {
        let url = format!("{base}{path}");
        let auth = token.map(|t| format!("Bearer {t}"));
        let auth = auth.as_deref();
        let response = match (method, body) {
            ("POST", Some(body)) => authorized(agent.post(&url), auth)
                .header("Content-Type", "application/json")
                .send(serde_json::to_vec(body)?.as_slice()),
            ("DELETE", _) => authorized(agent.delete(&url), auth).call(),
            _ => authorized(agent.get(&url), auth).call(),
        }
        .with_context(|| {
            format!("cannot reach frametap-api at {base}: is it running? (--listen)")
        })?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, json))
    };
    let refused = |what: &str, status: u16, answer: &Value| {
        let why = answer["error"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_string);
        anyhow::anyhow!("{what}: {status}: {why}")
    };

    let id = &args.traffic_id;
    let (status, started) = call(
        "POST",
        &format!("/api/websocket/{id}/replay"),
        Some(&request_body(args)?),
    )?;
    if status != 202 {
        return Err(refused(&format!("replaying {id}"), status, &started));
    }
    let replay = started["id"].as_str().unwrap_or_default().to_string();
    // Ctrl-C (or a TERM) from now on stops the replay rather than leaving it running.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot catch Ctrl-C")?;
    }
    let mut cancelled = false;
    let mut last = started;
    while last["state"] == "running" {
        if stop.load(Ordering::Relaxed) && !cancelled {
            cancelled = true;
            let (status, answer) = call("DELETE", &format!("/api/replays/{replay}"), None)?;
            // 409: it ended meanwhile.
            if status != 200 && status != 409 {
                return Err(refused(
                    &format!("cancelling replay {replay}"),
                    status,
                    &answer,
                ));
            }
        }
        std::thread::sleep(POLL);
        let (status, now) = call("GET", &format!("/api/replays/{replay}"), None)?;
        if status != 200 {
            return Err(refused(&format!("following replay {replay}"), status, &now));
        }
        last = now;
    }
    let comparison = match last["trafficId"].as_str() {
        Some(copy) => {
            let query = compare_query(args);
            let path = format!("/api/websocket/{id}/compare/{copy}?{query}");
            let (status, comparison) = call("GET", &path, None)?;
            if status != 200 {
                return Err(refused("comparing", status, &comparison));
            }
            Some(comparison)
        }
        None => None,
    };
    if args.json {
        println!("{}", json!({"replay": last, "comparison": comparison}));
    } else {
        print!("{}", summary(&last, comparison.as_ref()));
    }
    Ok(last["state"] == "done")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ReplayCommand,
    }

    fn parse(line: &[&str]) -> ReplayCommand {
        let mut argv = vec!["replay"];
        argv.extend_from_slice(line);
        Wrapper::parse_from(argv).args
    }

    #[test]
    fn the_request_says_what_the_flags_say() {
        let args = parse(&[
            "0191a2b3c4d50001",
            "--target",
            "wss://staging.example.com/feed",
            "--timing",
            "recorded",
            "--scale",
            "0.5",
            "--header",
            "Cookie: a=1; b=2",
            "--header",
            "Authorization:",
            "--ignore",
            r"\d+",
            "--ignore-path",
            "$..id",
        ]);
        assert_eq!(
            request_body(&args).unwrap(),
            json!({
                "target": "wss://staging.example.com/feed",
                "timing": "recorded",
                "scale": 0.5,
                "headers": {"Cookie": "a=1; b=2", "Authorization": null},
            })
        );
        assert_eq!(compare_query(&args), "ignore=%5Cd%2B&ignorePath=%24..id");
        let bare = parse(&["0191a2b3c4d50001", "--timing", "fast"]);
        assert_eq!(request_body(&bare).unwrap(), json!({"timing": "fast"}));
        let bad = parse(&["0191a2b3c4d50001", "--header", "no colon"]);
        assert!(
            request_body(&bad)
                .unwrap_err()
                .to_string()
                .contains("Name: value")
        );
    }

    #[test]
    fn the_summary_counts_each_side_and_shows_what_differs() {
        let status = json!({
            "id": "r1", "replayOf": "a", "url": "wss://x/", "messagesSent": 2,
            "messagesTotal": 2, "serverMessages": 3, "state": "done", "error": null,
            "trafficId": "b",
        });
        let message = |content: &str| json!({"content": content});
        let comparison = json!({
            "same": false,
            "toServer": [{"status": "same", "a": message("hi"), "b": message("hi")}],
            "toClient": [
                {"status": "changed", "a": message("price 1"), "b": message("price 2")},
                {"status": "extra", "a": null, "b": message("bonus")},
            ],
        });
        assert_eq!(
            summary(&status, Some(&comparison)),
            "replay r1 of a to wss://x/: 2 of 2 messages sent, 3 from the server: done\n\
             new connection b\n\
             different from the original\n  \
             to the server: 1 same, 0 changed, 0 missing, 0 extra\n  \
             to the client: 0 same, 1 changed, 0 missing, 1 extra\n    \
             changed: \"price 1\" -> \"price 2\"\n    \
             extra: - -> \"bonus\"\n"
        );
    }
}

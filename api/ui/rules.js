// The agent's message rules (#/rules): the list in the order they are tried, a form
// to add one (the API checks it and says what is wrong), and deletion.
import { call, get } from "./api.js";
import { h, select, formatTime } from "./dom.js";

export function rulesView(root) {
  const list = h("tbody");
  const status = h("p", { class: "muted" });
  const error = h("p", { class: "error", role: "alert" });

  async function load() {
    try {
      const answer = await get("/api/rules");
      status.textContent = answer.live
        ? `${answer.rules.length} rule(s) in force in the running agent`
        : `the agent is not running: these are the rules it had${answer.recordedAt ? ` at ${formatTime(answer.recordedAt)}` : ""}`;
      list.replaceChildren(...answer.rules.map(row));
    } catch (e) {
      status.textContent = e.message;
    }
  }

  function row(r) {
    const action = r.action || {};
    const what =
      action.kind === "replace"
        ? `replace ${JSON.stringify(action.pattern)} with ${JSON.stringify(action.replacement)}`
        : action.kind === "close"
          ? `close with ${action.code}${action.reason ? ` “${action.reason}”` : ""}`
          : action.kind;
    const when = [
      r.host && `host ${r.host}`,
      r.path && `path ${r.path}`,
      r.direction && r.direction,
      r.messageType && `${r.messageType} messages`,
      r.contains && `contains ${JSON.stringify(r.contains)}`,
      r.regex && `matches /${r.regex}/`,
    ].filter(Boolean);
    return h(
      "tr",
      { dataset: { id: r.id } },
      h("td", null, r.id),
      h("td", null, when.join(", ") || "every message"),
      h("td", null, what),
      h(
        "td",
        null,
        h(
          "button",
          {
            type: "button",
            name: "delete",
            onclick: async () => {
              try {
                await call("DELETE", `/api/rules/${encodeURIComponent(r.id)}`);
                error.textContent = "";
              } catch (e) {
                error.textContent = e.message;
              }
              load();
            },
          },
          "Delete"
        )
      )
    );
  }

  const input = (name, placeholder, size = 16) => h("input", { name, placeholder, size });
  const kind = select("kind", [["drop", "drop"], ["replace", "replace"], ["close", "close the connection"]], "drop");
  const form = h(
    "form",
    { class: "rule-form" },
    h("div", null, "When:", input("host", "host, *.domain"), input("path", "path prefix"),
      select("direction", [["", "either direction"], ["to-server", "to the server"], ["to-client", "to the client"]], ""),
      select("messageType", [["", "text or binary"], ["text", "text"], ["binary", "binary"]], ""),
      input("contains", "contains"), input("regex", "regex")),
    h("div", null, "Do:", kind, input("pattern", "pattern (replace)"), input("replacement", "replacement"),
      input("code", "close code", 8), input("reason", "close reason"), input("id", "id (optional)", 12),
      h("button", { type: "submit", name: "add" }, "Add rule"))
  );
  form.onsubmit = async (e) => {
    e.preventDefault();
    const v = (name) => form.elements[name].value.trim();
    const rule = {};
    for (const name of ["id", "host", "path", "direction", "messageType", "contains", "regex"]) if (v(name)) rule[name] = v(name);
    const action = { kind: kind.value };
    if (kind.value === "replace") {
      action.pattern = form.elements.pattern.value;
      action.replacement = form.elements.replacement.value;
    }
    if (kind.value === "close") {
      action.code = v("code") === "" ? undefined : Number(v("code"));
      if (v("reason")) action.reason = v("reason");
    }
    rule.action = action;
    try {
      await call("POST", "/api/rules", rule);
      error.textContent = "";
      form.reset();
    } catch (err) {
      error.textContent = err.message;
    }
    load();
  };
  root.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", null, "Rules")),
    status,
    h("table", { class: "rules" }, h("thead", null, h("tr", null, h("th", null, "Id"), h("th", null, "When"), h("th", null, "Do"), h("th", null, ""))), list),
    h("h3", null, "Add a rule"),
    form,
    error
  );
  load();
  return () => {};
}

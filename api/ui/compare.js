// Two recorded conversations side by side (#/compare/<a>/<b>), as the API compares
// them: per direction, each line same, changed, missing (only in the first) or extra
// (only in the second), with what varies from run to run ignored by regular
// expression or JSONPath.
import { get } from "./api.js";
import { h } from "./dom.js";

export function compareView(root, a, b) {
  const result = h("div", { class: "comparison" }, h("p", { class: "muted" }, "comparing…"));
  const ignore = h("input", { name: "ignore", placeholder: "ignore: regular expression" });
  const ignorePath = h("input", { name: "ignore-path", placeholder: "ignore: JSONPath, e.g. $..timestamp" });
  const run = async () => {
    const q = new URLSearchParams();
    if (ignore.value) q.set("ignore", ignore.value);
    if (ignorePath.value) q.set("ignorePath", ignorePath.value);
    try {
      result.replaceChildren(...shown(await get(`/api/websocket/${a}/compare/${b}?${q}`)));
    } catch (e) {
      result.replaceChildren(h("p", { class: "error" }, e.message));
    }
  };
  root.replaceChildren(
    h("p", null, h("a", { href: `#/traffic/${a}` }, `← ${a}`), " · ", h("a", { href: `#/traffic/${b}` }, b)),
    h("h2", null, "Compare two conversations"),
    h(
      "form",
      { class: "toolbar", onsubmit: (e) => (e.preventDefault(), run()) },
      ignore,
      ignorePath,
      h("button", { type: "submit", name: "compare" }, "Compare")
    ),
    result
  );
  run();
  return () => {};
}

function shown(c) {
  const counts = c.counts;
  return [
    h(
      "p",
      { class: c.same ? "ok summary" : "error summary" },
      c.same ? "The same" : "Different",
      `: ${counts.same} same, ${counts.changed} changed, ${counts.missing} missing, ${counts.extra} extra`,
      c.truncated ? " (the first 10,000 messages of each)" : ""
    ),
    side("Client → server", c.toServer),
    side("Server → client", c.toClient),
  ];
}

function side(title, lines) {
  const content = (m) => (m == null ? h("span", { class: "muted" }, "—") : m.content.slice(0, 300));
  return h(
    "section",
    null,
    h("h3", null, `${title} (${lines.length})`),
    h(
      "table",
      { class: "compare" },
      h("thead", null, h("tr", null, h("th", null, ""), h("th", null, "first"), h("th", null, "second"))),
      h(
        "tbody",
        null,
        lines.map((l) =>
          h("tr", { class: l.status, dataset: { status: l.status } }, h("td", null, h("span", { class: `badge ${l.status}` }, l.status)), h("td", null, content(l.a)), h("td", null, content(l.b)))
        )
      )
    )
  );
}

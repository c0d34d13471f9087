// frametap's web UI: signs in with the API token, then routes between the views
// (each has its own address, for bookmarks: #/traffic, #/traffic/<id>, #/rules,
// #/compare/<id>/<other>).
import { get, token, onUnauthorized } from "./api.js";
import { Live } from "./live.js";
import { trafficView } from "./traffic.js";
import { connectionView } from "./connection.js";
import { rulesView } from "./rules.js";
import { compareView } from "./compare.js";

// The link frametap-api prints carries the token once: keep it, and take it out of
// the address bar (and so out of the history and of anything copied from it).
const params = new URLSearchParams(location.search);
if (params.has("token")) {
  token.set(params.get("token"));
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash || "#/traffic"}`);
}

const $ = (id) => document.getElementById(id);
const liveState = $("live");
const live = new Live(token.get, (state, why) => {
  liveState.textContent = state === "refused" ? `live: ${why}` : state;
  liveState.className = `live ${state}`;
});
// What the page subscribes to, for the browser tests.
window.frametapLive = live;
let leave = null;

function signIn(message) {
  if (leave) leave();
  leave = null;
  live.stop();
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

onUnauthorized((message) => {
  token.clear();
  signIn(`${message}`);
});

$("signin").onsubmit = async (e) => {
  e.preventDefault();
  token.set($("token").value.trim());
  try {
    await get("/api/traffic?limit=1");
  } catch (err) {
    if (err.status !== 401) signIn(err.message);
    return;
  }
  $("token").value = "";
  start();
};

$("signout").onclick = () => {
  token.clear();
  signIn("");
};

function route() {
  if (leave) leave();
  const view = $("view");
  const hash = location.hash || "#/traffic";
  const entry = hash.match(/^#\/traffic\/([0-9a-fA-F]{16})$/);
  const pair = hash.match(/^#\/compare\/([0-9a-fA-F]{16})\/([0-9a-fA-F]{16})$/);
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  }
  if (entry) leave = connectionView(view, entry[1].toLowerCase(), live);
  else if (pair) leave = compareView(view, pair[1].toLowerCase(), pair[2].toLowerCase());
  else if (hash === "#/rules") leave = rulesView(view, live);
  else leave = trafficView(view, live);
}

function start() {
  $("signin-error").textContent = "";
  $("signin").hidden = true;
  $("app").hidden = false;
  live.start();
  route();
}

window.addEventListener("hashchange", () => {
  if (token.get()) route();
});

if (token.get()) start();
else signIn("");

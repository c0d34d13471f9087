// The REST API, with the token. The token comes from the link frametap-api prints
// (`/?token=…`, taken once and dropped from the address bar) or the sign-in form,
// and is kept in this browser's local storage until "Sign out".

const KEY = "frametap-api-token";

export const token = {
  get: () => localStorage.getItem(KEY),
  set: (value) => localStorage.setItem(KEY, value),
  clear: () => localStorage.removeItem(KEY),
};

/** An error answer: its status and the API's own message (what to do about it). */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

/** What to do when the API says 401 (the token is wrong or gone). */
export function onUnauthorized(f) {
  unauthorized = f;
}

/** `method path` with a JSON `body`; resolves to {json, headers}, rejects with ApiError. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `frametap-api cannot be reached (${e.message}): is it running?`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const message = (json && json.error) || `${response.status} ${response.statusText}`;
    if (response.status === 401) unauthorized(message);
    throw new ApiError(response.status, message);
  }
  return { json, headers: response.headers };
}

export const get = async (path) => (await call("GET", path)).json;

/** Raw bytes of `path` (bodies), with the response's headers. */
export async function getBytes(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token.get()}` } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch {
      // Not JSON: the status says it.
    }
    if (response.status === 401) unauthorized(message);
    throw new ApiError(response.status, message);
  }
  return { bytes: new Uint8Array(await response.arrayBuffer()), headers: response.headers };
}

/** `path` with the token in its query, for links the browser follows itself (downloads). */
export function withToken(path) {
  const join = path.includes("?") ? "&" : "?";
  return `${path}${join}token=${encodeURIComponent(token.get() || "")}`;
}

/** The `rel="next"` URL of a page's Link header, if more may follow. */
export function nextLink(headers) {
  const link = headers.get("Link") || "";
  const m = link.match(/<([^>]+)>;\s*rel="next"/);
  return m ? m[1] : null;
}

// The convtree REST API as the viewer uses it: the same public endpoints any client calls.

const KEY = "convtree.key";

export class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${getKey()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      // not a problem document: the status says enough
    }
    throw new Problem(response.status, problem);
  }
  return response;
}

const json = async (method, path, body) => (await call(method, path, body)).json();
const c = (id) => `/v1/conversations/${encodeURIComponent(id)}`;
const m = (id, messageId) => `${c(id)}/messages/${encodeURIComponent(messageId)}`;

export const api = {
  listConversations: (cursor, limit = 50) =>
    json("GET", `/v1/conversations?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
  createConversation: (body) => json("POST", "/v1/conversations", body),
  conversation: (id) => json("GET", c(id)),
  context: (id, last) => json("GET", `${c(id)}/context${last ? `?last=${last}` : ""}`),
  messageContext: (id, messageId) => json("GET", `${m(id, messageId)}/context`),
  children: (id, messageId) => json("GET", `${m(id, messageId)}/children`),
  moveHead: (id, messageId) => json("PUT", `${c(id)}/head`, { message_id: messageId }),
  append: (id, body) => json("POST", `${c(id)}/messages`, body),
  turn: (id, body) => json("POST", `${c(id)}/turns`, body),
  fork: (id, messageId, body) => json("POST", `${m(id, messageId)}/fork`, body),
  regenerate: (id, messageId, body) => json("POST", `${m(id, messageId)}/regenerate`, body),
  audit: (id) => json("GET", `${c(id)}/audit`),
  exportBlob: async (id) => (await call("GET", `${c(id)}/export`)).blob(),
  models: () => json("GET", "/v1/models"),
  replays: (id, cursor) => json("GET", `${c(id)}/replays?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
  replay: (id, runId) => json("GET", `${c(id)}/replays/${encodeURIComponent(runId)}`),
  replayDiff: (id, runId) => json("GET", `${c(id)}/replays/${encodeURIComponent(runId)}/diff`),
  startReplay: (id, body) => json("POST", `${c(id)}/replays`, body),
};

// The viewer: a key, the tenant's conversations, one conversation's tree, and what can be done to it.

import { api, getKey, Problem, setKey } from "./api.js";
import { count, counted, forkIcon, h, seconds, short, when } from "./dom.js";
import { body } from "./message.js";
import { ReplayRuns } from "./replays.js";
import { generationLine, TAIL_SHOWN, TreeView } from "./tree.js";

const $ = (id) => document.getElementById(id);

const state = {
  conversations: [], // every page loaded so far, newest first
  nextCursor: null,
  titles: new Map(), // conversation id -> title, of every conversation seen
  view: null, // { conversation, tree, replays }
  models: null,
};

// --- messages to the reader --------------------------------------------------------------------

let toastTimer = null;
function toast(text, kind = "info") {
  const el = $("toast");
  el.textContent = text;
  el.className = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), kind === "error" ? 8000 : 3000);
}

function explain(error) {
  if (error instanceof Problem) {
    if (error.status === 401) return "The key was refused: paste a valid API key.";
    const type = error.body?.type ? ` (${error.body.type.replace("urn:convtree:problem:", "")})` : "";
    return `${error.status}: ${error.message}${type}`;
  }
  return String(error?.message || error);
}

// Runs an action; reports its failure instead of leaving the page half-updated.
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) toast(done);
    return result;
  } catch (error) {
    toast(explain(error), "error");
    return undefined;
  }
}

// --- the key -----------------------------------------------------------------------------------

function showKeyState() {
  const has = Boolean(getKey());
  $("key").value = "";
  $("key").placeholder = has ? "key in use for this tab" : "paste a key (ct_…)";
  $("forget").hidden = !has;
  document.body.classList.toggle("no-key", !has);
}

$("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  setKey(key);
  showKeyState();
  state.models = null;
  await reloadList();
  route();
});

$("forget").addEventListener("click", () => {
  setKey("");
  state.conversations = [];
  state.nextCursor = null;
  renderList();
  showKeyState();
  $("main").replaceChildren(emptyMain());
  $("detail").hidden = true;
});

// --- the list of conversations -----------------------------------------------------------------

async function reloadList() {
  state.conversations = [];
  state.nextCursor = null;
  await loadPage();
}

async function loadPage() {
  const page = await attempt(() => api.listConversations(state.nextCursor));
  if (!page) return;
  state.conversations.push(...page.items);
  state.nextCursor = page.next_cursor;
  for (const c of page.items) state.titles.set(c.id, c.title);
  renderList();
}

function matches(conversation, needle) {
  if (!needle) return true;
  const haystack = [conversation.title || "", conversation.id, JSON.stringify(conversation.metadata)]
    .join(" ")
    .toLowerCase();
  return haystack.includes(needle);
}

function renderList() {
  const needle = $("filter").value.trim().toLowerCase();
  const current = state.view?.conversation.id;
  const items = state.conversations
    .filter((c) => matches(c, needle))
    .map((c) =>
      h(
        "li",
        {},
        h(
          "a",
          { href: `#/c/${c.id}`, class: c.id === current ? "current" : "", dataset: { id: c.id } },
          h("span", { class: "title" }, c.forked_from ? forkIcon() : null, c.title || "(untitled)"),
          h(
            "span",
            { class: "sub" },
            `${counted(c.message_count, "message", "messages")} · ${counted(c.leaf_count, "tip", "tips")} · ${short(c.id)}`,
          ),
        ),
      ),
    );
  if (items.length === 0 && getKey()) {
    items.push(h("li", { class: "none" }, needle ? "No loaded conversation matches." : "No conversations yet."));
  }
  $("conversations").replaceChildren(...items);
  $("more").hidden = !state.nextCursor;
}

$("filter").addEventListener("input", renderList);
$("more").addEventListener("click", loadPage);

$("new-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const body = {};
  if (form.title.value.trim()) body.title = form.title.value.trim();
  if (form.system.value.trim()) body.system = form.system.value;
  const created = await attempt(() => api.createConversation(body), "Conversation created.");
  if (!created) return;
  form.reset();
  await reloadList();
  location.hash = `#/c/${created.id}`;
});

// --- one conversation --------------------------------------------------------------------------

function emptyMain() {
  return h(
    "section",
    { class: "empty" },
    h("h1", {}, "Conversation trees"),
    h("p", {}, getKey() ? "Pick a conversation on the left." : "Paste an API key above, then pick a conversation."),
  );
}

const NO_RUNS = { items: [], next_cursor: null };

async function open(conversationId, messageId) {
  const started = performance.now();
  const loaded = await attempt(() =>
    Promise.all([
      api.conversation(conversationId),
      api.context(conversationId, TAIL_SHOWN),
      api.replays(conversationId).catch(() => NO_RUNS), // the tree is worth showing without them
      modelChoices(),
    ]),
  );
  if (!loaded) return;
  const [conversation, headContext, runs, models] = loaded;
  let context = headContext;
  // A message off the loaded head path (another branch, a replayed reply's original): its own
  // path is the spine, so that it is drawn and can be selected.
  const offPath = messageId && !headContext.messages.some((m) => m.id === messageId);
  if (offPath) {
    const found = await api.messageContext(conversationId, messageId).catch(() => null);
    if (found?.messages.length) context = found;
  }
  const fetched = performance.now();
  state.titles.set(conversation.id, conversation.title);
  const source = conversation.forked_from?.conversation_id;
  if (source && !state.titles.has(source)) {
    const found = await api.conversation(source).catch(() => null);
    if (found) state.titles.set(source, found.title);
  }
  const openedBefore =
    state.view?.conversation.id === conversation.id ? state.view.tree.opened : new Set();
  const replays = new ReplayRuns(conversation, runs, {
    models,
    attempt,
    title: (id) => state.titles.get(id),
    split: splitModel,
  });
  const tree = new TreeView(conversation, context, {
    onSelect: showDetail,
    links: {
      title: (id) => state.titles.get(id),
      forksOf: (messageId) => state.conversations.filter((c) => c.forked_from?.message_id === messageId),
      original: (messageId) => `#/c/${replays.source()}/m/${messageId}`,
    },
  });
  state.view = { conversation, tree, replays };
  const drawn = tree.render(openedBefore);
  const pathNote =
    context === headContext
      ? null
      : h(
          "p",
          { class: "path-note" },
          `Showing the path to message ${short(messageId)}, not the head path. `,
          h("a", { href: `#/c/${conversation.id}` }, "Show the head path"),
        );
  $("main").replaceChildren(
    ...[header(conversation, headContext), replays.section, pathNote, h("div", { class: "tree" }, drawn)].filter(Boolean),
  );
  renderList();
  const select = messageId && tree.messages.has(messageId) ? messageId : conversation.head_id;
  if (select && tree.messages.has(select)) {
    tree.select(select);
    if (messageId) tree.cards.get(select)?.scrollIntoView({ block: "center" });
  } else {
    $("detail").hidden = true;
  }
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
  const rendered = performance.now();
  window.convtreeTimings = {
    messages: context.messages.length,
    fetchMs: fetched - started,
    renderMs: rendered - fetched,
    totalMs: rendered - started,
  };
  $("timing").textContent = `${context === headContext ? "head path" : "path"} of ${count(context.depth)} · shown in ${seconds(rendered - started)}`;
}

function header(conversation, context) {
  const origin = conversation.forked_from;
  const auditBox = h("div", { id: "audit", class: "audit", hidden: true });
  return h(
    "section",
    { class: "conversation-head" },
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, conversation.title || "(untitled)"),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", id: "run-audit", onclick: () => runAudit(conversation.id, auditBox) }, "Audit"),
        h("button", { type: "button", id: "export", onclick: () => download(conversation) }, "Export"),
        h("button", { type: "button", class: "quiet", onclick: () => open(conversation.id) }, "Refresh"),
      ),
    ),
    h(
      "p",
      { class: "facts" },
      `${counted(conversation.message_count, "message", "messages")} · ${counted(conversation.leaf_count, "branch tip", "branch tips")} · `,
      `head at depth ${count(Math.max(0, context.depth - 1))} · updated ${when(conversation.updated_at)} · `,
      h("code", { title: "conversation id" }, conversation.id),
      Object.keys(conversation.metadata || {}).length
        ? h("span", { class: "metadata" }, ` · ${JSON.stringify(conversation.metadata)}`)
        : null,
    ),
    origin
      ? h(
          "p",
          { class: "origin" },
          forkIcon(),
          " Forked from ",
          h(
            "a",
            { id: "fork-source", href: `#/c/${origin.conversation_id}/m/${origin.message_id}` },
            state.titles.get(origin.conversation_id) || short(origin.conversation_id),
          ),
          ` at message ${short(origin.message_id)}`,
        )
      : null,
    h("p", { id: "timing", class: "timing" }),
    auditBox,
  );
}

async function runAudit(conversationId, box) {
  const report = await attempt(() => api.audit(conversationId));
  if (!report) return;
  box.hidden = false;
  box.className = `audit ${report.valid ? "valid" : "invalid"}`;
  box.replaceChildren(
    h("strong", {}, report.valid ? "✔ The hash chain verifies" : "✘ The log was altered"),
    h(
      "span",
      {},
      ` · ${count(report.events_checked)} events · ${count(report.bodies_checked)} bodies checked` +
        (report.bodies_erased ? ` · ${count(report.bodies_erased)} erased` : ""),
    ),
    report.valid
      ? h("span", { class: "hash" }, ` · head hash ${report.head_hash ? report.head_hash.slice(0, 16) + "…" : "—"}`)
      : h("span", {}, ` · first bad event seq ${report.first_invalid_seq}: ${report.reason}${report.detail ? ` (${report.detail})` : ""}`),
  );
}

async function download(conversation) {
  const blob = await attempt(() => api.exportBlob(conversation.id));
  if (!blob) return;
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: `conversation-${conversation.id}.jsonl` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// --- the selected message and what can be done from it -----------------------------------------

async function modelChoices() {
  if (state.models === null) {
    const listed = await api.models().catch(() => ({ data: [] }));
    state.models = listed.data.map((m) => m.id);
  }
  return state.models;
}

function modelSelect(models) {
  return h(
    "select",
    { name: "model", "aria-label": "model" },
    h("option", { value: "" }, "default model"),
    models.map((id) => h("option", { value: id }, id)),
  );
}

function splitModel(value) {
  if (!value) return {};
  const at = value.indexOf("/");
  return at < 0 ? { provider: value } : { provider: value.slice(0, at), model: value.slice(at + 1) };
}

async function showDetail(message) {
  const { conversation } = state.view;
  const panel = $("detail");
  panel.hidden = false;
  const isHead = conversation.head_id === message.id;
  const gen = message.generation;
  const reply = h(
    "form",
    { class: "reply", id: "reply-form" },
    h("h3", {}, "Add a message under this one"),
    h(
      "div",
      { class: "row" },
      h(
        "select",
        { name: "role", "aria-label": "role" },
        ["user", "assistant", "system", "developer"].map((r) =>
          h("option", { value: r, selected: r === (message.role === "user" ? "assistant" : "user") }, r),
        ),
      ),
    ),
    h("textarea", { name: "content", rows: "3", placeholder: "Content", required: true }),
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit", name: "append" }, "Append"),
      h("button", { type: "button", name: "ask", title: "Append as the user's message and get the model's reply" }, "Ask the model"),
    ),
  );
  const models = await modelChoices();
  const regenerateModel = modelSelect(models);
  const askModel = modelSelect(models);
  reply.querySelector(".row:last-child").prepend(askModel);

  reply.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { role: reply.role.value, content: reply.content.value, parent_message_id: message.id };
    const appended = await attempt(() => api.append(conversation.id, body), "Appended; the head moved to it.");
    if (appended) await open(conversation.id, appended.id);
  });
  reply.ask.addEventListener("click", async () => {
    if (!reply.content.value.trim()) return reply.content.reportValidity();
    const body = { content: reply.content.value, parent_message_id: message.id, ...splitModel(askModel.value) };
    const turn = await attempt(() => api.turn(conversation.id, body), "The model replied.");
    if (turn) await open(conversation.id, turn.assistant_message_id);
  });

  const forkTitle = h("input", { name: "fork-title", placeholder: "Title of the fork", "aria-label": "title of the fork" });
  panel.replaceChildren(
    ...[h("button", { type: "button", class: "close quiet", "aria-label": "close", onclick: () => (panel.hidden = true) }, "×"),
    h("h2", {}, `${message.role[0].toUpperCase()}${message.role.slice(1)} message`, isHead ? h("span", { class: "badge head" }, "head") : null),
    h("p", { class: "ids" }, h("code", {}, message.id), ` · depth ${message.depth} · seq ${message.seq}`),
    h("p", { class: "ids" }, when(message.created_at)),
    message.redacted
      ? h(
          "p",
          { class: "redaction" },
          `${message.redacted.erased ? "Erased" : "Redacted"} by ${message.redacted.by} on ${when(message.redacted.at)}: ${message.redacted.reason}`,
        )
      : null,
    ...body(message, state.view.tree.messages, (id) => state.view.tree.select(id)),
    gen ? h("p", { class: "generation" }, generationLine(gen)) : null,
    Object.keys(message.metadata || {}).length ? h("pre", { class: "metadata" }, JSON.stringify(message.metadata, null, 2)) : null,
    h(
      "div",
      { class: "message-actions" },
      h(
        "button",
        {
          type: "button",
          id: "make-head",
          disabled: isHead,
          onclick: async () => {
            const moved = await attempt(() => api.moveHead(conversation.id, message.id), "Head moved.");
            if (moved) await open(conversation.id, message.id);
          },
        },
        isHead ? "This is the head" : "Make this the head",
      ),
      h(
        "form",
        {
          class: "row",
          id: "fork-form",
          onsubmit: async (e) => {
            e.preventDefault();
            const body = forkTitle.value.trim() ? { title: forkTitle.value.trim() } : {};
            const fork = await attempt(() => api.fork(conversation.id, message.id, body), "Forked.");
            if (!fork) return;
            await reloadList();
            location.hash = `#/c/${fork.id}`;
          },
        },
        forkTitle,
        h("button", { type: "submit" }, "Fork here"),
      ),
      message.role === "assistant"
        ? h(
            "form",
            {
              class: "row",
              id: "regenerate-form",
              onsubmit: async (e) => {
                e.preventDefault();
                const body = splitModel(regenerateModel.value);
                const result = await attempt(() => api.regenerate(conversation.id, message.id, body), "Regenerated.");
                if (result) await open(conversation.id, result.assistant_message_id);
              },
            },
            regenerateModel,
            h("button", { type: "submit" }, "Regenerate"),
          )
        : null,
    ),
    reply,
  ].filter(Boolean));
}

// --- routing -----------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/c\/([0-9a-f-]{36})(?:\/m\/([0-9a-f-]{36}))?$/i);
  if (match && getKey()) open(match[1], match[2]);
  else if (!match) {
    state.view = null;
    $("main").replaceChildren(emptyMain());
    $("detail").hidden = true;
    renderList();
  }
}

window.addEventListener("hashchange", route);
showKeyState();
if (getKey()) reloadList().then(route);
document.body.dataset.ready = "true";

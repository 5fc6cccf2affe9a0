// A conversation's replay runs (those replaying it, and the one that wrote it) and, for one run,
// its turns side by side: the original reply | the new one, with their numbers and tool steps.

import { api } from "./api.js";
import { count, h, seconds, short, when } from "./dom.js";

const ENDED = new Set(["finished", "failed", "stopped", "cancelled"]);
const POLL_MS = 1000;

const messageHref = (conversationId, messageId) => `#/c/${conversationId}/m/${messageId}`;

function numbers(side) {
  const parts = [];
  if (side.provider || side.model) parts.push(`${side.provider ?? "?"}/${side.model ?? "?"}`);
  if (side.prompt_tokens != null || side.completion_tokens != null) {
    parts.push(`${side.prompt_tokens ?? "?"} → ${side.completion_tokens ?? "?"} tokens`);
  }
  if (side.latency_ms != null) parts.push(seconds(side.latency_ms));
  if (side.finish_reason) parts.push(side.finish_reason);
  return parts.length ? parts.join(" · ") : "written by an append: no generation";
}

function callsOf(side) {
  if (!side?.tool_calls?.length) return null;
  return h(
    "ul",
    { class: "diff-calls" },
    side.tool_calls.map((call) =>
      h(
        "li",
        { dataset: { callId: call.id } },
        h("pre", { class: "call" }, h("span", { class: "call-name" }, call.name), "(", h("span", { class: "call-args" }, call.arguments), ")"),
        h("span", { class: "call-result" }, call.result == null ? "no result on the path" : `→ ${call.result}`),
      ),
    ),
  );
}

function side(kind, title, reply, conversationId, empty) {
  if (!reply) return h("div", { class: `side ${kind} missing` }, h("div", { class: "side-head" }, title), h("p", { class: "ids" }, empty));
  return h(
    "div",
    { class: `side ${kind}`, dataset: { id: reply.id } },
    h("div", { class: "side-head" }, title, " ", h("a", { href: messageHref(conversationId, reply.id), title: reply.id }, short(reply.id))),
    reply.content ? h("pre", { class: "side-text" }, reply.content) : null,
    callsOf(reply),
    h("p", { class: "numbers" }, numbers(reply)),
  );
}

function step(s, run) {
  return h(
    "div",
    { class: "step", dataset: { index: String(s.index) } },
    h(
      "div",
      { class: "step-head" },
      `Tool step ${s.index + 1}`,
      h("span", { class: "badge resolution", dataset: { resolution: String(s.resolution ?? "none") } }, s.resolution ?? "not reached"),
    ),
    h(
      "div",
      { class: "sides" },
      side("original", "Original", s.original, run.conversation_id, "no such step"),
      side("replayed", "Replayed", s.replayed, run.target_conversation_id, s.resolution === "diverged" ? "answered with text" : "not reached"),
    ),
    s.unrecorded?.length
      ? h(
          "p",
          { class: "unrecorded" },
          "Never recorded: ",
          s.unrecorded.flatMap((c, i) => [i ? ", " : "", h("code", {}, `${c.name}(${c.arguments})`)]),
        )
      : null,
  );
}

export function diffView(diff, onClose) {
  const run = diff.run;
  return h(
    "div",
    { class: "diff", dataset: { run: run.id } },
    h(
      "div",
      { class: "diff-head" },
      h("h3", {}, `Replay ${short(run.id)} · ${run.provider}/${run.model} · ${run.status}`),
      h("button", { type: "button", class: "quiet close-diff", onclick: onClose }, "Close"),
    ),
    h(
      "p",
      { class: "facts" },
      `${count(run.turns_done)} of ${count(run.turns_total)} turns · ${count(run.prompt_tokens)} → ${count(run.completion_tokens)} tokens`,
      run.error ? ` · ${run.error}${run.detail ? `: ${run.detail}` : ""}` : "",
    ),
    diff.turns.map((turn) =>
      h(
        "div",
        { class: "turn", dataset: { index: String(turn.index) } },
        h(
          "div",
          { class: "turn-user" },
          h("span", { class: "block-label" }, `Turn ${turn.index + 1} · user`),
          " ",
          h("a", { href: messageHref(run.conversation_id, turn.user_message_id) }, short(turn.user_message_id)),
          h("pre", {}, turn.user_content),
        ),
        turn.steps?.length ? h("div", { class: "steps" }, turn.steps.map((s) => step(s, run))) : null,
        h(
          "div",
          { class: "sides" },
          side("original", "Original", turn.original, run.conversation_id, "no original reply"),
          side("replayed", "Replayed", turn.replayed, run.target_conversation_id, ENDED.has(run.status) ? "not written" : "not yet written"),
        ),
        h("p", { class: "similarity" }, turn.similarity == null ? "similarity: not compared yet" : `similarity ${turn.similarity.toFixed(3)}`),
      ),
    ),
  );
}

export class ReplayRuns {
  // conversation: the summary; page: the first page of its runs; models: the choices to start a
  // run on; attempt(action, done): runs an action, reporting its failure; title(id): a known
  // conversation's title; split(choice): a model choice as the target's provider and model.
  constructor(conversation, page, { models, attempt, title, split }) {
    this.conversation = conversation;
    this.runs = page.items;
    this.nextCursor = page.next_cursor;
    this.models = models;
    this.attempt = attempt;
    this.title = title;
    this.split = split;
    this.shown = null; // the run whose diff is open
    this.list = h("ul", { id: "replay-runs" });
    this.diffBox = h("div", { id: "replay-diff" });
    this.more = h("button", { type: "button", class: "link", onclick: () => this.loadMore() }, "older runs");
    this.count = h("span", { class: "count" });
    this.section = h(
      "details",
      { class: "replays", id: "replays", open: this.runs.length > 0 },
      h("summary", {}, "Replay runs ", this.count),
      this.list,
      this.more,
      this.startForm(),
      this.diffBox,
    );
    this.draw();
  }

  // The run that wrote this conversation (a fork or a new one): where its replayed replies' originals are.
  source() {
    const id = this.conversation.id;
    return this.runs.find((r) => r.target_conversation_id === id && r.conversation_id !== id)?.conversation_id ?? id;
  }

  startForm() {
    const select = h(
      "select",
      { name: "model", "aria-label": "model to replay on" },
      h("option", { value: "" }, "default model"),
      this.models.map((id) => h("option", { value: id }, id)),
    );
    return h(
      "form",
      {
        class: "row start-replay",
        id: "start-replay",
        onsubmit: async (e) => {
          e.preventDefault();
          const started = await this.attempt(
            () => api.startReplay(this.conversation.id, { target: this.split(select.value) }),
            "Replay run queued.",
          );
          if (started) await this.refresh();
        },
      },
      select,
      h("button", { type: "submit" }, "Replay the head path"),
    );
  }

  draw() {
    this.count.textContent = this.runs.length ? `(${this.runs.length}${this.nextCursor ? "+" : ""})` : "(none)";
    this.more.hidden = !this.nextCursor;
    this.list.replaceChildren(...this.runs.map((run) => this.row(run)));
    if (this.runs.some((r) => !ENDED.has(r.status))) this.poll();
  }

  relation(run) {
    const id = this.conversation.id;
    const link = (cid) => h("a", { href: `#/c/${cid}` }, this.title(cid) || short(cid));
    if (run.conversation_id === id && run.target_conversation_id === id) return "as branches of this conversation";
    if (run.conversation_id === id) return ["into ", link(run.target_conversation_id)];
    return ["wrote this conversation, replaying ", link(run.conversation_id)];
  }

  row(run) {
    return h(
      "li",
      { class: "run", dataset: { run: run.id, status: run.status } },
      h("span", { class: "badge run-status" }, run.status),
      h("span", { class: "run-model" }, ` ${run.provider}/${run.model} · `),
      `${count(run.turns_done)}/${count(run.turns_total)} turns · ${count(run.prompt_tokens)} → ${count(run.completion_tokens)} tokens · ${when(run.created_at)} · `,
      this.relation(run),
      run.error ? h("span", { class: "run-error" }, ` · ${run.error}${run.detail ? `: ${run.detail}` : ""}`) : null,
      " ",
      h("button", { type: "button", class: "link compare", onclick: () => this.showDiff(run) }, "compare ▸"),
    );
  }

  async loadMore() {
    const page = await this.attempt(() => api.replays(this.conversation.id, this.nextCursor));
    if (!page) return;
    this.runs.push(...page.items);
    this.nextCursor = page.next_cursor;
    this.draw();
  }

  async refresh() {
    const page = await this.attempt(() => api.replays(this.conversation.id));
    if (!page) return;
    this.runs = page.items; // the first page again: older runs loaded before are asked for again
    this.nextCursor = page.next_cursor;
    this.section.open = true;
    this.draw();
    if (this.shown) {
      const now = this.runs.find((r) => r.id === this.shown.id);
      if (now && (now.turns_done !== this.shown.turns_done || now.status !== this.shown.status)) await this.showDiff(now);
    }
  }

  poll() {
    if (this.polling) return;
    this.polling = setTimeout(async () => {
      this.polling = null;
      if (this.section.isConnected) await this.refresh();
    }, POLL_MS);
  }

  async showDiff(run) {
    const diff = await this.attempt(() => api.replayDiff(run.conversation_id, run.id));
    if (!diff) return;
    this.shown = diff.run;
    this.diffBox.replaceChildren(
      diffView(diff, () => {
        this.shown = null;
        this.diffBox.replaceChildren();
      }),
    );
  }
}

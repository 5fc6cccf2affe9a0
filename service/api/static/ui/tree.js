// A conversation drawn as a tree: the head path as the spine, every branch point collapsed until
// opened. Branches are loaded when opened (children of a message, one request a level), and a
// long path keeps its middle folded, so a tree of any size costs what is on screen.

import { api } from "./api.js";
import { count, forkIcon, h, seconds, short } from "./dom.js";
import { cardExtras, label } from "./message.js";

const HEAD_SHOWN = 3; // first messages of a long path (the system prompt and the opening)
export const TAIL_SHOWN = 100; // last messages of a long path, next to the head
const UNFOLD_STEP = 200; // messages a click on a folded stretch shows
const FOLLOW_STEPS = 12; // levels of an unbranched branch loaded per click

export class TreeView {
  // conversation: the summary; context: the head's context, whole or as its last TAIL_SHOWN
  // messages (root first, with sibling counts); the rest of the path is loaded when unfolded.
  // links: { forksOf(messageId) -> [summary], title(conversationId) -> string | undefined,
  //          original(messageId) -> href of the reply a replayed one replaces }
  constructor(conversation, context, { onSelect, links }) {
    this.conversation = conversation;
    this.leafId = context.leaf_id;
    this.depth = context.depth;
    this.path = context.messages;
    this.onSelect = onSelect;
    this.links = links;
    this.messages = new Map(this.path.map((m) => [m.id, m]));
    this.cards = new Map();
    this.opened = new Set(); // branch points the reader opened, kept across redraws
    this.selected = null;
    this.holder = h("div", { class: "spine-holder" });
  }

  render(openedBefore = new Set()) {
    this.holder.replaceChildren(this.spine());
    for (const parentId of openedBefore) {
      const point = this.holder.querySelector(`.fork-point[data-parent="${CSS.escape(parentId)}"]`);
      if (point) point.querySelector("button").click();
    }
    return this.holder;
  }

  // The head path: its first messages, a folded middle when it is long, and its last messages.
  spine() {
    const spine = h("ol", { class: "branch spine", "aria-label": "head path" });
    const n = this.path.length;
    const windowed = n < this.depth; // only the tail (and the system messages before it) is loaded
    const folded = windowed || n > HEAD_SHOWN + TAIL_SHOWN + 20;
    if (!folded) {
      for (let i = 0; i < n; i++) spine.append(...this.spineItems(i));
      return spine;
    }
    const tailFrom = n - TAIL_SHOWN;
    const headUntil = windowed ? tailFrom : HEAD_SHOWN;
    for (let i = 0; i < headUntil; i++) spine.append(...this.spineItems(i));
    let hiddenEnd = windowed ? this.depth - TAIL_SHOWN : tailFrom; // depth of the first shown tail message
    const fold = h("li", { class: "fold" });
    const button = h("button", { class: "link", type: "button" });
    const label = () => {
      const hidden = windowed ? hiddenEnd - headUntil : hiddenEnd - HEAD_SHOWN;
      const forks = windowed ? 0 : this.path.slice(HEAD_SHOWN, hiddenEnd).filter((m) => m.sibling_count > 1).length;
      button.textContent = `⋯ ${count(hidden)} earlier messages${forks ? `, ${count(forks)} branch points` : ""}`
        + ` — show ${count(Math.min(UNFOLD_STEP, hidden))} more`;
    };
    button.addEventListener("click", async () => {
      if (windowed) {
        // Load the whole path once, then draw it again folded, and unfold as asked.
        button.disabled = true;
        let whole;
        try {
          whole = await api.messageContext(this.conversation.id, this.leafId);
        } catch (error) {
          button.disabled = false;
          button.textContent = `could not load the path (${error.message}); try again`;
          return;
        }
        this.path = whole.messages;
        for (const m of this.path) this.messages.set(m.id, m);
        this.render(this.opened);
        this.holder.querySelector("li.fold button")?.click();
        return;
      }
      const from = Math.max(HEAD_SHOWN, hiddenEnd - UNFOLD_STEP);
      const items = [];
      for (let i = from; i < hiddenEnd; i++) items.push(...this.spineItems(i));
      fold.after(...items);
      hiddenEnd = from;
      if (hiddenEnd <= HEAD_SHOWN) fold.remove();
      else label();
    });
    label();
    fold.append(button);
    spine.append(fold);
    for (let i = tailFrom; i < n; i++) spine.append(...this.spineItems(i));
    return spine;
  }

  // One message of the head path, preceded by its parent's branch point when it has siblings.
  spineItems(i) {
    const message = this.path[i];
    const items = [];
    if (message.sibling_count > 1) items.push(this.forkPoint(message.parent_message_id, message));
    const isHead = message.id === this.conversation.head_id;
    items.push(h("li", { class: "node on-path" }, this.card(message, { isHead })));
    return items;
  }

  // A collapsed branch point: the parent has other children than the one shown; open to load them.
  forkPoint(parentId, shown) {
    const others = shown.sibling_count - 1;
    const item = h("li", { class: "fork-point", dataset: { parent: parentId } });
    const button = h(
      "button",
      { class: "fork-toggle", type: "button", "aria-expanded": "false" },
      forkIcon(),
      ` branch ${shown.sibling_position} of ${shown.sibling_count} · ${others} other ${others === 1 ? "branch" : "branches"}`,
    );
    let list = null;
    button.addEventListener("click", async () => {
      if (list) {
        list.remove();
        list = null;
        this.opened.delete(parentId);
        button.setAttribute("aria-expanded", "false");
        return;
      }
      this.opened.add(parentId);
      button.setAttribute("aria-expanded", "true");
      list = h("div", { class: "alternatives" }, h("span", { class: "loading" }, "loading…"));
      item.append(list);
      let children;
      try {
        ({ children } = await api.children(this.conversation.id, parentId));
      } catch (error) {
        list?.replaceChildren(h("span", { class: "failed" }, `could not load the branches: ${error.message}`));
        return;
      }
      const target = list;
      if (!target) return; // closed again while loading
      target.replaceChildren(
        ...children.filter((c) => c.id !== shown.id).map((c) => this.branch(c)),
      );
    });
    item.append(button);
    return item;
  }

  // A branch off the head path: its first message, then its continuation, loaded on demand.
  branch(first) {
    const list = h("ol", { class: "branch" });
    this.appendToBranch(list, first);
    return list;
  }

  appendToBranch(list, message) {
    this.messages.set(message.id, message);
    const item = h("li", { class: "node" }, this.card(message, {}));
    list.append(item);
    const more = h("button", { class: "link more", type: "button" }, "▸ replies");
    const control = h("li", { class: "continue" }, more);
    list.append(control);
    more.addEventListener("click", () => this.follow(list, control, message, FOLLOW_STEPS));
  }

  // Load the replies under `message`; an only child continues the branch, several make a branch point.
  async follow(list, control, message, steps) {
    control.replaceChildren(h("span", { class: "loading" }, "loading…"));
    let children;
    try {
      ({ children } = await api.children(this.conversation.id, message.id));
    } catch (error) {
      const retry = h("button", { class: "link more", type: "button" }, "▸ retry");
      retry.addEventListener("click", () => this.follow(list, control, message, steps));
      control.replaceChildren(h("span", { class: "failed" }, `could not load the replies: ${error.message} `), retry);
      return;
    }
    control.remove();
    if (children.length === 0) {
      list.append(h("li", { class: "tip" }, "branch tip"));
      return;
    }
    const next = children[children.length - 1]; // the newest reply continues the line
    if (children.length > 1) {
      const point = h("li", { class: "fork-point open" });
      point.append(
        h("span", { class: "fork-label" }, forkIcon(), ` ${children.length} replies here; the newest continues below`),
        h("div", { class: "alternatives" }, children.slice(0, -1).map((c) => this.branch(c))),
      );
      list.append(point);
    }
    this.appendToBranch(list, next);
    if (steps > 1) {
      const controlNow = list.lastElementChild;
      await this.follow(list, controlNow, next, steps - 1);
    }
  }

  card(message, { isHead }) {
    const viewed = this.conversation.id;
    const badges = [];
    if (isHead) badges.push(h("span", { class: "badge head" }, "head"));
    if (message.redacted) {
      const r = message.redacted;
      badges.push(
        h(
          "span",
          { class: `badge ${r.erased ? "erased" : "redacted"}`, title: `${r.reason} (by ${r.by})` },
          r.erased ? "erased" : "redacted",
        ),
      );
    }
    if (message.conversation_id !== viewed) {
      const title = this.links.title(message.conversation_id);
      badges.push(
        h(
          "a",
          { class: "badge inherited", href: `#/c/${message.conversation_id}/m/${message.id}`, title: "open where it was written" },
          `inherited from ${title || short(message.conversation_id)}`,
        ),
      );
    }
    const origin = this.conversation.forked_from;
    if (origin && origin.message_id === message.id) {
      badges.push(h("span", { class: "badge fork-origin" }, "fork point"));
    }
    for (const fork of this.links.forksOf(message.id)) {
      if (fork.id === viewed) continue;
      badges.push(
        h("a", { class: "badge forked", href: `#/c/${fork.id}` }, forkIcon(), ` forked into ${fork.title || short(fork.id)}`),
      );
    }
    const gen = message.generation;
    if (gen?.replay_of) {
      badges.push(
        h(
          "a",
          { class: "badge replay-of", href: this.links.original(gen.replay_of), title: `replays ${gen.replay_of}` },
          `replay of ${short(gen.replay_of)}`,
        ),
      );
    }
    const card = h(
      "div",
      {
        class: `card role-${message.role}${isHead ? " is-head" : ""}${message.redacted ? " is-redacted" : ""}`,
        tabindex: "0",
        dataset: { id: message.id },
        onclick: (e) => {
          if (e.target.closest("a")) return;
          this.select(message.id);
        },
        onkeydown: (e) => {
          if (e.key === "Enter") this.select(message.id);
        },
      },
      h(
        "div",
        { class: "card-head" },
        h("span", { class: "role" }, message.role),
        ...badges,
        h("span", { class: "where", title: message.id }, `depth ${message.depth} · ${short(message.id)}`),
      ),
      h("div", { class: "text" }, label(message, this.messages)),
      cardExtras(message, this.messages),
      gen ? h("div", { class: "generation" }, generationLine(gen)) : null,
    );
    this.cards.set(message.id, card);
    if (this.selected === message.id) card.classList.add("selected");
    return card;
  }

  select(id) {
    this.cards.get(this.selected)?.classList.remove("selected");
    this.selected = id;
    this.cards.get(id)?.classList.add("selected");
    this.onSelect(this.messages.get(id));
  }
}

export function generationLine(gen) {
  const parts = [`${gen.provider}/${gen.model}`];
  if (gen.prompt_tokens != null || gen.completion_tokens != null) {
    parts.push(`${gen.prompt_tokens ?? "?"} → ${gen.completion_tokens ?? "?"} tokens`);
  }
  parts.push(seconds(gen.latency_ms));
  if (gen.first_token_ms != null) parts.push(`first token ${seconds(gen.first_token_ms)}`);
  if (gen.finish_reason) parts.push(gen.finish_reason);
  return parts.join(" · ");
}

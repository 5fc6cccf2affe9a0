// What a message says, drawn: its text, content parts, tool calls, the call a tool result answers,
// reasoning and refusal. Every value is the API's data and hostile: it is set as text or as an
// attribute the page's policy keeps harmless (an image's src), never parsed as HTML.

import { h, short } from "./dom.js";

const LONG = 240; // characters of one string a JSON block shows (a base64 payload can be megabytes)

const isText = (part) => part && typeof part === "object" && part.type === "text" && typeof part.text === "string";
const calls = (message) => (Array.isArray(message.tool_calls) ? message.tool_calls : []);

// A tool call as { id, kind, name, args }, whatever its type (function, custom, or one not known).
export function callOf(call) {
  const id = typeof call?.id === "string" ? call.id : "";
  if (call?.type === "function" && call.function) {
    return { id, kind: "function", name: String(call.function.name ?? ""), args: String(call.function.arguments ?? "") };
  }
  if (call?.type === "custom" && call.custom) {
    return { id, kind: "custom", name: String(call.custom.name ?? ""), args: String(call.custom.input ?? "") };
  }
  return { id, kind: String(call?.type ?? "?"), name: "", args: JSON.stringify(call) };
}

// The call a tool message answers: the nearest message above it (`messages`: id -> message, as
// loaded) that asked for a call with its tool_call_id, looked for a bounded way up (a call group's
// results hang one under the other). Null when that message is not loaded.
export function answeredCall(message, messages) {
  if (message.role !== "tool" || typeof message.tool_call_id !== "string") return null;
  let at = messages.get(message.parent_message_id);
  for (let hops = 0; at && hops < 256; hops++) {
    const found = calls(at).map(callOf).find((c) => c.id === message.tool_call_id);
    if (found) return { ...found, messageId: at.id };
    at = messages.get(at.parent_message_id);
  }
  return null;
}

// The text a message shows in one line of the tree: its text (string content, or its text parts
// joined), else what it carries instead.
export function label(message, messages = new Map()) {
  const content = message.content;
  const text =
    typeof content === "string"
      ? content
      : Array.isArray(content)
        ? content.filter(isText).map((p) => p.text).join("\n")
        : "";
  if (text) return text;
  const asked = calls(message).map(callOf);
  if (asked.length) return `tool call: ${asked.map((c) => c.name || c.kind).join(", ")}`;
  if (typeof message.refusal === "string" && message.refusal) return `refused: ${message.refusal}`;
  if (message.role === "tool") {
    const call = answeredCall(message, messages);
    return call ? `tool result of ${call.name}` : "tool result";
  }
  if (Array.isArray(content) && content.length) {
    const kinds = [...new Set(content.map((p) => String(p?.type ?? "?")))];
    return `[${kinds.join(", ")}]`;
  }
  if (message.reasoning_content || message.reasoning) return "(reasoning only)";
  return "";
}

// Long strings cut, so a JSON block of a part with a payload stays readable.
function abridged(value) {
  if (typeof value === "string") return value.length > LONG ? `${value.slice(0, LONG)}… (${value.length} characters)` : value;
  if (Array.isArray(value)) return value.map(abridged);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, abridged(v)]));
  return value;
}

export function jsonBlock(title, value, extra = "") {
  return h(
    "div",
    { class: `json-block ${extra}`.trim() },
    h("span", { class: "block-label" }, title),
    h("pre", {}, JSON.stringify(abridged(value), null, 2)),
  );
}

// Arguments as written; pretty-printed when they are JSON, so nested objects read.
function argumentsText(args) {
  try {
    const parsed = JSON.parse(args);
    if (parsed && typeof parsed === "object") return JSON.stringify(parsed, null, 2);
  } catch {
    // not JSON: shown as the model wrote it
  }
  return args;
}

function image(part) {
  const spec = part.image_url;
  const url = typeof spec === "object" && spec && typeof spec.url === "string" ? spec.url : "";
  const detail = typeof spec?.detail === "string" ? ` · detail ${spec.detail}` : "";
  const figure = h("figure", { class: "image-part" });
  if (/^data:image\//i.test(url)) {
    figure.append(h("img", { src: url, alt: "image part", loading: "lazy" }), h("figcaption", {}, `image (data URL)${detail}`));
    return figure;
  }
  if (/^https?:/i.test(url)) {
    // Not fetched until asked: loading it tells its host that the conversation is being read.
    let host = "";
    try {
      host = new URL(url).host;
    } catch {
      return jsonBlock("image_url (not a URL)", part, "unknown-part");
    }
    const load = h("button", { type: "button", class: "quiet load-image" }, `Load the image from ${host}`);
    load.addEventListener("click", () => {
      load.replaceWith(h("img", { src: url, alt: `image from ${host}`, referrerpolicy: "no-referrer" }));
    });
    figure.append(load, h("figcaption", {}, h("span", { class: "url" }, url), detail));
    return figure;
  }
  return jsonBlock(`image_url (${url.split(",")[0].slice(0, 40) || "no URL"})`, part, "unknown-part");
}

function part(p) {
  if (!p || typeof p !== "object") return jsonBlock("part", p, "unknown-part");
  if (isText(p)) return h("pre", { class: "content part-text" }, p.text);
  if (p.type === "image_url") return image(p);
  if (p.type === "refusal" && typeof p.refusal === "string") return refusal(p.refusal);
  return jsonBlock(`${String(p.type ?? "part")} part`, p, "unknown-part");
}

function refusal(text) {
  return h("div", { class: "refusal" }, h("span", { class: "block-label" }, "Refused"), h("pre", {}, text));
}

// One tool call: "name(arguments)" with its id, and the message holding its result when loaded.
function callBlock(call, result, onSelect) {
  const c = callOf(call);
  return h(
    "div",
    { class: "tool-call", dataset: { callId: c.id } },
    h(
      "div",
      { class: "call-head" },
      h("span", { class: "block-label" }, c.kind === "function" ? "Tool call" : `Tool call (${c.kind})`),
      h("code", { class: "call-id", title: "call id" }, c.id),
      result
        ? h("button", { type: "button", class: "link answered-by", onclick: () => onSelect(result.id) }, `result ${short(result.id)} ↓`)
        : h("span", { class: "no-result" }, "no result loaded"),
    ),
    h("pre", { class: "call" }, h("span", { class: "call-name" }, c.name), "(", h("span", { class: "call-args" }, argumentsText(c.args)), ")"),
  );
}

// Everything `message` says, for the detail panel. `messages`: the loaded messages by id (to find
// the call a result answers and the results of calls); `onSelect(id)` selects another message.
export function body(message, messages, onSelect) {
  const out = [];
  if (typeof message.name === "string") out.push(h("p", { class: "name" }, "name: ", h("code", {}, message.name)));
  if (message.role === "tool") {
    const call = answeredCall(message, messages);
    out.push(
      h(
        "p",
        { class: "answers" },
        "Result of call ",
        h("code", { class: "call-id" }, String(message.tool_call_id ?? "")),
        call
          ? [" · ", h("button", { type: "button", class: "link answered-call", onclick: () => onSelect(call.messageId) }, `${call.name}(…)`)]
          : " · the call is not on the loaded path",
      ),
    );
  }
  const reasoningText = typeof message.reasoning_content === "string" ? message.reasoning_content : null;
  if (reasoningText || (message.reasoning && typeof message.reasoning === "object")) {
    const inside = [];
    if (reasoningText) inside.push(h("pre", { class: "reasoning-text" }, reasoningText));
    if (message.reasoning && typeof message.reasoning === "object") inside.push(jsonBlock("reasoning (as the provider gave it)", message.reasoning));
    out.push(
      h(
        "details",
        { class: "reasoning" },
        h("summary", {}, reasoningText ? `Reasoning · ${reasoningText.length} characters` : "Reasoning (opaque)"),
        ...inside,
      ),
    );
  }
  const content = message.content;
  if (typeof content === "string") out.push(h("pre", { class: "content" }, content));
  else if (Array.isArray(content)) out.push(h("div", { class: "parts" }, content.map(part)));
  if (typeof message.refusal === "string") out.push(refusal(message.refusal));
  const asked = calls(message);
  if (asked.length) {
    const ids = new Set(asked.map((call) => callOf(call).id));
    const results = new Map();
    for (const m of messages.values()) {
      // a result under this message (directly, or below the other results of its group)
      if (m.role === "tool" && ids.has(m.tool_call_id) && answeredCall(m, messages)?.messageId === message.id) {
        results.set(m.tool_call_id, m);
      }
    }
    out.push(h("div", { class: "tool-calls" }, asked.map((call) => callBlock(call, results.get(callOf(call).id), onSelect))));
  }
  if (!out.some((el) => !el.matches("p.name"))) out.push(h("p", { class: "ids" }, "(no content)"));
  return out;
}

// What a tree card shows beside its text: the calls asked, the call answered, the parts' kinds.
export function cardExtras(message, messages) {
  const extras = [];
  for (const c of calls(message).map(callOf)) {
    extras.push(h("code", { class: "chip call-chip", title: c.id }, `${c.name || c.kind}(${c.args})`));
  }
  if (message.role === "tool") {
    const call = answeredCall(message, messages);
    extras.push(
      h("span", { class: "chip answers-chip", title: String(message.tool_call_id ?? "") },
        `↳ ${call ? `${call.name} · ` : ""}${short(String(message.tool_call_id ?? ""))}`),
    );
  }
  if (Array.isArray(message.content)) {
    const images = message.content.filter((p) => p?.type === "image_url").length;
    const others = message.content.filter((p) => !isText(p) && p?.type !== "image_url").length;
    if (images) extras.push(h("span", { class: "chip" }, images === 1 ? "1 image" : `${images} images`));
    if (others) extras.push(h("span", { class: "chip" }, others === 1 ? "1 other part" : `${others} other parts`));
  }
  if (message.reasoning_content || message.reasoning) extras.push(h("span", { class: "chip" }, "reasoning"));
  if (typeof message.refusal === "string") extras.push(h("span", { class: "chip refusal-chip" }, "refusal"));
  return extras.length ? h("div", { class: "extras" }, extras) : null;
}

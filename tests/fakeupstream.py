"""A real local HTTP server speaking OpenAI-compatible and Ollama chat APIs, with injectable faults.

    with FakeUpstream() as fake:            # uvicorn on 127.0.0.1:<free port>, in a thread
        fake.openai_url                     # "http://127.0.0.1:PORT/v1"
        fake.ollama_url                     # "http://127.0.0.1:PORT"
        fake.fail_next(Fault.status(429, retry_after="1"), Fault.drop(after=2))
        fake.requests                       # every request: method, path, decoded JSON body
        fake.wait_for_disconnect(1.0)       # a streaming client went away (cancel reached us)

Replies are deterministic: "Hello from {model}. You said: {last user message}", streamed word by
word; prompt_tokens counts the words of all messages, completion_tokens the streamed pieces.
A request with `tools` whose last message is the user's is answered with tool calls instead, as
OpenAI answers (finish_reason "tool_calls"; streamed as `delta.tool_calls` fragments: id, type and
name first, the arguments in pieces of ARGUMENT_PIECE characters): one call per function tool, in
order (only the first with `parallel_tool_calls: false`), ids `call_fake_<i>`, arguments
`{"said": <the user's text>}`; Ollama's format gives the calls whole, without ids, arguments as an
object. A request whose last message is a tool result is answered "Tool said: {its content}". With
`reasoning_effort`, the reply opens with reasoning ("Thinking it over.", `reasoning_content`; Ollama:
`thinking`).
Scripted answers are faults too: `Fault.reply(...)` answers exactly those pieces of text (never
calls), `Fault.tool_calls((name, arguments), ...)` exactly those calls, `Fault.answer()` as usual.
Faults apply to the next requests in order, one each, whatever the endpoint; or, with
`fail_when(said, fault)`, to every request whose last message says `said`. Every stream, even
a never-ending one, stops by itself after `max_stream_seconds`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn

from tests.inthread import InThread

FaultKind = Literal["status", "delay", "drop", "endless", "garbage", "hold", "reply", "calls"]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    after: int = 2
    message: str = "injected failure"
    pieces: tuple[str, ...] = ()
    model: str | None = None
    calls: tuple[tuple[str, str], ...] = ()

    @classmethod
    def status_code(
        cls, status: int, *, retry_after: str | None = None, message: str = "injected failure"
    ) -> Fault:
        """Answer with `status` and an error body in the endpoint's own format."""
        return cls("status", status=status, retry_after=retry_after, message=message)

    @classmethod
    def slow_first_byte(cls, delay: float) -> Fault:
        """Wait `delay` seconds before the status line, then answer normally."""
        return cls("delay", delay=delay)

    @classmethod
    def drop(cls, *, after: int = 2) -> Fault:
        """Stream `after` pieces, then cut the connection (no final chunk, no [DONE])."""
        return cls("drop", after=after)

    @classmethod
    def endless(cls, every: float = 0.02) -> Fault:
        """Stream pieces every `every` seconds until the client leaves (or max_stream_seconds)."""
        return cls("endless", delay=every)

    @classmethod
    def hold(cls, *, after: int = 2) -> Fault:
        """Stream `after` pieces, then wait until `release()`d, then finish the reply normally."""
        return cls("hold", after=after)

    @classmethod
    def reply(cls, *pieces: str, model: str | None = None) -> Fault:
        """Stream exactly these pieces as the reply (each one chunk, however large), then end it;
        naming `model` as the model that answered, when given."""
        return cls("reply", pieces=pieces, model=model)

    @classmethod
    def tool_calls(cls, *calls: tuple[str, str]) -> Fault:
        """Answer with exactly these tool calls, (name, arguments text) each, whatever the request
        offers, in the endpoint's form; ids `call_script_<i>`."""
        return cls("calls", calls=calls)

    @classmethod
    def answer(cls) -> Fault:
        """Answer as the fake always does: a place in the queue of faults that changes nothing."""
        return cls("delay", delay=0.0)

    @classmethod
    def garbage(cls) -> Fault:
        """A 200 stream whose first event is not JSON."""
        return cls("garbage")


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    client: tuple[str, int] | None = None  # the client's address: the same one means the same connection


@dataclass
class Disconnect:
    path: str
    at: float  # time.monotonic() when the server saw the client go


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: collections.deque[Fault] = field(default_factory=collections.deque)
    scripted: dict[str, Fault] = field(default_factory=dict)  # by the last message's text
    requests: list[Recorded] = field(default_factory=list)
    disconnects: list[Disconnect] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


def reply_words(model: str, messages: list[dict[str, Any]]) -> list[str]:
    if messages and messages[-1].get("role") == "tool":
        return f"Tool said: {text_of(messages[-1])}".split()
    last_user = next((text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
    return f"Hello from {model}. You said: {last_user}".split()


ARGUMENT_PIECE = 5
REASONING = ("Thinking", " it", " over.")


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


def tool_calls(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of the calls a request is answered with; none unless it has tools and
    its last message is the user's."""
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    if not tools or not messages or messages[-1].get("role") != "user" or body.get("tool_choice") == "none":
        return []
    names = [t["function"]["name"] for t in tools if t.get("type") == "function"]
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    arguments = json.dumps({"said": text_of(messages[-1])})
    return [(f"call_fake_{i}", name, arguments) for i, name in enumerate(names)]


def pieces(words: list[str]) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


class FakeUpstream:
    """The server object: start/stop as a context manager from sync code (e.g. pytest fixtures)."""

    def __init__(
        self,
        *,
        max_stream_seconds: float = 60.0,
        models: tuple[str, ...] = ("fake-large", "fake-small"),
        floods: dict[str, int] | None = None,
    ) -> None:
        """`floods`: models whose reply is that many pieces (" tok") sent as fast as the server
        can, the fast mode benchmarks measure relaying with."""
        self.max_stream_seconds = max_stream_seconds
        self.models = models
        self.floods = dict(floods or {})
        self._state = _State()
        self._stopping = threading.Event()
        self._running: InThread | None = None
        self.port = 0

    # -- control, from the test thread ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def ollama_url(self) -> str:
        return self.base_url

    def fail_next(self, *faults: Fault) -> None:
        with self._state.lock:
            self._state.faults.extend(faults)

    def fail_when(self, said: str, fault: Fault) -> None:
        """Answer every request whose last message says `said` with `fault` (before the queue of
        fail_next's): a fault for one request however many others arrive meanwhile, retries included."""
        with self._state.lock:
            self._state.scripted[said] = fault

    def reset(self) -> None:
        with self._state.lock:
            self._state.faults.clear()
            self._state.scripted.clear()
            self._state.requests.clear()
            self._state.disconnects.clear()
            self._state.disconnected.clear()
            self._state.released.clear()

    @property
    def requests(self) -> list[Recorded]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def disconnects(self) -> list[Disconnect]:
        with self._state.lock:
            return list(self._state.disconnects)

    def release(self) -> None:
        """Let held replies (Fault.hold) go on to their end."""
        self._state.released.set()

    def wait_for_disconnect(self, timeout: float) -> Disconnect | None:
        if not self._state.disconnected.wait(timeout):
            return None
        return self.disconnects[0]

    def __enter__(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # As real model servers do (and accepted sockets inherit it): without it, Nagle holds each
        # streamed chunk until the client's delayed ACK, ~40 ms, on every reused connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            http="h11",
            loop="asyncio",
            interface="asgi3",
            lifespan="off",
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._running = InThread(uvicorn.Server(config), [sock])
        self._running.start("fake upstream", timeout=10)
        self._sock = sock
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        assert self._running is not None
        self._running.stop()
        self._sock.close()

    # -- the ASGI app, on the server thread ----------------------------------------------------
    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path, method = scope["path"], scope["method"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        with self._state.lock:
            client = tuple(scope["client"]) if scope.get("client") else None
            self._state.requests.append(Recorded(method, path, body, headers, client))  # type: ignore[arg-type]
            messages = body.get("messages") if isinstance(body, dict) else None
            last = messages[-1] if isinstance(messages, list) and messages else None
            fault = self._state.scripted.get(text_of(last)) if isinstance(last, dict) else None
            if fault is None:
                fault = self._state.faults.popleft() if self._state.faults else None

        is_ollama = path.startswith("/api/")
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay)
            fault = None
        if fault is not None and fault.kind == "status":
            error = (
                {"error": fault.message}
                if is_ollama
                else {"error": {"message": fault.message, "type": "fake", "code": None}}
            )
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
            await _send_json(send, fault.status, error, extra)
            return

        if (method, path) == ("GET", "/v1/models"):
            data = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models
            ]
            await _send_json(send, 200, {"object": "list", "data": data})
        elif (method, path) == ("GET", "/api/tags"):
            tags = [
                {"name": m, "model": m, "size": 1, "digest": "0" * 64, "details": {}} for m in self.models
            ]
            await _send_json(send, 200, {"models": tags})
        elif (method, path) == ("POST", "/v1/chat/completions") and isinstance(body, dict):
            await self._chat(send, receive, path, body, fault, ollama=False)
        elif (method, path) == ("POST", "/api/chat") and isinstance(body, dict):
            await self._chat(send, receive, path, body, fault, ollama=True)
        else:
            await _send_json(send, 404, {"error": {"message": f"no route {method} {path}"}})

    async def _chat(
        self, send: Any, receive: Any, path: str, body: dict[str, Any], fault: Fault | None, *, ollama: bool
    ) -> None:
        model = body.get("model", "")
        messages = body.get("messages", [])
        if not model:
            await _send_json(
                send,
                400,
                {"error": "model is required"}
                if ollama
                else {"error": {"message": "you must provide a model parameter"}},
            )
            return
        words = [" tok"] * self.floods[model] if model in self.floods else pieces(reply_words(model, messages))
        if fault is not None and fault.kind == "reply":
            words = list(fault.pieces)
        named = fault.model if fault is not None and fault.model is not None else model
        fmt = _OllamaFormat(named) if ollama else _OpenAIFormat(named)
        calls = tool_calls(body)
        if fault is not None and fault.kind == "reply":
            calls = []  # exactly these pieces, whatever the request offers
        if fault is not None and fault.kind == "calls":
            calls = [(f"call_script_{i}", name, arguments) for i, (name, arguments) in enumerate(fault.calls)]
        reasoning = REASONING if body.get("reasoning_effort") or body.get("think") else ()
        if not body.get("stream", ollama):  # Ollama streams unless told not to; OpenAI the reverse
            if calls:
                await _send_json(send, 200, fmt.whole_calls(calls, prompt_tokens(messages)))
            else:
                whole = fmt.whole("".join(words), prompt_tokens(messages), len(words))
                if reasoning:
                    whole[fmt.reasoning_key] = "".join(reasoning)  # type: ignore[index]
                await _send_json(send, 200, whole)
            return

        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", fmt.content_type)]}
        )
        gone, finished = asyncio.Event(), asyncio.Event()
        watcher = asyncio.create_task(self._watch_disconnect(receive, path, gone, finished))
        try:
            if fault is not None and fault.kind == "garbage":
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: {not json\n\n" if not ollama else b"{not json\n",
                        "more_body": True,
                    }
                )
            if fault is not None and fault.kind == "endless":
                words = (" tick" for _ in iter(int, 1))  # type: ignore[assignment]
            for thought in reasoning:
                await send({"type": "http.response.body", "body": fmt.reasoning(thought), "more_body": True})
            if calls:
                finished.set()
                await send(
                    {
                        "type": "http.response.body",
                        "body": fmt.calls(calls) + fmt.end(prompt_tokens(messages), len(calls), "tool_calls"),
                        "more_body": False,
                    }
                )
                return
            start = time.monotonic()
            sent = 0
            for piece in words:
                if (
                    gone.is_set()
                    or self._stopping.is_set()
                    or time.monotonic() - start > self.max_stream_seconds
                ):
                    return
                if fault is not None and fault.kind == "drop" and sent == fault.after:
                    # An exception after the response started makes uvicorn cut the connection.
                    raise ConnectionAbortedError("injected mid-stream drop")
                if fault is not None and fault.kind == "hold" and sent == fault.after:
                    while not self._state.released.is_set():
                        if gone.is_set() or self._stopping.is_set():
                            return
                        await asyncio.sleep(0.01)
                await send({"type": "http.response.body", "body": fmt.delta(piece), "more_body": True})
                sent += 1
                await asyncio.sleep(fault.delay if fault is not None and fault.kind == "endless" else 0)
            finished.set()  # uvicorn reports a completed response as "disconnect" too
            await send(
                {
                    "type": "http.response.body",
                    "body": fmt.end(prompt_tokens(messages), sent),
                    "more_body": False,
                }
            )
        finally:
            watcher.cancel()

    async def _watch_disconnect(
        self, receive: Any, path: str, gone: asyncio.Event, finished: asyncio.Event
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if finished.is_set():
                    return
                gone.set()
                with self._state.lock:
                    self._state.disconnects.append(Disconnect(path, time.monotonic()))
                self._state.disconnected.set()
                return


async def _send_json(
    send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class _OpenAIFormat:
    """Chunks shaped exactly like OpenAI's `chat.completion.chunk` SSE events."""

    content_type = b"text/event-stream; charset=utf-8"

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-fake0001"
        self.first = True

    def _chunk(self, choices: list[Any], usage: Any = None) -> bytes:
        obj = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def delta(self, piece: str) -> bytes:
        return self._opening() + self._chunk(
            [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]
        )

    def _opening(self) -> bytes:
        if not self.first:
            return b""
        self.first = False  # OpenAI opens with a role-only delta whose content is ""
        delta = {"role": "assistant", "content": "", "refusal": None}
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    reasoning_key = "reasoning_content"

    def reasoning(self, piece: str) -> bytes:
        delta = {"reasoning_content": piece}
        return self._opening() + self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def calls(self, calls: list[tuple[str, str, str]]) -> bytes:
        """The calls as OpenAI streams them: per call, its id, type and name with empty arguments,
        then the arguments in pieces."""
        out = self._opening()
        for index, (id, name, arguments) in enumerate(calls):
            first = {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}
            fragments = [first] + [
                {"index": index, "function": {"arguments": arguments[i : i + ARGUMENT_PIECE]}}
                for i in range(0, len(arguments), ARGUMENT_PIECE)
            ]
            for fragment in fragments:
                delta = {"tool_calls": [fragment]}
                out += self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        return out

    def end(self, prompt: int, completion: int, finish_reason: str = "stop") -> bytes:
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return (
            self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}])
            + self._chunk([], usage)
            + b"data: [DONE]\n\n"
        )

    def whole_calls(self, calls: list[tuple[str, str, str]], prompt: int) -> dict[str, Any]:
        whole = self.whole("", prompt, len(calls))
        whole["choices"][0]["message"] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}
                for id, name, arguments in calls
            ],
        }
        whole["choices"][0]["finish_reason"] = "tool_calls"
        return whole

    def whole(self, text: str, prompt: int, completion: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": 1700000000,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


class _OllamaFormat:
    """Lines shaped like Ollama's `/api/chat` NDJSON stream."""

    content_type = b"application/x-ndjson"
    created_at = "2024-01-01T00:00:00.000000000Z"

    def __init__(self, model: str) -> None:
        self.model = model

    def delta(self, piece: str) -> bytes:
        obj = {
            "model": self.model,
            "created_at": self.created_at,
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        return json.dumps(obj).encode() + b"\n"

    def _final(self, content: str, prompt: int, completion: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "created_at": self.created_at,
            "message": {"role": "assistant", "content": content},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 100,
            "eval_count": completion,
            "eval_duration": 800,
        }

    reasoning_key = "thinking"

    def reasoning(self, piece: str) -> bytes:
        obj = {
            "model": self.model,
            "created_at": self.created_at,
            "message": {"role": "assistant", "content": "", "thinking": piece},
            "done": False,
        }
        return json.dumps(obj).encode() + b"\n"

    def _calls(self, calls: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        # Ollama's calls: no id, arguments an object.
        return [{"function": {"name": name, "arguments": json.loads(arguments)}} for _, name, arguments in calls]

    def calls(self, calls: list[tuple[str, str, str]]) -> bytes:
        obj = {
            "model": self.model,
            "created_at": self.created_at,
            "message": {"role": "assistant", "content": "", "tool_calls": self._calls(calls)},
            "done": False,
        }
        return json.dumps(obj).encode() + b"\n"

    def end(self, prompt: int, completion: int, finish_reason: str = "stop") -> bytes:
        # Ollama ends a reply that asks for tools with done_reason "stop" too.
        return json.dumps(self._final("", prompt, completion)).encode() + b"\n"

    def whole_calls(self, calls: list[tuple[str, str, str]], prompt: int) -> dict[str, Any]:
        final = self._final("", prompt, len(calls))
        final["message"]["tool_calls"] = self._calls(calls)
        return final

    def whole(self, text: str, prompt: int, completion: int) -> dict[str, Any]:
        return self._final(text, prompt, completion)

"""Every string field of every writing endpoint, fed arbitrary Unicode: each value is read back
exactly or refused with 422, and afterwards rebuild, replay, audit and export→import of every
conversation succeed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.cli import main
from service.domain.text import storable
from tests.servers import Server

SPECIALS = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\x7f", "\x80", "\x85", "\x9f", "\uffff", "\ufffe",
            "\U0001f600", "\U0010ffff", "\\", '"', "\u2028", "\n"]
TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(SPECIALS), st.characters(exclude_categories=())),
    max_size=12,
)


@pytest.fixture(scope="module")
def own_server(databases):
    """A database of its own: the checks at the end cover all of it."""
    with Server(databases.migrated()) as srv:
        yield srv


def _send(api: httpx.Client, method: str, path: str, body: Any, ascii_only: bool) -> httpx.Response:
    # A lone surrogate exists only as an escape in JSON text; other characters go either way.
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    return api.request(method, path, content=raw, headers={"Content-Type": "application/json"})


class Target:
    """One string field of one endpoint: how to send a value in it, and how to read it back."""

    def __init__(
        self,
        name: str,
        send: Callable[[httpx.Client, str, bool], httpx.Response],
        read: Callable[[httpx.Response, httpx.Client], Any] | None,
        accepts: Callable[[str], bool | None] = lambda value: True,  # None: may be refused (422) too
    ) -> None:
        self.name, self.send, self.read, self.accepts = name, send, read, accepts


def _conversation(api: httpx.Client) -> str:
    return api.post("/v1/conversations", json={}).json()["id"]


def _message(api: httpx.Client, cid: str) -> str:
    return api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "base"}).json()["id"]


def _get(api: httpx.Client, path: str) -> Any:
    r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def _ended(api: httpx.Client, started: Any) -> Any:
    """`started` (a replay run, or the response that started one) once the run has ended: the checks
    at the end read every conversation, which must not change meanwhile."""
    run = started.json() if isinstance(started, httpx.Response) else started
    if isinstance(started, httpx.Response) and started.status_code != 201:
        return started
    while _get(api, f"/v1/conversations/{run['conversation_id']}/replays/{run['id']}")["status"] in ("queued", "running"):
        time.sleep(0.02)
    return started


def _targets() -> list[Target]:
    def create(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        return lambda api, v, a: _send(api, "POST", "/v1/conversations", body(v), a)

    def conv(r: httpx.Response, api: httpx.Client) -> Any:
        return _get(api, f"/v1/conversations/{r.json()['id']}")

    def append(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        return lambda api, v, a: _send(api, "POST", f"/v1/conversations/{_conversation(api)}/messages", body(v), a)

    def message(r: httpx.Response, api: httpx.Client) -> Any:
        m = r.json()
        return _get(api, f"/v1/conversations/{m['conversation_id']}/messages/{m['id']}")

    def fork(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        def send(api: httpx.Client, v: str, a: bool) -> httpx.Response:
            cid = _conversation(api)
            return _send(api, "POST", f"/v1/conversations/{cid}/messages/{_message(api, cid)}/fork", body(v), a)

        return send

    def redact(api: httpx.Client, v: str, a: bool) -> httpx.Response:
        cid = _conversation(api)
        return _send(api, "POST", f"/v1/conversations/{cid}/messages/{_message(api, cid)}/redact", {"reason": v}, a)

    def turn(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        return lambda api, v, a: _send(api, "POST", f"/v1/conversations/{_conversation(api)}/turns", body(v), a)

    def regenerate(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        def send(api: httpx.Client, v: str, a: bool) -> httpx.Response:
            cid = _conversation(api)
            reply = api.post(f"/v1/conversations/{cid}/turns", json={"content": "q", "provider": "echo"}).json()
            path = f"/v1/conversations/{cid}/messages/{reply['assistant_message_id']}/regenerate"
            return _send(api, "POST", path, body(v), a)

        return send

    def user_message(r: httpx.Response, api: httpx.Client) -> Any:
        t = r.json()
        return _get(api, f"/v1/conversations/{t['conversation_id']}/messages/{t['user_message_id']}")

    def reply(r: httpx.Response, api: httpx.Client) -> Any:
        t = r.json()
        return _get(api, f"/v1/conversations/{t['conversation_id']}/messages/{t['assistant_message_id']}")

    def chat(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        return lambda api, v, a: _send(api, "POST", "/v1/chat/completions", body(v), a)

    def chat_context(r: httpx.Response, api: httpx.Client) -> Any:
        return _get(api, f"/v1/conversations/{r.json()['conversation_id']}/context")["messages"]

    def replay(body: Callable[[str], dict[str, Any]]) -> Callable[[httpx.Client, str, bool], httpx.Response]:
        def send(api: httpx.Client, v: str, a: bool) -> httpx.Response:
            cid = _conversation(api)
            _message(api, cid)
            return _ended(api, _send(api, "POST", f"/v1/conversations/{cid}/replays", body(v), a))

        return send

    def replayed(r: httpx.Response, api: httpx.Client) -> Any:
        return _get(api, f"/v1/conversations/{r.json()['target_conversation_id']}")

    def batch(api: httpx.Client, v: str, a: bool) -> httpx.Response:
        if storable(v):
            cid = api.post("/v1/conversations", json={"metadata": {"suite": v}}).json()["id"]
            _message(api, cid)
        r = _send(api, "POST", "/v1/replays", {"metadata": {"suite": v}}, a)
        for item in r.json()["items"] if r.status_code == 201 else []:
            _ended(api, item["run"])
        return r

    def batched(r: httpx.Response, api: httpx.Client) -> Any:
        suites = {_get(api, f"/v1/conversations/{i['conversation_id']}")["metadata"]["suite"] for i in r.json()["items"]}
        [suite] = suites
        return suite

    nonempty = lambda v: len(v) >= 1  # noqa: E731
    maybe = lambda v: None if v else False  # a model the provider may not offer  # noqa: E731
    return [
        Target("create.title", create(lambda v: {"title": v}), lambda r, api: conv(r, api)["title"]),
        Target("create.system", create(lambda v: {"system": v}),
               lambda r, api: _get(api, f"/v1/conversations/{r.json()['id']}/context")["messages"][0]["content"],
               nonempty),
        Target("create.metadata value", create(lambda v: {"metadata": {"a": [{"b": v}]}}),
               lambda r, api: conv(r, api)["metadata"]["a"][0]["b"]),
        Target("create.metadata key", create(lambda v: {"metadata": {"a": {v: 1}}}),
               lambda r, api: list(conv(r, api)["metadata"]["a"])[0]),
        Target("append.content", append(lambda v: {"role": "user", "content": v}),
               lambda r, api: message(r, api)["content"], nonempty),
        Target("append.metadata value", append(lambda v: {"role": "user", "content": "x", "metadata": {"m": v}}),
               lambda r, api: message(r, api)["metadata"]["m"]),
        Target("append.metadata key", append(lambda v: {"role": "user", "content": "x", "metadata": {v: [v]}}),
               lambda r, api: list(message(r, api)["metadata"])[0]),
        Target("fork.title", fork(lambda v: {"title": v}), lambda r, api: conv(r, api)["title"]),
        Target("fork.metadata value", fork(lambda v: {"metadata": {"f": {"g": v}}}),
               lambda r, api: conv(r, api)["metadata"]["f"]["g"]),
        Target("redact.reason", redact, lambda r, api: message(r, api)["redacted"]["reason"], nonempty),
        Target("turn.content", turn(lambda v: {"content": v, "provider": "echo"}),
               lambda r, api: user_message(r, api)["content"], nonempty),
        Target("turn.metadata", turn(lambda v: {"content": "x", "provider": "echo", "metadata": {"t": v}}),
               lambda r, api: user_message(r, api)["metadata"]["t"]),
        Target("turn.provider", turn(lambda v: {"content": "x", "provider": v}),
               lambda r, api: reply(r, api)["generation"]["provider"], lambda v: v == "echo"),
        Target("turn.model", turn(lambda v: {"content": "x", "provider": "echo", "model": v}),
               lambda r, api: reply(r, api)["generation"]["requested_model"], maybe),
        Target("turn.params.stop", turn(lambda v: {"content": "x", "provider": "echo", "params": {"stop": [v]}}),
               lambda r, api: reply(r, api)["generation"]["params"]["stop"][0], nonempty),
        Target("regenerate.model", regenerate(lambda v: {"provider": "echo", "model": v}),
               lambda r, api: r.json()["generation"]["requested_model"], maybe),
        Target("chat.content", chat(lambda v: {"model": "echo", "messages": [{"role": "user", "content": v}]}),
               lambda r, api: chat_context(r, api)[-2]["content"], nonempty),
        Target("chat.system", chat(lambda v: {"model": "echo", "messages": [
            {"role": "system", "content": v}, {"role": "user", "content": "hi"}]}),
               lambda r, api: chat_context(r, api)[0]["content"], nonempty),
        Target("chat.user", chat(lambda v: {"model": "echo", "messages": [{"role": "user", "content": "hi"}],
                                            "user": v}),
               None),  # accepted and not stored: nothing to read back
        Target("replay.title", replay(lambda v: {"title": v}), lambda r, api: replayed(r, api)["title"]),
        Target("replay.metadata value", replay(lambda v: {"metadata": {"r": v}}),
               lambda r, api: replayed(r, api)["metadata"]["r"]),
        Target("replay.target.system", replay(lambda v: {"target": {"system": v}}),
               lambda r, api: _get(api, f"/v1/conversations/{r.json()['target_conversation_id']}/context")
               ["messages"][0]["content"], nonempty),
        Target("replay.target.model", replay(lambda v: {"target": {"provider": "echo", "model": v}}),
               lambda r, api: r.json()["model"], maybe),
        Target("replays.metadata filter", batch, batched),
    ]


TARGETS = _targets()


def _without_seq(export: bytes) -> list[dict[str, Any]]:
    """An export's lines without `seq`, the one field that says where they were stored."""
    return [{k: v for k, v in json.loads(line).items() if k != "seq"} for line in export.splitlines()]


@pytest.mark.slow
def test_every_string_field_reads_back_exactly_or_is_a_422(own_server):
    _, key = own_server.new_key()
    seen: dict[str, int] = {}
    with own_server.client(key) as api:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(target=st.sampled_from(TARGETS), value=TEXT, ascii_only=st.booleans())
        def explore(target: Target, value: str, ascii_only: bool) -> None:
            ascii_only = ascii_only or not storable(value)  # a lone surrogate can only be sent escaped
            r = target.send(api, value, ascii_only)
            seen[target.name] = seen.get(target.name, 0) + 1
            if not storable(value):
                assert r.status_code == 422, (target.name, value, r.status_code, r.text)
                return
            accepted = target.accepts(value)
            if accepted is False or (accepted is None and r.status_code == 422):
                assert r.status_code == 422, (target.name, value, r.status_code, r.text)
                return
            assert r.status_code in (200, 201), (target.name, value, r.status_code, r.text)
            if target.read is not None:
                assert target.read(r, api) == value, (target.name, value)

        # Every field once for certain (the refusals of each are proved one by one in test_hostile_text.py).
        for target in TARGETS:
            explore.hypothesis.inner_test(target, "a\x7f\x85\uffff\U0001f600", False)
            explore.hypothesis.inner_test(target, "\ud83d\x00", True)
        explore()
        # Every field was tried; and every conversation the examples wrote holds up.
        assert set(seen) == {t.name for t in TARGETS}
        conversations = []
        cursor = None
        while True:
            page = _get(api, "/v1/conversations?limit=200" + (f"&cursor={cursor}" if cursor else ""))
            conversations += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert conversations
        _, elsewhere_key = own_server.new_key()
        with own_server.client(elsewhere_key) as elsewhere:
            # Sources before forks: a fork imports once its source is there.
            for c in sorted(conversations, key=lambda c: c["forked_from"] is not None):
                cid = c["id"]
                assert _get(api, f"/v1/conversations/{cid}/audit")["valid"] is True
                for read in ("", "/tree", "/context"):
                    now = _get(api, f"/v1/conversations/{cid}{read}")
                    assert _get(api, f"/v1/conversations/{cid}{read}?as_of={now.get('last_seq', c['last_seq'])}") == now
                export = api.get(f"/v1/conversations/{cid}/export")
                assert export.status_code == 200
                imported = elsewhere.post("/v1/conversations/import", content=export.content)
                assert imported.status_code == 201, imported.text
                again = elsewhere.get(f"/v1/conversations/{cid}/export")
                assert _without_seq(again.content) == _without_seq(export.content)
    rebuilt = CliRunner().invoke(main, ["rebuild"], env={"DATABASE_URL": own_server.database_url})
    assert rebuilt.exit_code == 0, rebuilt.output

"""The request log of `convtree serve`, read from its standard output (a pipe, so JSON lines):
one line per request with its fields and request id, failures once with their traceback."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.api.logs import request_logger
from tests.postgres import fetch
from tests.servers import ServeProcess


@pytest.fixture(scope="module")
def served(databases: Any) -> Iterator[tuple[ServeProcess, str, str]]:
    with ServeProcess(databases.migrated()) as srv:
        tenant, key = srv.new_key(name="log")
        srv.drain()
        yield srv, tenant, key


def test_a_request_writes_one_json_line_with_its_route_status_tenant_conversation_and_request_id(served):
    srv, tenant, key = served
    auth = {"Authorization": f"Bearer {key}"}
    created = httpx.post(f"{srv.url}/v1/conversations", json={"title": "logged"}, headers=auth)
    conversation = created.json()["id"]
    rid = f"given-{uuid.uuid4().hex}"
    reply = httpx.post(
        f"{srv.url}/v1/conversations/{conversation}/messages",
        json={"role": "user", "content": "hello"},
        headers={**auth, "X-Request-Id": rid},
    )
    assert reply.status_code == 201
    assert reply.headers["x-request-id"] == rid
    [line] = srv.records(rid)
    assert line["event"] == "request"
    assert line["level"] == "info"
    assert line["method"] == "POST"
    assert line["route"] == "/v1/conversations/{conversation_id}/messages"
    assert line["status"] == 201
    assert line["tenant"] == tenant
    assert line["conversation_id"] == conversation
    assert line["duration_ms"] > 0
    assert "timestamp" in line


def test_a_request_without_an_id_gets_one_in_its_response_its_problem_and_its_line(served):
    srv, _, key = served
    missing = uuid.uuid4()
    reply = httpx.get(f"{srv.url}/v1/conversations/{missing}", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 404
    rid = reply.headers["x-request-id"]
    assert reply.json()["request_id"] == rid
    [line] = srv.records(rid)
    assert line["status"] == 404
    assert line["level"] == "info"  # a client's mistake is no error of the server's
    assert "exception" not in line


def test_an_unsane_request_id_is_replaced_by_a_new_one(served):
    srv, _, _ = served
    reply = httpx.get(f"{srv.url}/healthz", headers={"X-Request-Id": "no spaces allowed"})
    rid = reply.headers["x-request-id"]
    assert rid != "no spaces allowed" and len(rid) == 32
    assert srv.records(rid)[0]["route"] == "/healthz"


def test_a_path_no_route_takes_still_has_a_request_id_and_a_line(served):
    srv, _, _ = served
    reply = httpx.get(f"{srv.url}/no/such/route", headers={"X-Request-Id": "unrouted-1"})
    assert reply.status_code == 404
    assert reply.headers["x-request-id"] == "unrouted-1"
    assert reply.json()["request_id"] == "unrouted-1"
    [line] = srv.records("unrouted-1")
    assert (line["status"], line["route"]) == (404, "/no/such/route")


def test_a_server_failure_is_logged_once_as_an_error_with_its_traceback(served):
    srv, _, key = served
    database_url = srv.database_url
    fetch(database_url, "ALTER TABLE conversations RENAME TO conversations_away")
    try:
        reply = httpx.get(
            f"{srv.url}/v1/conversations", headers={"Authorization": f"Bearer {key}", "X-Request-Id": "broken-1"}
        )
    finally:
        fetch(database_url, "ALTER TABLE conversations_away RENAME TO conversations")
    assert reply.status_code == 500
    assert reply.json()["request_id"] == "broken-1"
    records = srv.records("broken-1")
    assert len(records) == 1
    [line] = records
    assert line["level"] == "error"
    assert line["status"] == 500
    assert "Traceback" in line["exception"] and "UndefinedTableError" in line["exception"]


def test_on_a_terminal_the_line_is_readable_not_json():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    request_logger("info", "auto", out).info("request", method="GET", route="/healthz", status=200)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # without its colours
    assert " request " in text and "route=/healthz" in text and "status=200" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_below_the_level_no_request_line_is_written():
    out = io.StringIO()
    request_logger("warning", "console", out).info("request", status=200)
    assert out.getvalue() == ""

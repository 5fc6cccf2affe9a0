"""HTTP hygiene against the real server: CORS for the origins allowed (none by default), gzip
for large answers but not for event streams, and ETags with 304 on reads that do not move."""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from service.api.hygiene import LARGE_BODY
from service.config import Settings
from tests.helpers import create, say
from tests.servers import Server

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def open_to_app(databases) -> Iterator[Server]:
    with Server(databases.migrated(), cors_origins=(ORIGIN,)) as srv:
        yield srv


def preflight(base_url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{base_url}/v1/conversations",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_a_preflight_from_an_allowed_origin_is_answered(open_to_app):
    reply = preflight(open_to_app.base_url, ORIGIN)
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "idempotency-key" in reply.headers["access-control-allow-headers"].lower()
    assert reply.headers["x-request-id"]


def test_a_cross_origin_request_sees_the_headers_it_needs(open_to_app):
    _, key = open_to_app.new_key()
    reply = httpx.post(
        f"{open_to_app.base_url}/v1/conversations",
        json={},
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {key}"},
    )
    assert reply.status_code == 201
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    exposed = reply.headers["access-control-expose-headers"].lower()
    assert "location" in exposed and "x-request-id" in exposed and "etag" in exposed


def test_other_origins_are_refused(open_to_app):
    reply = preflight(open_to_app.base_url, "https://elsewhere.example")
    assert reply.status_code == 400
    assert "access-control-allow-origin" not in reply.headers


def test_allowed_origins_are_a_comma_separated_setting():
    settings = Settings.from_env({"CONVTREE_CORS_ORIGINS": "https://app.example, http://localhost:5173"})
    assert settings.cors_origins == ("https://app.example", "http://localhost:5173")
    assert Settings.from_env({}).cors_origins == ()


def test_by_default_no_origin_is_allowed(server):
    reply = preflight(server.base_url, ORIGIN)
    assert "access-control-allow-origin" not in reply.headers


def _long_conversation(api: httpx.Client, messages: int = 40) -> str:
    cid = api.post("/v1/conversations", json={}).json()["id"]
    for n in range(messages):
        api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": f"message {n} " * 10})
    return cid


def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it(server, api):
    cid = _long_conversation(api)
    url = f"{server.base_url}/v1/conversations/{cid}/context"
    auth = {"Authorization": api.headers["Authorization"]}
    with httpx.stream("GET", url, headers={**auth, "Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in raw.headers["vary"].lower()
        wire = b"".join(raw.iter_raw())
    assert int(raw.headers["content-length"]) == len(wire)
    plain = httpx.get(url, headers={**auth, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert gzip.decompress(wire) == plain.content
    assert len(wire) < len(plain.content) / 3


def test_a_streamed_export_is_gzipped_and_whole(server, api):
    cid = _long_conversation(api, 10)
    url = f"{server.base_url}/v1/conversations/{cid}/export"
    auth = {"Authorization": api.headers["Authorization"]}
    with httpx.stream("GET", url, headers={**auth, "Accept-Encoding": "gzip"}) as reply:
        assert reply.headers["content-encoding"] == "gzip"
        wire = b"".join(reply.iter_raw())
    plain = httpx.get(url, headers={**auth, "Accept-Encoding": "identity"})
    assert gzip.decompress(wire) == plain.content


def test_a_small_answer_is_not_gzipped(server, api):
    reply = api.post("/v1/conversations", json={}, headers={"Accept-Encoding": "gzip"})
    assert reply.status_code == 201
    assert "content-encoding" not in reply.headers


def test_an_event_stream_is_not_gzipped_and_each_event_arrives_as_it_happens(server, api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip", "Authorization": api.headers["Authorization"]}
    with httpx.stream("GET", f"{server.base_url}/v1/events", headers=headers, timeout=10) as stream:
        assert "content-encoding" not in stream.headers
        lines = stream.iter_lines()
        api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "live"})
        deadline = time.monotonic() + 5
        seen = ""
        while "message_appended" not in seen and time.monotonic() < deadline:
            seen += next(lines)
        assert "message_appended" in seen


def test_a_message_has_an_etag_and_an_unchanged_one_is_a_304(api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    mid = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "hi"}).json()["id"]
    url = f"/v1/conversations/{cid}/messages/{mid}"
    first = api.get(url)
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    again = api.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    assert api.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200


def test_a_redaction_changes_the_messages_etag(api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    mid = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "secret"}).json()["id"]
    url = f"/v1/conversations/{cid}/messages/{mid}"
    tag = api.get(url).headers["etag"]
    assert api.post(f"{url}/redact", json={"reason": "test"}).status_code in (200, 201)
    after = api.get(url, headers={"If-None-Match": tag})
    assert after.status_code == 200
    assert after.headers["etag"] != tag


def test_a_tree_in_the_past_has_an_etag_and_the_present_has_none(api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "one"})
    seq = api.get(f"/v1/conversations/{cid}").json()["last_seq"]
    api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "two"})
    for path in ("tree", "context"):
        past = api.get(f"/v1/conversations/{cid}/{path}", params={"as_of": seq})
        assert past.status_code == 200
        tag = past.headers["etag"]
        assert api.get(f"/v1/conversations/{cid}/{path}", params={"as_of": seq}, headers={"If-None-Match": tag}).status_code == 304
        assert "etag" not in api.get(f"/v1/conversations/{cid}/{path}").headers


def test_a_304_still_carries_the_request_id(api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    mid = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "hi"}).json()["id"]
    url = f"/v1/conversations/{cid}/messages/{mid}"
    tag = api.get(url).headers["etag"]
    rid = f"r-{uuid.uuid4().hex}"
    reply = api.get(url, headers={"If-None-Match": tag, "X-Request-Id": rid})
    assert (reply.status_code, reply.headers["x-request-id"]) == (304, rid)


def test_a_body_past_the_large_size_is_gzipped_whole_at_the_fast_level(server, api):
    cid = create(api)["id"]
    for i in range(3):  # ~300 KB of text that compresses, past hygiene.LARGE_BODY
        say(api, cid, f"message {i}: " + "a long answer with the same words again " * 2_500)
    url = f"{server.base_url}/v1/conversations/{cid}/context"
    auth = {"Authorization": api.headers["Authorization"]}
    with httpx.stream("GET", url, headers={**auth, "Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        wire = b"".join(raw.iter_raw())
    plain = httpx.get(url, headers={**auth, "Accept-Encoding": "identity"})
    assert len(plain.content) >= LARGE_BODY
    assert gzip.decompress(wire) == plain.content
    assert wire[8] == 4  # the gzip header's XFL byte: 4 is zlib's fastest level, 2 its slowest (6 writes 0)

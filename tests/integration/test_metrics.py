"""/metrics, scraped from the real server after real requests: requests by route and status,
appends, replays, the pool, turns in flight, the model providers, feed followers, database
errors; and the settings that put it behind a token or on a port of its own."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakeupstream import Fault
from tests.postgres import fetch
from tests.servers import Server
from tests.turnkit import sse, wait_for


APPEND = "/v1/conversations/{conversation_id}/messages"


def scrape(server: Server, **kwargs: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    reply = httpx.get(f"{server.base_url}/metrics", **kwargs)  # type: ignore[arg-type]
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_and_status_with_their_latency(server, api):
    before = scrape(server)
    cid = api.post("/v1/conversations", json={}).json()["id"]
    for n in range(3):
        assert api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": f"m{n}"}).status_code == 201
    assert api.get(f"/v1/conversations/{uuid.uuid4()}").status_code == 404
    after = scrape(server)
    count = "convtree_http_request_duration_seconds_count"
    labels = {"method": "POST", "route": APPEND, "status": "201"}
    assert value(after, count, **labels) - value(before, count, **labels) == 3
    missing = {"method": "GET", "route": "/v1/conversations/{conversation_id}", "status": "404"}
    assert value(after, count, **missing) - value(before, count, **missing) == 1
    inf = "convtree_http_request_duration_seconds_bucket"
    assert value(after, inf, **labels, le="+Inf") == value(after, count, **labels)
    assert value(after, "convtree_http_request_duration_seconds_sum", **labels) > 0
    assert value(after, "convtree_appends_total") - value(before, "convtree_appends_total") == 3


def test_an_idempotent_replay_is_counted(server, api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    before = scrape(server)
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"role": "user", "content": "once"}
    assert api.post(f"/v1/conversations/{cid}/messages", json=body, headers=headers).status_code == 201
    again = api.post(f"/v1/conversations/{cid}/messages", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    after = scrape(server)
    name = "convtree_idempotent_replays_total"
    assert value(after, name, route=APPEND) - value(before, name, route=APPEND) == 1
    assert value(after, "convtree_appends_total") - value(before, "convtree_appends_total") == 1


def test_the_pool_is_described(server, api):
    api.get("/v1/conversations")
    samples = scrape(server)
    assert value(samples, "convtree_db_pool_max_size") == server.settings.pool_max_size
    assert value(samples, "convtree_db_pool_size") >= 1
    assert 0 <= value(samples, "convtree_db_pool_in_use") <= value(samples, "convtree_db_pool_size")
    assert ("convtree_db_pool_waiting", ()) in samples


def test_a_feed_follower_is_counted_while_it_follows(server, api):
    headers = {"Accept": "text/event-stream", "Authorization": api.headers["Authorization"]}
    base = value(scrape(server), "convtree_feed_followers")
    with httpx.stream("GET", f"{server.base_url}/v1/events", headers=headers, timeout=10) as stream:
        assert stream.status_code == 200
        assert wait_for(lambda: value(scrape(server), "convtree_feed_followers") == base + 1)
    assert wait_for(lambda: value(scrape(server), "convtree_feed_followers") == base)


def test_model_calls_are_timed_and_failures_counted_by_provider(model_server, model_api, upstream):
    cid = model_api.post("/v1/conversations", json={}).json()["id"]
    before = scrape(model_server)
    assert model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"}).status_code == 201
    upstream.fail_next(Fault.status_code(400, message="no such model"))
    failed = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "again"})
    assert failed.status_code == 502
    after = scrape(model_server)
    calls = "convtree_upstream_request_duration_seconds_count"
    assert value(after, calls, provider="fake") - value(before, calls, provider="fake") == 2
    first = "convtree_upstream_first_token_seconds_count"
    assert value(after, first, provider="fake") - value(before, first, provider="fake") == 1
    errors = "convtree_upstream_errors_total"
    labels = {"provider": "fake", "error": "UpstreamRejected"}
    assert value(after, errors, **labels) - value(before, errors, **labels) == 1


def test_a_turn_is_in_flight_while_its_reply_is_generated(model_server, model_api, upstream):
    cid = model_api.post("/v1/conversations", json={}).json()["id"]
    upstream.fail_next(Fault.endless())
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go", "stream": True}) as r:
        events = sse(r)
        next(events)
        next(events)
        assert value(scrape(model_server), "convtree_turns_in_flight") >= 1
    assert wait_for(lambda: value(scrape(model_server), "convtree_turns_in_flight") == 0)


@pytest.fixture(scope="module")
def guarded(databases) -> Iterator[Server]:
    with Server(databases.migrated(), metrics_token="scrape-secret") as srv:
        yield srv


def test_with_a_token_metrics_need_it(guarded):
    refused = httpx.get(f"{guarded.base_url}/metrics")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{guarded.base_url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    samples = scrape(guarded, headers={"Authorization": "Bearer scrape-secret"})
    assert ("convtree_db_pool_size", ()) in samples


def test_a_database_error_is_counted(guarded):
    _, key = guarded.new_key()
    before = scrape(guarded, headers={"Authorization": "Bearer scrape-secret"})
    fetch(guarded.database_url, "ALTER TABLE conversations RENAME TO conversations_away")
    try:
        with guarded.client(key) as api:
            assert api.get("/v1/conversations").status_code == 500
    finally:
        fetch(guarded.database_url, "ALTER TABLE conversations_away RENAME TO conversations")
    after = scrape(guarded, headers={"Authorization": "Bearer scrape-secret"})
    name = "convtree_database_errors_total"
    labels = {"error": "UndefinedTableError"}
    assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_metrics_can_listen_on_a_port_of_their_own(databases):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = Server(databases.migrated(), metrics_port=port)
    srv.start()
    try:
        assert httpx.get(f"{srv.base_url}/metrics").status_code == 404
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert reply.status_code == 200
        assert "convtree_db_pool_size" in reply.text
    finally:
        srv.stop()
    with pytest.raises(httpx.TransportError):  # and stops with the server
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_can_be_turned_off(databases):
    srv = Server(databases.migrated(), metrics=False)
    srv.start()
    try:
        assert httpx.get(f"{srv.base_url}/metrics").status_code == 404
        assert httpx.get(f"{srv.base_url}/healthz").status_code == 200
    finally:
        srv.stop()

"""Liveness and readiness over HTTP."""

import uuid

from service.api.app import create_app
from service.config import Settings
from service.store.migrate import head_revision
from tests.servers import Server


def test_healthz_needs_no_key(server):
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_the_schema_version(server):
    with server.client() as client:
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ok", "schema_version": head_revision()}


def test_readyz_is_503_until_the_database_is_migrated(databases):
    srv = Server(databases.empty())
    srv.start()
    try:
        with srv.client() as client:
            r = client.get("/readyz")
            assert r.status_code == 503
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "schema" in r.json()["detail"]
    finally:
        srv.stop()


def test_every_response_carries_a_request_id(server, api):
    given = "req-" + uuid.uuid4().hex
    r = api.get("/v1/conversations", headers={"X-Request-Id": given})
    assert r.headers["x-request-id"] == given
    generated = api.get("/v1/conversations", headers={"X-Request-Id": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces" and len(generated.headers["x-request-id"]) == 32
    missing = api.get(f"/v1/conversations/{uuid.uuid4()}")
    assert missing.json()["request_id"] == missing.headers["x-request-id"]


def test_the_app_builds_without_a_database():
    assert create_app("postgresql://unused", Settings()).openapi_schema.paths

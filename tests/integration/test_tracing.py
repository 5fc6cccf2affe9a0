"""OpenTelemetry: off, and not even imported, unless its environment asks for traces; then a
span per request with the queries it ran inside."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from service.api import tracing
from tests.servers import ServeProcess, issue_key

WITHOUT_OTEL = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_without_the_environment_no_tracer_is_set_up_nor_asyncpg_instrumented():
    # (litestar imports OpenTelemetry's API when it is installed, whatever the environment says)
    probe = (
        "import sys\n"
        "from service.api.app import create_app\n"
        "from service.config import Settings\n"
        "create_app('postgresql://unused', Settings())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter',\n"
        "                                                       'opentelemetry.instrumentation.asyncpg'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=WITHOUT_OTEL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_which_environment_asks_for_traces():
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"})


def test_with_the_environment_a_request_and_its_queries_are_spans(databases: Any):
    url = databases.migrated()
    key = issue_key(url, "traced", "trace")
    srv = ServeProcess(url, OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100", OTEL_SERVICE_NAME="convtree-test")
    try:
        srv.start()
        reply = httpx.post(f"{srv.url}/v1/conversations", json={}, headers={"Authorization": f"Bearer {key}"})
        assert reply.status_code == 201
        out = ""
        deadline = time.monotonic() + 30
        wanted = ('"name": "POST /v1/conversations"', '"db.system": "postgresql"')
        # The request's span ends (and is exported) after its children: wait for every one.
        while time.monotonic() < deadline and not all(w in out for w in wanted):
            out += "".join(srv.drain())
            time.sleep(0.1)
        assert '"service.name": "convtree-test"' in out
        assert '"name": "POST /v1/conversations"' in out  # the request's span, named by its route
        assert '"db.system": "postgresql"' in out  # and a query's
        assert uuid.UUID(reply.json()["id"])
    finally:
        srv.stop()

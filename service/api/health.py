"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency

from service.api import schemas
from service.api.problems import Problem, problem_type, responses
from service.app.services import Health

READY_TIMEOUT_SECONDS = 0.8  # a probe is answered within a second, whatever the database does
_checks: set[asyncio.Future[str | None]] = set()  # checks still running (a task needs a reference)


@get(
    "/healthz",
    summary="Liveness: the process is serving",
    tags=["health"],
    security=[{}],
    responses=responses(database=False),
)
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@get(
    "/readyz",
    summary="Readiness: the database is reachable and migrated",
    tags=["health"],
    security=[{}],
    responses=responses(503, database=False),
)
async def readyz(health_service: NamedDependency[Health]) -> Response[Any]:
    expected = health_service.expected
    # The check runs on its own and is waited for a bounded time, so that the probe answers in
    # time however the pool is doing (a check given up on ends in the background).
    check = asyncio.ensure_future(health_service.schema_version())
    _checks.add(check)
    check.add_done_callback(_checked)
    done, _ = await asyncio.wait({check}, timeout=READY_TIMEOUT_SECONDS)
    if not done:
        check.cancel()
        return _unready(f"the database did not answer within {READY_TIMEOUT_SECONDS:g} s")
    try:
        version = check.result()
    except Exception as exc:  # any failure to reach the database means "not ready", with the reason
        return _unready(f"database unreachable: {type(exc).__name__}")
    if version != expected:
        return _unready(f"database schema is at {version}, this service needs {expected}")
    return Response(schemas.Health(status="ok", schema_version=version))


def _checked(check: asyncio.Future[str | None]) -> None:
    _checks.discard(check)
    if not check.cancelled():
        check.exception()  # retrieved: a check given up on fails unseen


def _unready(detail: str) -> Response[Any]:
    problem = Problem(
        type=problem_type("unavailable"), title="Service unavailable", status=503, detail=detail
    )
    return Response(problem, status_code=503, media_type="application/problem+json", headers={"Retry-After": "1"})

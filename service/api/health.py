"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from service.api import schemas
from service.api.problems import Problem, problem_type, responses


@get("/healthz", summary="Liveness: the process is serving", tags=["health"], security=[{}], responses=responses())
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@get(
    "/readyz",
    summary="Readiness: the database is reachable and migrated",
    tags=["health"],
    security=[{}],
    responses=responses(503),
)
async def readyz(state: State) -> Response[Any]:
    expected: str = state.schema_head
    try:
        async with state.store.reader() as tx:
            version = await tx.schema_version()
    except Exception as exc:  # any failure to reach the database means "not ready", with the reason
        return _unready(f"database unreachable: {type(exc).__name__}")
    if version != expected:
        return _unready(f"database schema is at {version}, this service needs {expected}")
    return Response(schemas.Health(status="ok", schema_version=version))


def _unready(detail: str) -> Response[Any]:
    problem = Problem(
        type=problem_type("unavailable"), title="Service unavailable", status=503, detail=detail
    )
    return Response(problem, status_code=503, media_type="application/problem+json")

"""Small HTTP helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/conversations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def say(api: httpx.Client, cid: str, content: str, role: str = "user", **body: Any) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/messages", json={"role": role, "content": content, **body})
    assert r.status_code == 201, r.text
    return r.json()


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"urn:convtree:problem:{slug}", body
    assert body["status"] == status
    return body

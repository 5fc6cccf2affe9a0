"""Retry and error-mapping rules of the shared HTTP plumbing, with httpx.MockTransport."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.domain.errors import UpstreamTimeout, UpstreamUnavailable
from service.upstream import HttpSettings, RetryPolicy
from service.upstream.httpclient import error_message, get_json, make_client, parse_retry_after

FAST = RetryPolicy(attempts=3, timeout=5.0, wait_initial=0.01, wait_max=0.02, wait_jitter=0.0)


def fetch(handler, policy: RetryPolicy = FAST) -> bytes:  # type: ignore[no-untyped-def]
    async def go() -> bytes:
        client = make_client("http://up.test", HttpSettings(), transport=httpx.MockTransport(handler))
        try:
            return await get_json(client, "models", provider="p", policy=policy)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_client_has_explicit_timeouts_and_limits() -> None:
    client = make_client("http://up.test/v1", HttpSettings(connect=1, read=2, write=3, pool=4))
    assert client.timeout == httpx.Timeout(connect=1, read=2, write=3, pool=4)
    assert str(client.base_url) == "http://up.test/v1/"
    assert client.follow_redirects is False


def test_connect_errors_are_retried_then_succeed() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=b"{}")

    assert fetch(handler) == b"{}"
    assert len(calls) == 3


def test_connect_errors_stop_at_the_attempt_bound() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable) as caught:
        fetch(handler, RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0.0))
    assert len(calls) == 2
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_retries_stop_at_the_total_time_bound() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, headers={"retry-after": "0.1"})

    with pytest.raises(UpstreamUnavailable):
        fetch(handler, RetryPolicy(attempts=50, timeout=0.25, wait_jitter=0.0))
    assert 2 <= len(calls) <= 5


def test_read_timeout_is_mapped_and_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(UpstreamTimeout) as caught:
        fetch(handler)
    assert len(calls) == 1
    assert caught.value.context == {"provider": "p"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=lambda: now) == 30.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error":{"message":"bad key sk-1","type":"x"}}', "bad key ***"),
        (b'{"error":"model not found"}', "model not found"),
        (b'{"message":"nope"}', "nope"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
    ],
)
def test_error_message_reads_common_shapes_and_scrubs_the_key(body: bytes, expected: str) -> None:
    assert error_message(body, secret="sk-1") == expected

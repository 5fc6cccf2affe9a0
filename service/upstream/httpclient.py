"""The HTTP plumbing every provider shares: one client, retries before the first byte, error mapping.

Retry library: stamina (on top of tenacity). Since 25.2 its `on=` hook may return a float that
replaces the backoff for that one retry, which is exactly what `Retry-After` needs; tenacity
alone would need a custom `wait` callable digging the exception out of the retry state. stamina
also brings capped exponential backoff with jitter, bounds by attempts *and* total time, and
works under asyncio and trio. We retry only around sending the request and reading the status
line: once a 2xx response is handed to the caller, nothing is ever retried (the model has
started generating, a retry would pay for and possibly differ from the text already shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import httpx
import msgspec
import stamina

from service.domain.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from service.upstream.base import HttpSettings, RetryPolicy

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Error bodies are read only to quote upstream's message; a cap keeps a hostile server from
# making us buffer megabytes of HTML.
MAX_ERROR_BODY = 16 * 1024
# The longest line of a streamed body that is read (and the largest whole body, such as a model
# list): room for a chunk of a whole reply's worth of text (service.app.turn.relay caps replies
# at 1,000,000 characters) in any JSON escaping but the most wasteful, and no more, whatever the
# server sends.
MAX_LINE_BYTES = 8 * 1024 * 1024


class _RetryableStatus(Exception):
    """Internal signal for stamina: a status worth another try (never escapes this module)."""

    def __init__(self, status: int, retry_after: float | None, message: str) -> None:
        self.status = status
        self.retry_after = retry_after
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


def make_client(
    base_url: str,
    settings: HttpSettings,
    *,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """One long-lived client per provider, so connections are pooled and limits are shared."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers=dict(headers or {}),
        timeout=httpx.Timeout(
            connect=settings.connect, read=settings.read, write=settings.write, pool=settings.pool
        ),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
        ),
        transport=transport,
        # Upstream redirects usually mean a wrong base URL; following them could leak the key.
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, when.timestamp() - now())


class _ErrorDetail(msgspec.Struct):
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    # OpenAI: {"error": {"message": ...}}; Ollama: {"error": "..."}; others: {"message": ...}.
    error: _ErrorDetail | str | None = None
    message: str | None = None
    detail: str | None = None


_error_decoder = msgspec.json.Decoder(_ErrorBody)


def error_message(body: bytes, secret: str | None = None) -> str:
    """Upstream's own error text, shortened, with our key scrubbed in case upstream echoes it."""
    text: str | None = None
    try:
        parsed = _error_decoder.decode(body)
    except msgspec.DecodeError:
        parsed = None
    if parsed is not None:
        if isinstance(parsed.error, _ErrorDetail):
            text = parsed.error.message
        elif isinstance(parsed.error, str):
            text = parsed.error
        text = text or parsed.message or parsed.detail
    if not text:
        text = body.decode("utf-8", "replace").strip()
    return scrub(text[:500], secret)


def scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BODY:
            break
    return b"".join(chunks)[:MAX_ERROR_BODY]


def _should_retry(policy: RetryPolicy) -> Callable[[Exception], bool | float]:
    def hook(exc: Exception) -> bool | float:
        if isinstance(exc, _RetryableStatus):
            if exc.retry_after is None:
                return True
            if exc.retry_after > policy.retry_after_max:
                return False  # waiting less than asked would only burn an attempt
            return exc.retry_after
        # Connect failures happen before the request reached the model: always safe to repeat.
        return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))

    return hook


async def _send_once(
    client: httpx.AsyncClient, request: httpx.Request, provider: str, secret: str | None
) -> httpx.Response:
    response = await client.send(request, stream=True)
    if response.is_success:
        return response
    try:
        body = await _read_capped(response)
    finally:
        await response.aclose()
    status = response.status_code
    message = error_message(body, secret)
    if status in RETRYABLE_STATUSES:
        raise _RetryableStatus(status, parse_retry_after(response.headers.get("retry-after")), message)
    if 400 <= status < 500:
        raise UpstreamRejected(
            f"{provider} rejected the request (HTTP {status}): {message}", provider=provider, status=status
        )
    raise UpstreamUnavailable(
        f"{provider} failed (HTTP {status}): {message}", provider=provider, status=status
    )


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    provider: str,
    policy: RetryPolicy,
    secret: str | None = None,
) -> httpx.Response:
    """Send with retries until a 2xx status line arrives; return it unread (the caller closes it).

    Every failure leaves as an `UpstreamError` carrying `provider=`.
    """
    try:
        async for attempt in stamina.retry_context(
            on=_should_retry(policy),
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                response = await _send_once(client, request, provider, secret)
        return response
    except _RetryableStatus as exc:
        if exc.status == 429:
            raise UpstreamRateLimited(
                f"{provider} is rate limiting requests: {exc.message}",
                provider=provider,
                status=exc.status,
                retry_after=exc.retry_after,
            ) from exc
        raise UpstreamUnavailable(
            f"{provider} is unavailable (HTTP {exc.status}): {exc.message}",
            provider=provider,
            status=exc.status,
        ) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"{provider} did not answer in time ({type(exc).__name__})", provider=provider
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(
            f"{provider} could not be reached ({type(exc).__name__})", provider=provider
        ) from exc


async def get_json(
    client: httpx.AsyncClient,
    path: str,
    *,
    provider: str,
    policy: RetryPolicy,
    secret: str | None = None,
) -> bytes:
    """GET a small JSON document (model lists) with the same retry and error rules."""
    response = await send(
        client, client.build_request("GET", path), provider=provider, policy=policy, secret=secret
    )
    try:
        with stream_errors(provider):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_LINE_BYTES:
                    raise UpstreamTooLarge(
                        f"{provider} sent a response larger than {MAX_LINE_BYTES} bytes", provider=provider
                    )
            return bytes(body)
    finally:
        await response.aclose()


async def lines(response: httpx.Response, provider: str) -> AsyncIterator[bytes]:
    """The lines of a streamed body, without their line ends (LF or CRLF). A line longer than
    MAX_LINE_BYTES is not buffered whole: reading stops with UpstreamTooLarge as it passes the cap."""
    partial = bytearray()
    async for chunk in response.aiter_bytes():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if partial:
                partial += chunk[start:end]
                line = bytes(partial)
                partial.clear()
            else:
                line = chunk[start:end]
            yield line[:-1] if line.endswith(b"\r") else line
            start = end + 1
        partial += chunk[start:]
        if len(partial) > MAX_LINE_BYTES:
            raise UpstreamTooLarge(f"{provider} sent a line longer than {MAX_LINE_BYTES} bytes", provider=provider)
    if partial:
        yield bytes(partial)


@contextlib.contextmanager
def stream_errors(provider: str) -> Iterator[None]:
    """Map failures while reading a response body; by then nothing may be retried."""
    try:
        yield
    except UpstreamError:
        raise
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"{provider} stalled mid-reply ({type(exc).__name__})", provider=provider
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamProtocolError(
            f"{provider} dropped the connection mid-reply ({type(exc).__name__})", provider=provider
        ) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise UpstreamProtocolError(f"{provider} sent a malformed reply: {exc}", provider=provider) from exc


# After a reply's last event, how long and how much of the rest of the body is read (normally only
# the end of the chunked body) so that the connection goes back to the pool instead of being closed.
DRAIN_SECONDS = 0.5
DRAIN_LINES = 100


async def drain(lines: AsyncIterator[bytes]) -> None:
    """Read the rest of a response whose reply is complete, so its connection can be reused (a
    response closed unread closes its connection: every reply would pay a new TCP and TLS handshake).
    Best effort: a body that does not end soon is left to `aclose()`, which closes the connection."""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            count = 0
            async for _ in lines:
                count += 1
                if count >= DRAIN_LINES:
                    return


class Deadline:
    """The `stream_max` bound of one stream, checked per chunk (a stall is the read timeout's job)."""

    def __init__(self, provider: str, seconds: float) -> None:
        self._provider = provider
        self._seconds = seconds
        self._end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise UpstreamTimeout(
                f"{self._provider} kept streaming past {self._seconds:g}s", provider=self._provider
            )


class Reply:
    """The lines of a streamed reply as they arrive, each checked against the stream's deadline."""

    def __init__(self, response: httpx.Response, provider: str, deadline: Deadline) -> None:
        self._lines = lines(response, provider)
        self._deadline = deadline
        self.content_type = response.headers.get("content-type", "")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._checked()

    async def _checked(self) -> AsyncIterator[bytes]:
        async for line in self._lines:
            self._deadline.check()
            yield line

    async def finish(self) -> None:
        """The reply is complete: read the rest of the body so the connection can be reused."""
        await drain(self._lines)


class HttpProvider:
    """What every HTTP provider shares: its name and address, one pooled client, the retry policy,
    and the key it must never echo. Subclasses speak their protocol in `stream` and `list_models`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        http: HttpSettings = HttpSettings(),
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._http = http
        self._retry = retry
        self._secret = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = make_client(base_url, http, headers=headers, transport=transport)

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def streaming(self, path: str, body: bytes, headers: Mapping[str, str]) -> AsyncIterator[Reply]:
        """POST `body` to `path` (sent and retried as `send` does) and read its reply line by line,
        failures mapped as `stream_errors` maps them. The response is closed on leaving, whatever
        the way out (the end, an error, the consumer's aclose(), cancellation): closing an
        unfinished response closes its connection, which is what makes upstream stop generating."""
        request = self._client.build_request("POST", path, content=body, headers=headers)
        response = await send(self._client, request, provider=self.name, policy=self._retry, secret=self._secret)
        try:
            with stream_errors(self.name):
                yield Reply(response, self.name, Deadline(self.name, self._http.stream_max))
        finally:
            await response.aclose()

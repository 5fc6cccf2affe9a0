"""A real headless Chromium for the page tests: Debian's `chromium`, driven by Playwright, with every
request that would leave this machine refused and recorded. Nothing is downloaded at test time."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("CONVTREE_CHROMIUM", "/usr/bin/chromium")
ARGS = [  # with headless=True, which adds --headless
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def artifacts() -> Path:
    """Where screenshots go: $CONVTREE_TEST_ARTIFACTS, else a directory under the system's temp."""
    path = Path(os.environ.get("CONVTREE_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "convtree-test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Traffic:
    """What the page asked for: requests refused for leaving the machine, and local answers >= 400."""

    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@contextmanager
def offline_browser() -> Iterator[tuple[object, Traffic]]:
    """A fresh Chromium profile whose pages can reach only this machine."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: `apt-get install chromium` "
            "(./dev test does this when run as root)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="convtree-chromium-")
    traffic = Traffic()
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                viewport={"width": 1400, "height": 900},
                accept_downloads=True,
            )

            def only_local(route, request) -> None:  # type: ignore[no-untyped-def]
                url = urlsplit(request.url)
                if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
                    traffic.refused.append(request.url)
                    route.abort("internetdisconnected")
                else:
                    route.continue_()

            def record(response) -> None:  # type: ignore[no-untyped-def]
                if response.status >= 400:
                    traffic.failed.append(f"{response.status} {response.url}")

            context.route("**/*", only_local)
            context.on("response", record)
            context.set_default_timeout(20_000)
            try:
                yield context, traffic
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page, name: str, *, full_page: bool = True) -> Path:  # type: ignore[no-untyped-def]
    path = artifacts() / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def wait_until(page, expression: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until `expression` is truthy in the page. Playwright's wait_for_function evaluates its
    predicate with eval(), which the viewer's Content-Security-Policy refuses; page.evaluate goes
    through the DevTools protocol, which the policy does not govern."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {expression}")
        time.sleep(0.01)

"""/docs works without internet: its page and assets come from convtree itself, and a real
browser with no way off this machine renders every operation."""

from __future__ import annotations

import re

from tests.browser import offline_browser, screenshot


def test_the_docs_page_loads_nothing_from_another_host(server):
    with server.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert urls, page.text[:500]
        assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url


def test_the_docs_render_every_operation_in_a_browser_without_network(server):
    with server.client() as client:
        schema = client.get("/docs/openapi.json").json()
    operations = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    ]
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.base_url}/docs")
        page.wait_for_selector(".opblock")
        shown = page.eval_on_selector_all(
            ".opblock",
            """blocks => blocks.map(b => [
                b.querySelector('.opblock-summary-method').textContent.trim(),
                b.querySelector('.opblock-summary-path').getAttribute('data-path'),
            ])""",
        )
        assert sorted(map(tuple, shown)) == sorted(operations)
        assert page.get_by_text("Append a message").first.is_visible()
        page.locator(".opblock-summary", has_text="/v1/conversations/{conversation_id}/messages").first.click()
        page.wait_for_selector(".opblock.is-open .responses-table")
        screenshot(page, "docs.png", full_page=False)
        assert traffic.refused == []
        assert traffic.failed == []
        assert errors == []

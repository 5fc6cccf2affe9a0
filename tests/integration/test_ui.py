"""The tree viewer at /ui, in a real headless Chromium that can reach only this machine: a
branched, forked and redacted conversation built over the API is drawn as a tree, and what the
reader does on the page (switch branch, fork, regenerate, append, audit, export) reaches the API."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser import offline_browser, screenshot
from tests.helpers import create, say


def card(page, message_id):  # type: ignore[no-untyped-def]
    return page.locator(f'.card[data-id="{message_id}"]')


def spine_texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all(".spine > li.node .card .text", "els => els.map(e => e.textContent)")


@pytest.fixture
def trip(api):
    """A conversation with two answers to its question (the head on the second), a follow-up,
    a redacted and an erased message, and a fork of it taken at the question."""
    c = create(api, title="Trip planning", system="You are a concise travel agent.", metadata={"team": "travel"})
    cid = c["id"]
    u1 = say(api, cid, "Where should I go in May?")
    a1 = say(api, cid, "Lisbon: warm, not yet crowded.", role="assistant")
    a2 = say(api, cid, "Kyoto, after the cherry blossoms.", role="assistant", parent_message_id=u1["id"])
    u2 = say(api, cid, "My phone number is 555-0100, call me.")
    u3 = say(api, cid, "And my card number is 4111 1111.", parent_message_id=a2["id"])
    r = api.post(f"/v1/conversations/{cid}/messages/{u2['id']}/redact", json={"reason": "phone number"})
    assert r.status_code == 201, r.text
    r = api.post(f"/v1/conversations/{cid}/messages/{u3['id']}/redact", json={"reason": "card", "erase": True})
    assert r.status_code == 201, r.text
    u4 = say(api, cid, "Is Kyoto expensive?", parent_message_id=a2["id"])
    r = api.post(f"/v1/conversations/{cid}/messages/{u1['id']}/fork", json={"title": "Trip planning, take two"})
    assert r.status_code == 201, r.text
    return {"cid": cid, "u1": u1, "a1": a1, "a2": a2, "u2": u2, "u3": u3, "u4": u4, "fork": r.json()}


def sign_in(page, server, key):  # type: ignore[no-untyped-def]
    page.goto(f"{server.base_url}/ui/")
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#conversations a")


def test_the_tree_is_drawn_and_acted_on_in_a_browser(server, api, trip):
    key = api.headers["Authorization"].removeprefix("Bearer ")
    cid = trip["cid"]
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, server, key)
        assert page.evaluate("sessionStorage.getItem('convtree.key')") == key
        titles = page.eval_on_selector_all("#conversations a .title", "els => els.map(e => e.textContent)")
        assert titles == ["Trip planning, take two", "Trip planning"]

        # The list filters the loaded page by title or metadata.
        page.fill("#filter", "travel")
        assert page.eval_on_selector_all("#conversations a", "els => els.length") == 1
        page.fill("#filter", "")

        # The head path is the spine; the other answer waits behind a collapsed branch point.
        page.click(f'#conversations a[data-id="{cid}"]')
        page.wait_for_selector(".spine .card")
        assert spine_texts(page) == [
            "You are a concise travel agent.",
            "Where should I go in May?",
            "Kyoto, after the cherry blossoms.",
            "Is Kyoto expensive?",
        ]
        assert card(page, trip["u4"]["id"]).locator(".badge.head").count() == 1
        assert card(page, trip["a1"]["id"]).count() == 0
        forks = page.locator(".spine > li.fork-point")
        assert forks.first.inner_text().strip() == "branch 2 of 2 · 1 other branch"
        # The fork taken at the question is linked from it.
        assert card(page, trip["u1"]["id"]).locator("a.badge.forked").inner_text().strip() == (
            "forked into Trip planning, take two"
        )

        assert forks.nth(1).inner_text().strip() == "branch 3 of 3 · 2 other branches"

        # Opening the branch points loads the other branches: the first answer, and the two redacted follow-ups.
        forks.nth(0).locator("button").click()
        card(page, trip["a1"]["id"]).wait_for()
        forks.nth(1).locator("button").click()
        card(page, trip["u3"]["id"]).wait_for()
        assert card(page, trip["u3"]["id"]).locator(".badge.erased").count() == 1
        assert card(page, trip["a1"]["id"]).locator(".text").inner_text() == "Lisbon: warm, not yet crowded."
        assert card(page, trip["u2"]["id"]).locator(".badge.redacted").count() == 1
        assert card(page, trip["u2"]["id"]).locator(".text").inner_text() == "[redacted]"
        screenshot(page, "ui-tree.png", full_page=False)

        # Switch branch: the first answer becomes the head.
        card(page, trip["a1"]["id"]).click()
        page.click("#make-head")
        page.wait_for_selector(f'.spine .card.is-head[data-id="{trip["a1"]["id"]}"]')
        assert api.get(f"/v1/conversations/{cid}").json()["head_id"] == trip["a1"]["id"]
        assert spine_texts(page)[-1] == "Lisbon: warm, not yet crowded."

        # Regenerate it with the model: a sibling reply, drawn with its provider, model and timing.
        page.click("#regenerate-form button[type=submit]")
        page.wait_for_function(
            "document.querySelector('.spine .card.is-head .generation')?.textContent.startsWith('echo/echo')"
        )
        head = api.get(f"/v1/conversations/{cid}").json()["head_id"]
        assert head not in (trip["a1"]["id"], trip["a2"]["id"])
        assert page.locator(".spine .card.is-head .generation").inner_text().startswith("echo/echo · ")

        # Append under the head.
        page.fill("#reply-form textarea", "From the browser")
        page.select_option("#reply-form select[name=role]", "user")
        page.click("#reply-form button[name=append]")
        page.wait_for_function("document.querySelector('.spine .card.is-head .text')?.textContent === 'From the browser'")
        context = api.get(f"/v1/conversations/{cid}/context").json()["messages"]
        assert [m["content"] for m in context][-2:] == ["echo: Where should I go in May?", "From the browser"]

        # Audit: the verdict is shown.
        page.click("#run-audit")
        page.wait_for_selector(".audit.valid")
        assert page.locator(".audit").inner_text().startswith("✔ The hash chain verifies")

        # Export: the file downloaded is the conversation's event log.
        with page.expect_download() as download:
            page.click("#export")
        lines = [json.loads(line) for line in open(download.value.path()).read().splitlines()]
        events = api.get(f"/v1/conversations/{cid}/events?limit=200").json()["items"]
        assert [line["hash"] for line in lines] == [event["hash"] for event in events]

        # Fork from the question; the fork opens, its inherited messages and its source are linked.
        card(page, trip["u1"]["id"]).click()
        page.fill("#fork-form input", "Fork from the browser")
        page.click("#fork-form button[type=submit]")
        page.wait_for_selector("#fork-source")
        fork_id = re.search(r"#/c/([0-9a-f-]{36})", page.url).group(1)
        summary = api.get(f"/v1/conversations/{fork_id}").json()
        assert summary["title"] == "Fork from the browser"
        assert summary["forked_from"] == {"conversation_id": cid, "message_id": trip["u1"]["id"]}
        assert page.locator("h1").inner_text() == "Fork from the browser"
        assert page.locator("#fork-source").inner_text() == "Trip planning"
        inherited = page.locator(".spine .badge.inherited")
        assert inherited.count() == 2
        assert inherited.first.inner_text() == "inherited from Trip planning"
        assert card(page, trip["u1"]["id"]).locator(".badge.fork-origin").count() == 1
        screenshot(page, "ui-fork.png", full_page=False)

        # The source is one click away.
        page.click("#fork-source")
        page.wait_for_function(f"document.querySelector('h1')?.textContent === 'Trip planning'")
        assert traffic.refused == []
        assert errors == []


def test_a_refused_key_is_said_plainly(server):
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        page.goto(f"{server.base_url}/ui/")
        page.fill("#key", "ct_not-a-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#toast.error")
        assert page.locator("#toast").inner_text() == "The key was refused: paste a valid API key."
        assert traffic.refused == []


def test_the_viewer_is_served_from_the_package_without_other_hosts(server):
    with server.client() as client:
        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for name in ("app.js", "api.js", "tree.js", "dom.js", "style.css", "favicon.svg"):
            asset = client.get(f"/ui/{name}")
            assert asset.status_code == 200, name
            text = asset.text.replace("http://www.w3.org/2000/svg", "")  # a namespace, never fetched
            assert "http://" not in text and "https://" not in text, name


def test_titles_and_contents_are_shown_as_text_never_run(server, api):
    hostile = '<img src="/x" onerror="window.pwned = 1">'
    c = create(api, title=hostile, system="<script>window.pwned = 2</script>", metadata={"note": hostile})
    key = api.headers["Authorization"].removeprefix("Bearer ")
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        sign_in(page, server, key)
        page.click(f'#conversations a[data-id="{c["id"]}"]')
        page.wait_for_selector(".spine .card")
        assert page.locator("h1").inner_text() == hostile
        assert spine_texts(page) == ["<script>window.pwned = 2</script>"]
        assert page.evaluate("window.pwned") is None
        assert page.locator(".tree img, .conversation-head img, #conversations img").count() == 0
        assert traffic.refused == []


def test_a_path_outside_the_viewer_is_a_404_problem(server):
    with server.client() as client:
        for path in ("/ui/missing.js", "/ui/..%2f..%2fui.py", "/static/swagger-ui/..%2f..%2fapp.py"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("application/problem+json"), path

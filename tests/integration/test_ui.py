"""The tree viewer at /ui, in a real headless Chromium that can reach only this machine: a
branched, forked and redacted conversation built over the API is drawn as a tree, and what the
reader does on the page (switch branch, fork, regenerate, append, audit, export) reaches the API."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.browser import offline_browser, screenshot, wait_until
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
        wait_until(page, "document.querySelector('.spine .card.is-head .generation')?.textContent.startsWith('echo/echo')")
        head = api.get(f"/v1/conversations/{cid}").json()["head_id"]
        assert head not in (trip["a1"]["id"], trip["a2"]["id"])
        assert page.locator(".spine .card.is-head .generation").inner_text().startswith("echo/echo · ")

        # Append under the head.
        page.fill("#reply-form textarea", "From the browser")
        page.select_option("#reply-form select[name=role]", "user")
        page.click("#reply-form button[name=append]")
        wait_until(page, "document.querySelector('.spine .card.is-head .text')?.textContent === 'From the browser'")
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
        wait_until(page, f"document.querySelector('h1')?.textContent === 'Trip planning'")
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
        # Scripts, styles and calls from this server only, nothing inline, nothing evaluated; images
        # also from data: and http(s) URLs (a message's image parts), never framed.
        policy = page.headers["content-security-policy"]
        for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                          "img-src 'self' data: https: http:", "frame-ancestors 'none'"):  # fmt: skip
            assert directive in policy.split("; "), directive
        assert "unsafe" not in policy
        assert page.headers["referrer-policy"] == "no-referrer"
        for name in ("app.js", "api.js", "tree.js", "dom.js", "message.js", "replays.js", "style.css", "favicon.svg"):
            asset = client.get(f"/ui/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-security-policy"] == policy, name
            assert asset.headers["x-content-type-options"] == "nosniff", name
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


def test_every_field_of_a_message_is_shown_as_text_never_run(server, api):
    """A developer message with a name and a part of a type no one knows, an assistant's custom
    tool call and refusal, and the tool result answering it: hostile strings everywhere."""
    hostile = '<img src="/x" onerror="window.pwned = 1">'
    cid = create(api, title="Hostile fields")["id"]
    dev = say(api, cid, [{"type": hostile, "payload": hostile}, {"type": "text", "text": hostile}],
              role="developer", name=hostile)  # fmt: skip
    asked = say(api, cid, None, role="assistant", refusal=hostile, reasoning={"encrypted": hostile},
                tool_calls=[{"id": hostile, "type": "custom", "custom": {"name": hostile, "input": hostile}}])  # fmt: skip
    result = say(api, cid, [{"type": "text", "text": hostile}], role="tool", tool_call_id=hostile)
    key = api.headers["Authorization"].removeprefix("Bearer ")
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        sign_in(page, server, key)
        page.click(f'#conversations a[data-id="{cid}"]')
        page.wait_for_selector(".spine .card")
        assert spine_texts(page) == [hostile, f"tool call: {hostile}", hostile]
        assert card(page, asked["id"]).locator(".chip").all_inner_texts() == [f"{hostile}({hostile})", "reasoning", "refusal"]
        assert card(page, result["id"]).locator(".chip").inner_text() == f"↳ {hostile} · {hostile[:8]}"

        card(page, dev["id"]).click()
        assert page.locator("#detail .name code").inner_text() == hostile
        assert page.locator("#detail .json-block .block-label").text_content() == f"{hostile} part"
        assert json.loads(page.locator("#detail .json-block pre").inner_text()) == {"type": hostile, "payload": hostile}
        assert page.locator("#detail .part-text").inner_text() == hostile

        card(page, asked["id"]).click()
        assert page.locator("#detail .refusal pre").inner_text() == hostile
        assert page.locator("#detail .tool-call .call").inner_text() == f"{hostile}({hostile})"
        assert page.locator("#detail .tool-call .call-id").inner_text() == hostile
        assert page.locator("#detail details.reasoning summary").inner_text() == "Reasoning (opaque)"

        card(page, result["id"]).click()
        assert page.locator("#detail .answers").inner_text() == f"Result of call {hostile} · {hostile}(…)"
        assert page.evaluate("window.pwned") is None
        assert page.locator("img").count() == 0
        assert traffic.refused == [] and traffic.failed == []


def test_a_path_outside_the_viewer_is_a_404_problem(server):
    with server.client() as client:
        for path in ("/ui/missing.js", "/ui/..%2f..%2fui.py", "/static/swagger-ui/..%2f..%2fapp.py"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("application/problem+json"), path


def tiny_png() -> str:
    """A 2×2 PNG as a data URL, built here (a real image, so the browser decodes it)."""
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


HOSTILE_ARGS = json.dumps({"city": "<img src=x onerror=window.pwned=1>"})
REMOTE_IMAGE = "http://images.example/cat.png"


@pytest.fixture
def agent(api):
    """A user message with text, a PNG data URL, a remote image and an audio part; an assistant
    message with two tool calls (one with hostile arguments); their two results; and the final
    answer with its reasoning."""
    cid = create(api, title="Agent trace", system="You can call tools.")["id"]
    user = say(api, cid, [
        {"type": "text", "text": "What is in this picture, and the weather there?"},
        {"type": "image_url", "image_url": {"url": tiny_png(), "detail": "low"}},
        {"type": "image_url", "image_url": {"url": REMOTE_IMAGE}},
        {"type": "input_audio", "input_audio": {"data": "UklGRiQA" * 100, "format": "wav"}},
    ])  # fmt: skip
    calls = say(api, cid, None, role="assistant", tool_calls=[
        {"id": "call_weather", "type": "function", "function": {"name": "weather", "arguments": HOSTILE_ARGS}},
        {"id": "call_time", "type": "function", "function": {"name": "local_time", "arguments": '{"tz": "Europe/Oslo"}'}},
    ])  # fmt: skip
    weather = say(api, cid, "sunny, 21 °C", role="tool", tool_call_id="call_weather")
    time_ = say(api, cid, "14:05", role="tool", tool_call_id="call_time")
    answer = say(api, cid, "A red square; it is sunny in Oslo.", role="assistant",
                 reasoning_content="The picture is two by two red pixels. The tools said sunny.")  # fmt: skip
    return {"cid": cid, "user": user, "calls": calls, "weather": weather, "time": time_, "answer": answer}


def test_agent_messages_are_drawn_field_by_field_and_run_nothing(server, api, agent):
    key = api.headers["Authorization"].removeprefix("Bearer ")
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        sign_in(page, server, key)
        page.click(f'#conversations a[data-id="{agent["cid"]}"]')
        page.wait_for_selector(".spine .card")

        # The tree labels each message by its text, else by what it carries.
        assert spine_texts(page) == [
            "You can call tools.",
            "What is in this picture, and the weather there?",
            "tool call: weather, local_time",
            "sunny, 21 °C",
            "14:05",
            "A red square; it is sunny in Oslo.",
        ]
        chips = lambda m: card(page, agent[m]["id"]).locator(".chip").all_inner_texts()  # noqa: E731
        assert chips("user") == ["2 images", "1 other part"]
        assert chips("calls") == [f"weather({HOSTILE_ARGS})", 'local_time({"tz": "Europe/Oslo"})']
        assert chips("weather") == ["↳ weather · call_wea"]
        assert chips("time") == ["↳ local_time · call_tim"]
        assert chips("answer") == ["reasoning"]

        # The user message: its text, the PNG drawn, the remote image not fetched until asked,
        # the audio part as a labelled JSON block with its payload cut short.
        card(page, agent["user"]["id"]).click()
        image = page.locator("#detail .image-part img")
        assert image.count() == 1
        assert image.get_attribute("src").startswith("data:image/png;base64,")
        wait_until(page, "document.querySelector('#detail .image-part img').naturalWidth === 2")
        assert page.locator("#detail .part-text").inner_text() == "What is in this picture, and the weather there?"
        load = page.locator("#detail .load-image")
        assert load.inner_text() == "Load the image from images.example"
        assert traffic.refused == []
        audio = page.locator("#detail .json-block")
        assert audio.locator(".block-label").inner_text().lower() == "input_audio part"
        assert "(800 characters)" in audio.locator("pre").inner_text()
        load.click()
        page.wait_for_selector(f'#detail .image-part img[src="{REMOTE_IMAGE}"]')
        wait_until(page, "document.querySelector('#detail .image-part img[referrerpolicy]').complete")  # refused
        screenshot(page, "ui-agent-parts.png", full_page=False)
        assert page.locator(f'#detail .image-part img[src="{REMOTE_IMAGE}"]').get_attribute("referrerpolicy") == "no-referrer"

        # The tool calls: name(arguments), each with its id and its result; the hostile arguments are text.
        card(page, agent["calls"]["id"]).click()
        blocks = page.locator("#detail .tool-call")
        assert blocks.count() == 2
        assert blocks.nth(0).locator(".call-name").inner_text() == "weather"
        assert json.loads(blocks.nth(0).locator(".call-args").inner_text()) == json.loads(HOSTILE_ARGS)
        assert blocks.nth(0).locator(".call-id").inner_text() == "call_weather"
        assert blocks.nth(1).locator(".call").inner_text() == 'local_time({\n  "tz": "Europe/Oslo"\n})'
        assert blocks.nth(1).locator(".call-id").inner_text() == "call_time"
        screenshot(page, "ui-agent.png", full_page=False)

        # A result links to its call, and the call to its result.
        blocks.nth(1).locator(".answered-by").click()
        page.wait_for_selector(f'.card.selected[data-id="{agent["time"]["id"]}"]')
        answers = page.locator("#detail .answers")
        assert answers.inner_text() == "Result of call call_time · local_time(…)"
        answers.locator(".answered-call").click()
        page.wait_for_selector(f'.card.selected[data-id="{agent["calls"]["id"]}"]')

        # The final answer: its reasoning collapsed until opened.
        card(page, agent["answer"]["id"]).click()
        reasoning = page.locator("#detail details.reasoning")
        assert reasoning.get_attribute("open") is None
        assert not page.locator("#detail .reasoning-text").is_visible()
        assert reasoning.locator("summary").inner_text() == "Reasoning · 59 characters"
        reasoning.locator("summary").click()
        assert page.locator("#detail .reasoning-text").inner_text() == (
            "The picture is two by two red pixels. The tools said sunny."
        )

        assert page.evaluate("window.pwned") is None
        assert page.locator('img[src="x"]').count() == 0
        assert traffic.refused == [REMOTE_IMAGE]
        assert errors == [f"Failed to load resource: net::ERR_INTERNET_DISCONNECTED"]


def test_a_replay_run_is_listed_and_compared_side_by_side(server, api, agent):
    cid = agent["cid"]
    r = api.post(f"/v1/conversations/{cid}/replays", json={"target": {"provider": "echo", "model": "echo"}})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    for _ in range(200):
        run = api.get(f"/v1/conversations/{cid}/replays/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert run["status"] == "finished", run
    fork = run["target_conversation_id"]
    replayed_id = api.get(f"/v1/conversations/{cid}/replays/{run_id}/diff").json()["turns"][0]["replayed"]["id"]
    key = api.headers["Authorization"].removeprefix("Bearer ")
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        sign_in(page, server, key)
        page.click(f'#conversations a[data-id="{cid}"]')
        runs = page.locator("#replay-runs li.run")
        runs.first.wait_for()
        assert runs.count() == 1
        assert runs.first.get_attribute("data-status") == "finished"
        assert runs.first.inner_text().startswith("finished echo/echo · 1/1 turns")

        # The diff: the original reply beside the new one, with their numbers and the tool step.
        runs.first.locator(".compare").click()
        turn = page.locator(f'.diff[data-run="{run_id}"] .turn')
        turn.wait_for()
        sides = turn.locator(":scope > .sides")
        assert sides.locator(".original .side-text").inner_text() == "A red square; it is sunny in Oslo."
        assert sides.locator(".replayed .side-text").inner_text() == (
            "echo: What is in this picture, and the weather there?"
        )
        assert sides.locator(".original .numbers").inner_text() == "written by an append: no generation"
        assert sides.locator(".replayed .numbers").inner_text().startswith("echo/echo · ")
        assert turn.locator(".similarity").inner_text().startswith("similarity 0.")
        step = turn.locator(".step")
        assert step.locator(".resolution").inner_text() == "diverged"
        assert step.locator(".original .call-name").all_inner_texts() == ["weather", "local_time"]
        assert step.locator(".original .call-args").first.inner_text() == HOSTILE_ARGS
        assert step.locator(".original .call-result").all_inner_texts() == ["→ sunny, 21 °C", "→ 14:05"]
        screenshot(page, "ui-replay-diff.png")

        # The new reply, in the fork, links back to the reply it replaces.
        sides.locator(".replayed .side-head a").click()
        page.wait_for_selector(f'.card.selected[data-id="{replayed_id}"]')
        assert re.search(r"#/c/([0-9a-f-]{36})", page.url).group(1) == fork
        assert page.locator("#replay-runs li.run").inner_text().count("wrote this conversation, replaying") == 1
        card(page, replayed_id).locator("a.badge.replay-of").click()
        page.wait_for_selector(f'.card.selected[data-id="{agent["answer"]["id"]}"]')
        assert page.locator("h1").inner_text() == "Agent trace"

        # A run started from the viewer joins the list and is followed until it ends.
        page.click("#start-replay button[type=submit]")
        wait_until(page, "document.querySelectorAll('#replay-runs li.run').length === 2")
        page.wait_for_selector('#replay-runs li.run[data-status="finished"] >> nth=1')
        assert page.evaluate("window.pwned") is None
        assert traffic.refused == []
        assert errors == []


def test_a_stopped_run_names_the_calls_never_recorded(server, api, agent):
    cid = agent["cid"]
    tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
             for name in ("weather", "local_time")]  # fmt: skip
    target = {"provider": "echo", "model": "echo", "params": {"tools": tools}}
    r = api.post(f"/v1/conversations/{cid}/replays", json={"target": target})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    for _ in range(200):
        run = api.get(f"/v1/conversations/{cid}/replays/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert (run["status"], run["error"]) == ("stopped", "unrecorded_tool_call"), run
    key = api.headers["Authorization"].removeprefix("Bearer ")
    with offline_browser() as (browser, traffic):
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, server, key)
        page.click(f'#conversations a[data-id="{cid}"]')
        page.locator(f'#replay-runs li.run[data-run="{run_id}"]').wait_for()
        assert "unrecorded_tool_call" in page.locator("#replay-runs .run-error").inner_text()
        page.locator(f'#replay-runs li.run[data-run="{run_id}"] .compare').click()
        step = page.locator(f'.diff[data-run="{run_id}"] .step')
        step.wait_for()
        assert step.locator(".resolution").inner_text() == "unrecorded"
        assert step.locator(".replayed .call-name").all_inner_texts() == ["weather", "local_time"]
        never = step.locator(".unrecorded")
        assert never.inner_text().startswith("Never recorded: weather(")
        assert [c.split("(")[0] for c in never.locator("code").all_inner_texts()] == ["weather", "local_time"]
        assert "[object" not in never.inner_text()
        assert traffic.refused == [] and errors == []

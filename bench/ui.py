"""How long /ui takes to draw a big tree: `python -m bench.ui --base-url URL --key KEY
[--conversation ID] [--messages 10000]`. Builds a tree over the API (unless given one), then opens
it in headless Chromium (Debian's) several times and prints what the page measured itself
(window.convtreeTimings), and how long opening a branch point and unfolding the path take.
Talks only to the server named, which should be on this machine."""

from __future__ import annotations

import argparse
import random
import statistics
import time

import httpx

from tests.browser import offline_browser, wait_until

WORDS = "the of and to in river mountain train station ticket hotel museum coffee market bridge harbor".split()


def build(client: httpx.Client, messages: int, seed: int = 7) -> str:
    """A long chat with a branch every twenty messages or so, each off one of the last ten."""
    rnd = random.Random(seed)
    conversation = client.post(
        "/v1/conversations", json={"title": f"{messages:,} messages", "system": "You are a travel agent."}
    ).json()
    path = [(conversation["head_id"], "system")]
    for _ in range(messages - 1):
        at = len(path) if rnd.random() < 0.95 or len(path) < 3 else rnd.randrange(len(path) - min(10, len(path) - 1), len(path))
        role = "assistant" if path[at - 1][1] == "user" else "user"
        body = {"role": role, "content": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 60)))}
        if at < len(path):
            body["parent_message_id"] = path[at - 1][0]
        message = client.post(f"/v1/conversations/{conversation['id']}/messages", json=body).json()
        path = path[:at] + [(message["id"], role)]
    return conversation["id"]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    p.add_argument("--base-url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--conversation", help="measure this conversation instead of building one")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with httpx.Client(base_url=args.base_url, headers={"Authorization": f"Bearer {args.key}"}, timeout=60) as client:
        cid = args.conversation or build(client, args.messages)
        summary = client.get(f"/v1/conversations/{cid}").json()
    print(f"conversation {cid}: {summary['message_count']:,} messages, {summary['leaf_count']:,} branch tips")
    opens, branches, unfolds = [], [], []
    with offline_browser() as (browser, _traffic):
        page = browser.new_page()
        page.goto(f"{args.base_url}/ui/")
        page.evaluate("key => sessionStorage.setItem('convtree.key', key)", args.key)
        for _ in range(args.rounds):
            page.goto(f"{args.base_url}/ui/#/c/{cid}")
            page.reload()
            wait_until(page, "window.convtreeTimings")
            opens.append(page.evaluate("window.convtreeTimings"))
            started = time.perf_counter()
            page.locator(".spine > li.fork-point button").last.click()
            page.wait_for_selector(".spine .alternatives ol.branch")
            branches.append((time.perf_counter() - started) * 1000)
            if page.locator("li.fold button").count():
                started = time.perf_counter()
                page.click("li.fold button")
                wait_until(page, "document.querySelectorAll('.spine > li.node').length > 300")
                unfolds.append((time.perf_counter() - started) * 1000)
            nodes = page.evaluate("document.querySelectorAll('.card').length")
    med = statistics.median
    print(f"messages loaded at open: {opens[-1]['messages']} (the tail of the head path; the rest on unfolding); {nodes} cards drawn at the end")
    print(f"open, fetch  : median {med(o['fetchMs'] for o in opens):.0f} ms")
    print(f"open, draw   : median {med(o['renderMs'] for o in opens):.0f} ms")
    print(f"open, total  : median {med(o['totalMs'] for o in opens):.0f} ms (of {args.rounds})")
    print(f"open a branch point: median {med(branches):.0f} ms")
    if unfolds:
        print(f"unfold (load the whole path, draw 200 more): median {med(unfolds):.0f} ms")


if __name__ == "__main__":
    main()

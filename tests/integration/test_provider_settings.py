"""Model providers configured by the environment: read into the settings once, at start (as
`convtree serve` reads them before it migrates and serves), and served from there; what the
environment says afterwards changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvicorn

from service.api.app import create_app
from service.api.connections import uvicorn_limits
from service.config import Settings
from service.store.migrate import as_role, grant_service_role
from tests.fakeupstream import FakeUpstream
from tests.helpers import create
from tests.inthread import InThread
from tests.postgres import SERVICE_ROLE, Databases, run
from tests.servers import Instance, free_port

KEY_AT_START = "sk-read-at-start"


class ConfiguredServer(Instance):
    """convtree in a uvicorn thread whose model providers are the ones its `settings` name (the
    app builds them itself, as `convtree serve` does: no registry handed in)."""

    def __init__(self, database_url: str, settings: Settings) -> None:
        self.database_url = database_url
        run(grant_service_role(database_url, SERVICE_ROLE))
        service_url = as_role(database_url, SERVICE_ROLE)
        self.port = free_port()
        settings = msgspec.structs.replace(
            settings, database_url=service_url, pool_min_size=1, key_cache_seconds=0.0
        )
        config = uvicorn.Config(
            create_app(service_url, settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            **uvicorn_limits(settings),
        )
        self._running = InThread(uvicorn.Server(config))

    def start(self) -> None:
        self._running.start()

    def stop(self) -> None:
        self._running.stop()


def turn(api: Any, **body: Any) -> dict[str, Any]:
    cid = create(api)["id"]
    r = api.post(f"/v1/conversations/{cid}/turns", json={"content": "ping", **body})
    assert r.status_code == 201, r.text
    generation: dict[str, Any] = r.json()["assistant_message"]["generation"]
    return {"content": r.json()["assistant_message"]["content"], **generation}


def test_providers_configured_by_the_environment_serve_turns_as_they_were_at_start(
    databases: Databases, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(
        '[providers.work]\nkind = "openai"\n'
        f'base_url = "{upstream.openai_url}"\napi_key_env = "WORK_KEY"\ndefault_model = "fake-large"\n'
    )
    monkeypatch.setenv("CONVTREE_PROVIDERS_FILE", str(providers_file))
    monkeypatch.setenv("WORK_KEY", KEY_AT_START)
    monkeypatch.setenv("CONVTREE_OLLAMA_BASE_URL", upstream.ollama_url)
    monkeypatch.setenv("CONVTREE_OLLAMA_MODEL", "fake-small")
    monkeypatch.setenv("CONVTREE_OLLAMA_MODELS", "")  # set but empty: any model
    monkeypatch.setenv("CONVTREE_DEFAULT_PROVIDER", "work")
    settings = Settings.from_env()  # the start

    # Everything the providers came from changes before the services open and while they serve.
    providers_file.write_text("not a providers file [")
    monkeypatch.setenv("WORK_KEY", "sk-changed-later")
    monkeypatch.setenv("CONVTREE_OLLAMA_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CONVTREE_OLLAMA_MODELS", "other-model")
    monkeypatch.setenv("CONVTREE_DEFAULT_PROVIDER", "echo")
    monkeypatch.setenv("CONVTREE_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with ConfiguredServer(databases.migrated(), settings) as server:
        monkeypatch.delenv("CONVTREE_PROVIDERS_FILE")
        monkeypatch.delenv("WORK_KEY")
        _, key = server.new_key()
        with server.client(key) as api:
            default = turn(api)
            assert (default["provider"], default["model"]) == ("work", "fake-large")
            assert default["content"] == "Hello from fake-large. You said: ping"
            sent = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
            assert [r.headers.get("authorization") for r in sent] == [f"Bearer {KEY_AT_START}"]

            local = turn(api, provider="ollama", model="fake-small")
            assert (local["provider"], local["model"], local["content"]) == (
                "ollama",
                "fake-small",
                "Hello from fake-small. You said: ping",
            )
            models = api.get("/v1/models")
            assert models.status_code == 200, models.text
            # CONVTREE_OPENAI_* came too late: there is no `openai` provider.
            assert {m["id"].split("/")[0] for m in models.json()["data"]} == {"work", "ollama", "echo"}
            to_work = [r for r in upstream.requests if r.path.startswith("/v1/")]
            assert {r.headers.get("authorization") for r in to_work} == {f"Bearer {KEY_AT_START}"}

"""One data directory for every command, wherever it is run from; `convtree info` says which."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.test_cli import convtree


def run_in(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CONVTREE_DATA_DIR")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=180
    )


@pytest.fixture
def home() -> Path:
    # Short: the embedded server's socket lives under it, and socket paths are limited to ~100 bytes.
    path = Path(tempfile.mkdtemp(prefix="ct-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_keys_created_from_one_directory_are_listed_from_another(home):
    (home / "a").mkdir()
    (home / "b").mkdir()
    xdg = str(home / "xdg")
    created = run_in(home / "a", "keys", "create", "--tenant", "acme", "--name", "ops", XDG_DATA_HOME=xdg)
    assert created.returncode == 0, created.stderr
    listed = run_in(home / "b", "keys", "list", XDG_DATA_HOME=xdg)
    assert listed.returncode == 0, listed.stderr
    assert "acme\tops" in listed.stdout
    assert not (home / "a" / "data").exists() and not (home / "b" / "data").exists()
    assert (home / "xdg" / "convtree" / "pgdata").is_dir()
    info = run_in(home / "b", "info", XDG_DATA_HOME=xdg)
    assert info.returncode == 0, info.stderr
    assert f"data directory: {home / 'xdg' / 'convtree'}" in info.stdout
    assert "embedded" in info.stdout and "migration:      not needed" in info.stdout


def test_data_dir_option_wins_over_the_environment_and_is_resolved_from_the_current_directory(home, databases):
    url = databases.migrated()
    info = run_in(home, "--data-dir", "here", "info", DATABASE_URL=url, CONVTREE_DATA_DIR="/elsewhere")
    assert info.returncode == 0, info.stderr
    assert f"data directory: {home.resolve() / 'here'}" in info.stdout
    from_env = run_in(home, "info", DATABASE_URL=url, CONVTREE_DATA_DIR=str(home / "there"))
    assert f"data directory: {home / 'there'}" in from_env.stdout


def test_info_shows_the_database_without_its_password_and_whether_to_migrate(databases):
    empty = databases.empty()
    before = convtree("info", database_url=empty)
    assert before.returncode == 0, before.stderr
    assert "(DATABASE_URL)" in before.stdout
    assert "schema:         none" in before.stdout and "migration:      needed" in before.stdout
    assert convtree("migrate", database_url=empty).returncode == 0
    after = convtree("info", database_url=empty)
    assert "migration:      not needed" in after.stdout

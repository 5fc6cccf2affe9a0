"""The rooms' import contracts (pyproject.toml, [tool.importlinter]) hold, and would catch a break."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the `service` and `convtree` packages found in `tree`, with the contracts of its pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sources and their contracts, to break on purpose."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "service", tree / "service", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copytree(ROOT / "convtree", tree / "convtree", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_every_import_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),  # contract None: the import is allowed
    [
        ("service/api/__init__.py", "import service.store", "The API does not import the store"),
        ("service/cli.py", "import service.store", "The command line does not import the store"),
        ("service/domain/__init__.py", "import service.config", None),  # the settings: anyone's
        ("service/domain/__init__.py", "import service.app", "The domain imports nothing of ours"),
        ("service/store/__init__.py", "import service.app", "Rooms:"),
        ("service/store/__init__.py", "import service.upstream", "Rooms:"),
        ("service/upstream/__init__.py", "import service.store", "Rooms:"),
        ("service/app/__init__.py", "import service.api", "Rooms:"),
        ("convtree/client/items.py", "import service.domain.items", "The client ships without the server"),
        ("convtree/agents.py", "import service.domain", "The client ships without the server"),
    ],
)
def test_an_import_against_the_rooms_breaks_its_contract(
    copy: Path, module: str, line: str, contract: str | None
) -> None:
    path = copy / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # against the rooms\n")
    try:
        result = lint_imports(copy)
    finally:
        path.write_text(original)
    if contract is None:
        assert result.returncode == 0, result.stdout
        return
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


def test_every_handler_resolves_its_dependencies_one_after_another() -> None:
    """litestar runs dependencies that do not depend on each other in an anyio task group of their
    own, on every request; convtree's form one chain (the caller, then the service) instead."""
    from service.api.app import create_app
    from service.config import Settings

    app = create_app("postgresql://unused", Settings())
    batches = {
        (route.path, method): [len(batch) for batch in kwargs_model.dependency_batches]
        for route in app.routes
        for method, (_, kwargs_model) in getattr(route, "route_handler_map", {}).items()
    }
    assert batches[("/v1/conversations/{conversation_id:str}/messages", "POST")] == [1, 1]  # the caller, the service
    assert {where: sizes for where, sizes in batches.items() if any(size > 1 for size in sizes)} == {}

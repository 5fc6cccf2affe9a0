"""service/ passes `mypy --strict` with the settings in pyproject.toml's [tool.mypy]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_service_passes_mypy_strict() -> None:
    # The mypy installed beside this Python (the test extra), run from the root so it reads
    # pyproject.toml and keeps its cache in .mypy_cache (a first run takes ~1 min, later ones seconds).
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "service"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The app factory the benchmark's server processes import: convtree built from the environment.

Servers load it by name (`uvicorn --factory bench.serve:create`, `granian --factory …`), which is
what lets them start several workers: each worker imports this module and builds its own app.
"""

from __future__ import annotations

from litestar import Litestar

from service.api.app import create_app
from service.config import Settings


def create() -> Litestar:
    settings = Settings.from_env()
    if settings.database_url is None:
        raise SystemExit("bench.serve needs DATABASE_URL: the benchmark gives each server its own database")
    return create_app(settings.database_url, settings)

"""What a browser loads: the tree viewer at /ui and the API docs at /docs, from files in the package."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = "/static/swagger-ui"  # swagger-ui-dist, vendored at the version its SOURCE file names


def docs_plugin() -> SwaggerRenderPlugin:
    """Swagger UI at /docs, its scripts and styles served by convtree itself, so the docs work offline."""
    return SwaggerRenderPlugin(
        js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER_UI}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
        path="/swagger",
        favicon="<link rel='icon' type='image/svg+xml' href='/ui/favicon.svg'>",
    )


def routers() -> list[Router]:
    """The viewer's files (re-checked on every load, so an upgrade shows at once) and the vendored
    docs assets (a day in caches: they change only with convtree's version)."""
    return [
        create_static_files_router(
            path="/ui",
            directories=[STATIC / "ui"],
            html_mode=True,
            name="ui",
            cache_control=CacheControlHeader(no_cache=True),
        ),
        create_static_files_router(
            path=SWAGGER_UI,
            directories=[STATIC / "swagger-ui"],
            name="swagger-ui",
            cache_control=CacheControlHeader(max_age=86400),
        ),
    ]

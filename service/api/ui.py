"""What a browser loads: the tree viewer at /ui and the API docs at /docs, from files in the package."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = "/static/swagger-ui"  # swagger-ui-dist, vendored at the version its SOURCE file names

# What the viewer's page may load. Its scripts, styles and API calls come from convtree alone
# (nothing inline, nothing from another host). Images are the one exception: a message's image
# part is a data: URL or an http(s) URL, and the reader may ask to see it. A data: image is drawn
# at once; a remote one only when the reader clicks for it (static/ui/message.js), without a referrer,
# because fetching it tells its host that someone is reading the conversation.
VIEWER_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: https: http:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
VIEWER_HEADERS = {
    "Content-Security-Policy": VIEWER_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def docs_plugin() -> SwaggerRenderPlugin:
    """Swagger UI at /docs, its scripts and styles served by convtree itself, so the docs work offline."""
    return SwaggerRenderPlugin(
        js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER_UI}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
        path="/swagger",
        favicon="<link rel='icon' type='image/svg+xml' href='/ui/favicon.svg'>",
    )


async def _guarded(response: Response[object]) -> Response[object]:
    """Every file of the viewer goes out with its policy: a message's text that got into the page
    as markup still could not run a script or reach another host but for an image."""
    response.headers.update(VIEWER_HEADERS)
    return response


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
            after_request=_guarded,
        ),
        create_static_files_router(
            path=SWAGGER_UI,
            directories=[STATIC / "swagger-ui"],
            name="swagger-ui",
            cache_control=CacheControlHeader(max_age=86400),
        ),
    ]

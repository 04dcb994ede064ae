"""The web dashboard: static files under /ui/, shipped inside the package, with a strict CSP.

The page is plain ES modules and CSS: no build step, nothing fetched from elsewhere. The policy
allows only this origin and no inline script or style, so a value that reached the DOM unescaped
still could not run.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).parent / "ui"
PREFIX = "/ui"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def is_ui_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "index.html")


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(PREFIX + "/")


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    # Every answer under /ui/, its 404s included, carries the policy.
    if is_ui_path(request.path):
        response.headers.update(HEADERS)


def add_routes(app: web.Application) -> None:
    """Serve the dashboard when its files are installed (a package built without them still runs)."""
    if not (UI_DIR / "index.html").is_file():
        return
    app.router.add_get(PREFIX, _redirect)
    app.router.add_get(PREFIX + "/", _index)
    app.router.add_static(PREFIX + "/", UI_DIR)
    app.on_response_prepare.append(on_response_prepare)

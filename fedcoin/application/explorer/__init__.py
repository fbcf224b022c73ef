"""The web explorer: a read-only page at ``/`` of every full node, over the node's HTTP API.

Static files only (``index.html``, ``explorer.js``, ``explorer.css`` next to this module): no
build step and nothing fetched from the internet, so it works offline. The page reads the
JSON API (``/status``, ``/blocks``, ``/tasks``, ``/accounts``), draws its charts as inline SVG,
and polls ``/status`` to refresh itself as blocks arrive.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

FILES = Path(__file__).resolve().parent


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(FILES / "index.html", headers={"Cache-Control": "no-cache"})


def add_explorer_routes(app: web.Application) -> None:
    """``GET /`` (the page) and ``GET /explorer/…`` (its script and style sheet)."""
    app.router.add_get("/", index)
    app.router.add_static("/explorer/", FILES, append_version=False)

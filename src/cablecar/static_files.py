"""Plain files served beside a cable by ``cablecar serve --static DIR``: a page and its
scripts, so that a small app needs no other web server.

``GET /`` serves ``DIR/index.html``, ``GET /x/y.js`` serves ``DIR/x/y.js``, and
``GET /cablecar.js`` serves the package's browser client unless ``DIR`` has its own. Only
regular files inside ``DIR`` are served (no listing, no ``..``, no symlink out of it);
anything else is left to the next handler (404 by default). Each file is read whole when
asked for: this is for a small app's page and scripts, not a CDN.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from .http import Request, Response

__all__ = ["static_handler"]

_CLIENT = resources.files("cablecar") / "static" / "cablecar.js"


def static_handler(directory: str | Path) -> Callable[[Request], Awaitable[Response | None]]:
    """An ``http_handler`` serving the files of ``directory``.

    Raises:
        NotADirectoryError: ``directory`` is not a directory.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"--static {directory}: not a directory")

    async def handler(request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return None
        relative = request.path.lstrip("/") or "index.html"
        try:
            path = (root / relative).resolve()
            found = path.is_relative_to(root) and path.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long...
            return None
        if found:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind == "application/javascript":
                kind += "; charset=utf-8"
            return Response(path.read_bytes(), 200, kind)
        if relative == "cablecar.js":
            return Response(_CLIENT.read_bytes(), 200, "text/javascript; charset=utf-8")
        return None

    return handler

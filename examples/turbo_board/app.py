"""A message board whose page updates through Turbo Streams over cablecar: no
JavaScript of its own, only Hotwire's Turbo and the stream source element.

    cd examples/turbo_board
    uvicorn app:app --ws websockets-sansio          # http://127.0.0.1:8000

- posting the form: the view broadcasts ``append`` to every open page (the poster's too)
  and answers the form with a Turbo Stream that resets it;
- the delete button: the view broadcasts ``remove``;
- a background task in the app updates the clock every second, and ``worker.py``, a
  separate process, posts notices through a ``Broadcaster`` (run the app with
  ``CABLE_PUBSUB=redis://...`` so the two processes share a broker).

Message text is user content: a plain ``str`` goes into a Turbo Stream as escaped text,
and Jinja2 escapes it in the page, so ``<script>`` shows as text everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cablecar import Cable, Connection, turbo
from cablecar.transports.asgi import CableMiddleware

HERE = Path(__file__).parent
#: Hotwire's bundle of Turbo, Action Cable and <turbo-cable-stream-source> (npm
#: @hotwired/turbo-rails): served from TURBO_JS or the tests' node_modules when present,
#: else from a CDN.
TURBO_JS = Path(
    os.environ.get(
        "TURBO_JS",
        HERE.parent.parent
        / "tests/js/node_modules/@hotwired/turbo-rails/app/assets/javascripts/turbo.js",
    )
)
TURBO_CDN = "https://cdn.jsdelivr.net/npm/@hotwired/turbo-rails@8/app/assets/javascripts/turbo.js"
#: The same board on AnyCable's client (/anycable): @hotwired/turbo, @anycable/web and
#: @anycable/turbo-stream as ES modules, from NODE_MODULES (an npm install) when set, else
#: from a CDN.
NODE_MODULES = os.environ.get("NODE_MODULES")
_MODULES = {  # import name: its file in the package
    "@hotwired/turbo": "dist/turbo.es2017-esm.js",
    "@anycable/web": "index.js",
    "@anycable/core": "index.js",
    "@anycable/turbo-stream": "index.js",
    "nanoevents": "index.js",
}

cable = Cable(
    Connection,
    pubsub=os.environ.get("CABLE_PUBSUB", "memory://"),
    streams_secret=os.environ.get("CABLE_STREAMS_SECRET", "dev-only-not-secret-change-me"),
    # AnyCable's extended protocol (the /anycable page): a page that reconnects gets the
    # Turbo Streams it missed.
    history=True,
)

templates = Jinja2Templates(HERE / "templates")
templates.env.globals.update(turbo.template_globals(cable))  # {{ turbo_stream_from(...) }}

#: The board's messages: {id: text}. A real app keeps them in its database.
messages: dict[int, str] = {}
_ids = itertools.count(1)


def message_html(message_id: int, text: str) -> str:
    """One message, rendered by the same template the page uses (escaped by Jinja2)."""
    return templates.get_template("_message.html").render(id=message_id, text=text)


async def tick() -> None:
    """A background task: the clock on every page, once a second."""
    while True:
        await turbo.broadcast(cable, "board", turbo.update("clock", time.strftime("%H:%M:%S")))
        await asyncio.sleep(1)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(tick())
    yield
    task.cancel()


app = FastAPI(title="cablecar Turbo board", lifespan=lifespan)
app.add_middleware(CableMiddleware, cable=cable)  # /cable; starts and stops with the app


@app.get("/")
async def index(request: Request) -> Response:
    return templates.TemplateResponse(request, "index.html", {"messages": messages})


@app.post("/messages")
async def post_message(request: Request, text: Annotated[str, Form()]) -> Response:
    text = text.strip()[:500]
    if text:
        message_id = next(_ids)
        messages[message_id] = text
        element = turbo.append("messages", turbo.HTML(message_html(message_id, text)))
        await turbo.broadcast(cable, "board", element)
    # Answer the form with a Turbo Stream (no redirect, no page load): a fresh form.
    form = templates.get_template("_form.html").render()
    return Response(
        str(turbo.replace("message_form", turbo.HTML(form))),
        media_type="text/vnd.turbo-stream.html",
    )


@app.post("/messages/{message_id}/delete")
async def delete_message(message_id: int) -> Response:
    if messages.pop(message_id, None) is not None:
        await turbo.broadcast(cable, "board", turbo.remove(f"message_{message_id}"))
    return Response(status_code=204)


@app.get("/anycable")
async def anycable_page(request: Request) -> Response:
    imports = {
        name: f"/vendor/{name}/{file}" if NODE_MODULES else f"https://esm.sh/{name}"
        for name, file in _MODULES.items()
    }
    return templates.TemplateResponse(
        request, "anycable.html", {"messages": messages, "imports": imports}
    )


@app.get("/vendor/{path:path}")
def vendor(path: str) -> Response:
    """An ES module of the packages above, from NODE_MODULES (nothing else is served)."""
    if NODE_MODULES is None:
        return Response(status_code=404)
    root = Path(NODE_MODULES).resolve()
    file = (root / path).resolve()  # resolved: "../" cannot leave the packages below
    packages = [root / name for name in _MODULES]
    if file.suffix != ".js" or not file.is_file() or not any(p in file.parents for p in packages):
        return Response(status_code=404)
    return FileResponse(file, media_type="text/javascript")


@app.get("/turbo.js")
def turbo_js() -> Response:
    if TURBO_JS.is_file():
        return FileResponse(TURBO_JS, media_type="text/javascript")
    return RedirectResponse(TURBO_CDN)

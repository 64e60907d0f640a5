"""A FastAPI chat on cablecar: log in, chat in rooms, post to a room over plain HTTP.

    cd examples/fastapi_chat
    uvicorn app:app --ws websockets-sansio        # http://127.0.0.1:8000 (alice / wonderland)

The cable runs inside the app (``CableMiddleware``: ``/cable`` and ``/cable/health``),
starts and stops with it, and HTTP handlers broadcast with ``await cable.broadcast``.
The same cable also runs on the standalone server: ``cablecar serve app.py:cable``.
"""

from __future__ import annotations

import hmac
import os
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from cablecar import Cable, Channel, Connection
from cablecar.contrib.starlette import issue_token, read_session, read_token, request_token
from cablecar.transports.asgi import CableMiddleware

SECRET_KEY = os.environ.get("CHAT_SECRET_KEY", "dev-only-not-secret-change-me")
#: Demo accounts; a real app checks its user table and password hashes.
USERS = {"alice": "wonderland", "bob": "builder"}


# -- the cable ----------------------------------------------------------------------------


class AppConnection(Connection):
    identified_by = ("current_user",)

    async def connect(self) -> None:
        # Browsers send the session cookie SessionMiddleware signed at login. Other
        # clients send a token from GET /token: ?token=... or the subprotocol "token.<t>".
        user = read_session(self.request, SECRET_KEY).get("user")
        if user is None:
            user = read_token(request_token(self.request), SECRET_KEY, max_age=3600)
        if user not in USERS:
            self.reject_unauthorized()
        self.current_user = user


class ChatChannel(Channel):
    async def subscribed(self) -> None:
        room = self.params.get("room")
        if not isinstance(room, str) or not room:
            self.reject()
            return
        self.stream_from(f"chat_{room}")

    async def speak(self, data: dict[str, Any]) -> None:
        body = str(data.get("body", "")).strip()[:1000]
        if body:
            await self.cable.broadcast(
                f"chat_{self.params['room']}", {"from": self.current_user, "body": body}
            )


cable = Cable(connection=AppConnection, channels=[ChatChannel])


# -- the web app --------------------------------------------------------------------------

app = FastAPI(title="cablecar FastAPI chat")
app.add_middleware(SessionMiddleware, secret_key=SECRET_KEY)
app.add_middleware(CableMiddleware, cable=cable)  # /cable, /cable/health; starts with the app


def current_user(request: Request) -> str:
    user = request.session.get("user")
    if user not in USERS:
        raise HTTPException(401, "log in first")
    return str(user)


@app.post("/login")
async def login(request: Request, credentials: dict[str, str]) -> dict[str, str]:
    name = credentials.get("username", "")
    password = USERS.get(name)
    if password is None or not hmac.compare_digest(password, credentials.get("password", "")):
        raise HTTPException(401, "wrong username or password")
    request.session["user"] = name
    return {"user": name}


@app.post("/logout")
async def logout(request: Request) -> dict[str, bool]:
    request.session.clear()
    return {"ok": True}


@app.get("/token")
async def token(request: Request) -> dict[str, str]:
    """A token for clients that cannot send the cookie (valid for an hour)."""
    return {"token": issue_token(current_user(request), SECRET_KEY)}


@app.post("/rooms/{room}/messages", status_code=201)
async def post_message(room: str, request: Request, message: dict[str, str]) -> dict[str, str]:
    """Plain HTTP in, WebSocket out: every subscriber of the room gets the message."""
    sent = {"from": current_user(request), "body": message.get("body", "")[:1000]}
    await cable.broadcast(f"chat_{room}", sent)
    return sent


@app.get("/")
async def index() -> FileResponse:
    return FileResponse(os.path.join(os.path.dirname(__file__), "index.html"))


@app.get("/cablecar.js")
async def cablecar_js() -> Response:
    """cablecar's browser client (the @rails/actioncable API), served from the package."""
    source = (resources.files("cablecar") / "static" / "cablecar.js").read_bytes()
    return Response(source, media_type="text/javascript")

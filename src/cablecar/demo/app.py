"""The chat room demo: rooms, presence, typing, history, and the page that shows them.

Everything here is built on cablecar's public API; the demo's state (rooms, their last
messages, who is in each) lives in memory in :class:`ChatRooms`, not in the framework.

Wire format (what the page and any Action Cable client see):

``ChatChannel`` (params ``{"room": NAME}``) transmits, before its confirmation::

    {"type": "history", "room": ..., "epoch": ..., "messages": [MESSAGE, ...],
     "members": [NAME, ...], "you": {"name": ..., "sid": ...}}

and then broadcasts to the room::

    MESSAGE = {"type": "message", "id": 7, "room": ..., "name": ..., "sid": ...,
               "body": ..., "ts": <server time, ms since the epoch>, "epoch": ...}

Who is in the room is protocol presence (the cable runs with ``history=True``): the
channel joins each subscriber to the room stream's presence under its name, so
extended-protocol clients (cablecar.js, ``@anycable/web``) get ``presence`` frames
``{"type": "join", "id": NAME, "info": {"name": NAME}}`` and ``{"type": "leave", "id":
NAME}``, and plain Action Cable clients the same objects as ordinary messages. Several tabs
with one name count once; a tab that vanishes leaves ``presence_ttl`` (5 s) later.
"Someone is typing" is a whisper on the room stream, ``{"type": "typing", "name": ...,
"sid": ...}``, sent by the page straight to the others (no action, no history).

Actions: ``speak {"body"}`` (refused with ``{"type": "error", "code": ..., "message": ...}``
when empty, longer than 2000 characters or too fast).

``RoomsChannel`` transmits and then broadcasts ``{"type": "rooms", "rooms": [{"name",
"members", "messages"}, ...]}``; action ``create {"name"}``.

HTTP (:meth:`DemoCable.http_handler`): ``/`` and ``/static/...`` serve the page;
``GET /api/rooms`` and ``GET /api/rooms/<room>/messages?since=<id>`` answer JSON with
``server_time`` so the page can compare request-response, polling and push.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from collections import Counter, deque
from importlib import resources
from typing import Any, cast
from urllib.parse import unquote

from cablecar import Cable, Channel, Connection, Request, Response

__all__ = [
    "HISTORY_SIZE",
    "MAX_BODY",
    "MAX_NAME",
    "ChatChannel",
    "ChatRooms",
    "DemoCable",
    "DemoConnection",
    "Room",
    "RoomsChannel",
    "clean_body",
    "clean_name",
]

#: Messages a newcomer gets when joining a room.
HISTORY_SIZE = 50
#: Longest message body, in characters.
MAX_BODY = 2000
#: Longest user or room name, in characters.
MAX_NAME = 40
#: Rooms the demo keeps at most (people can create rooms).
MAX_ROOMS = 100
DEFAULT_ROOMS = ("lobby", "python", "random")
ROOMS_STREAM = "demo:rooms"

# C0/C1 control characters, zero-width characters and bidi overrides: never displayed.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_INVISIBLE_BUT_NEWLINES = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)


def clean_name(value: object) -> str | None:
    """A user or room name with invisible characters removed and spaces collapsed.

    Returns ``None`` unless the result has 1 to :data:`MAX_NAME` characters.
    """
    if not isinstance(value, str) or len(value) > 10 * MAX_NAME:
        return None
    name = " ".join(_INVISIBLE.sub(" ", unicodedata.normalize("NFC", value)).split())
    return name if 0 < len(name) <= MAX_NAME else None


def clean_body(value: str) -> str:
    """A message body with control characters removed (newlines kept) and trimmed."""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE_BUT_NEWLINES.sub("", text).strip()


def _now_ms() -> float:
    return round(time.time() * 1000, 1)


class Room:
    """One room: its last messages and who is in it now (names, counted per socket)."""

    def __init__(self, name: str, epoch: str, history_size: int = HISTORY_SIZE) -> None:
        self.name = name
        self.epoch = epoch
        self.stream = f"demo:chat:{name}"
        self.messages: deque[dict[str, Any]] = deque(maxlen=history_size)
        self.members: Counter[str] = Counter()
        self._next_id = 1

    def add(self, name: str, sid: str, body: str) -> dict[str, Any]:
        """Store a message and return it as broadcast."""
        message = {
            "type": "message",
            "id": self._next_id,
            "room": self.name,
            "name": name,
            "sid": sid,
            "body": body,
            "ts": _now_ms(),
            "epoch": self.epoch,
        }
        self._next_id += 1
        self.messages.append(message)
        return message

    def since(self, last_id: int) -> list[dict[str, Any]]:
        """Messages with an id above ``last_id``."""
        return [m for m in self.messages if m["id"] > last_id]

    def join(self, name: str) -> bool:
        """Count one more socket for ``name``; True if ``name`` was not here before."""
        self.members[name] += 1
        return self.members[name] == 1

    def leave(self, name: str) -> bool:
        """Count one socket less for ``name``; True if ``name`` has now left."""
        if self.members[name] <= 1:
            self.members.pop(name, None)
            return True
        self.members[name] -= 1
        return False

    def member_names(self) -> list[str]:
        """Who is in the room, sorted case-insensitively."""
        return sorted(self.members, key=str.casefold)

    def summary(self) -> dict[str, Any]:
        """What the room list shows."""
        return {"name": self.name, "members": len(self.members), "messages": len(self.messages)}


class ChatRooms:
    """The demo's in-memory state: every room by name.

    ``epoch`` changes each time the process starts, so a page can tell that message ids
    started again from 1.
    """

    def __init__(self, history_size: int = HISTORY_SIZE, max_rooms: int = MAX_ROOMS) -> None:
        self.epoch = secrets.token_hex(4)
        self.history_size = history_size
        self.max_rooms = max_rooms
        self.rooms: dict[str, Room] = {}
        for name in DEFAULT_ROOMS:
            self.get_or_create(name)

    def get(self, name: object) -> Room | None:
        """The room called ``name``, if it exists."""
        return self.rooms.get(name) if isinstance(name, str) else None

    def get_or_create(self, name: object) -> Room | None:
        """The room called ``name`` (cleaned), created if needed; ``None`` if the name
        is invalid or there are already ``max_rooms`` rooms.
        """
        cleaned = clean_name(name)
        if cleaned is None:
            return None
        room = self.rooms.get(cleaned)
        if room is None and len(self.rooms) < self.max_rooms:
            room = self.rooms[cleaned] = Room(cleaned, self.epoch, self.history_size)
        return room

    def summary(self) -> list[dict[str, Any]]:
        """Every room for the room list, default rooms first, then by name."""
        order = {name: i for i, name in enumerate(DEFAULT_ROOMS)}
        rooms = sorted(
            self.rooms.values(), key=lambda r: (order.get(r.name, 99), r.name.casefold())
        )
        return [room.summary() for room in rooms]


class DemoConnection(Connection):
    """Identified by the name in ``?name=...`` (refused unless 1-40 visible characters)
    and a random per-socket ``sid``, so two tabs with the same name stay apart.
    """

    identified_by = ("user_name", "sid")

    async def connect(self) -> None:
        name = clean_name(self.request.query.get("name"))
        if name is None:
            self.reject_unauthorized()
        self.user_name = name
        self.sid = secrets.token_urlsafe(6)


class _DemoChannel(Channel):
    """Shared helpers (private names, so they are not actions)."""

    @property
    def _rooms(self) -> ChatRooms:
        return cast(DemoCable, self.cable).rooms

    async def _broadcast_room_list(self) -> None:
        await self.cable.broadcast(ROOMS_STREAM, {"type": "rooms", "rooms": self._rooms.summary()})

    def _error(self, code: str, message: str) -> None:
        self.transmit({"type": "error", "code": code, "message": message})


class ChatChannel(_DemoChannel):
    """One room: ``{"channel": "ChatChannel", "room": "lobby"}``."""

    #: Each subscriber may speak this many times per ``_SPEAK_WINDOW`` seconds.
    _SPEAK_LIMIT = 10
    _SPEAK_WINDOW = 10.0

    async def subscribed(self) -> None:
        self._room: Room | None = None
        self._spoken: deque[float] = deque(maxlen=self._SPEAK_LIMIT)
        room = self._rooms.get_or_create(self.params.get("room"))
        if room is None:
            self.reject()
            return
        self._room = room
        self.stream_from(room.stream, presence=True, whisper=True)
        name: str = self.user_name
        room.join(name)
        await self.join_presence(name, {"name": name})  # a "join" when the name is new here
        members = {*await self.cable.presence(room.stream), name}
        self.transmit(
            {
                "type": "history",
                "room": room.name,
                "epoch": room.epoch,
                "messages": list(room.messages),
                "members": sorted(members, key=str.casefold),
                "you": {"name": name, "sid": self.sid},
            }
        )
        await self._broadcast_room_list()

    async def unsubscribed(self) -> None:
        room = getattr(self, "_room", None)
        if room is None:
            return
        room.leave(self.user_name)  # presence leaves by itself
        await self._broadcast_room_list()

    async def speak(self, data: dict[str, Any]) -> None:
        """Say something: ``{"body": "..."}``."""
        room = self._room
        body = data.get("body")
        if room is None:
            return
        if not isinstance(body, str):
            self._error("invalid", "A message needs a text body.")
            return
        body = clean_body(body)
        if not body:
            self._error("empty", "Your message is empty.")
            return
        if len(body) > MAX_BODY:
            self._error(
                "too_long",
                f"Your message is {len(body)} characters long; the limit is {MAX_BODY}.",
            )
            return
        now = time.monotonic()
        if len(self._spoken) == self._SPEAK_LIMIT and now - self._spoken[0] < self._SPEAK_WINDOW:
            self._error("too_fast", "You are sending messages too fast; wait a few seconds.")
            return
        self._spoken.append(now)
        await self.cable.broadcast(room.stream, room.add(self.user_name, self.sid, body))


class RoomsChannel(_DemoChannel):
    """The room list with live member counts: ``{"channel": "RoomsChannel"}``."""

    async def subscribed(self) -> None:
        self.stream_from(ROOMS_STREAM)
        self.transmit({"type": "rooms", "rooms": self._rooms.summary()})

    async def create(self, data: dict[str, Any]) -> None:
        """Create a room: ``{"name": "..."}``."""
        rooms = self._rooms
        if clean_name(data.get("name")) is None:
            self._error("invalid", f"A room name has 1 to {MAX_NAME} characters.")
        elif rooms.get_or_create(data.get("name")) is None:
            self._error("full", f"There are already {rooms.max_rooms} rooms.")
        else:
            await self._broadcast_room_list()


# -- the page and the JSON endpoints -----------------------------------------------------

_SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_MESSAGES_PATH = re.compile(r"/api/rooms/([^/]+)/messages")


def _load_static() -> dict[str, tuple[bytes, str]]:
    """Every file the page may load, read once: the only paths ever served."""
    files: dict[str, tuple[bytes, str]] = {}
    sources = [resources.files("cablecar.demo") / "static", resources.files("cablecar") / "static"]
    for folder in sources:
        for entry in folder.iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in _TYPES:
                files.setdefault(entry.name, (entry.read_bytes(), _TYPES[suffix]))
    return files


class DemoCable(Cable):
    """The demo's :class:`~cablecar.Cable`: its channels, its state and its HTTP handler.

    Args:
        pubsub: the adapter URL (``"memory://"`` by default).
        history_size: messages kept per room.

    Example::

        cable = DemoCable()
        server = await serve(cable, port=8080, http_handler=cable.http_handler)
    """

    def __init__(self, pubsub: str = "memory://", *, history_size: int = HISTORY_SIZE) -> None:
        super().__init__(
            connection=DemoConnection,
            channels=[ChatChannel, RoomsChannel],
            pubsub=pubsub,
            allowed_origins=None,  # browsers: the page's own origin only
            history=True,  # presence and whisper; a reconnecting page resumes its session
            presence_ttl=5.0,
        )
        self.rooms = ChatRooms(history_size)
        self.static_files = _load_static()

    async def http_handler(self, request: Request) -> Response | None:
        """Serve the page, its static files and the JSON endpoints; ``None`` → 404."""
        if request.method not in ("GET", "HEAD"):
            return Response.json({"error": "method not allowed"}, 405)
        path = request.path
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/api/rooms":
            return self._json(
                {"epoch": self.rooms.epoch, "rooms": self.rooms.summary(), "server_time": _now_ms()}
            )
        match = _MESSAGES_PATH.fullmatch(path)
        if match:
            return self._messages(unquote(match[1]), request.query.get("since", "0"))
        return None

    def _static(self, name: str) -> Response | None:
        found = self.static_files.get(name)  # a dictionary lookup: no path is ever joined
        if found is None:
            return None
        body, content_type = found
        return Response(body, 200, content_type, _SECURITY_HEADERS)

    def _messages(self, room_name: str, since: str) -> Response:
        room = self.rooms.get(room_name)
        if room is None:
            return self._json({"error": "no such room"}, 404)
        if not since.isdigit() or len(since) > 12:
            return self._json({"error": "since must be a message id (an integer)"}, 400)
        return self._json(
            {
                "room": room.name,
                "epoch": room.epoch,
                "messages": room.since(int(since)),
                "server_time": _now_ms(),
            }
        )

    @staticmethod
    def _json(value: Any, status: int = 200) -> Response:
        response = Response.json(value, status)
        response.headers.extend(_SECURITY_HEADERS)
        return response

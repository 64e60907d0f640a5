"""``cablecar broadcast STREAM JSON --pubsub URL``: publish one message from a shell.

::

    $ cablecar broadcast chat_1 '{"body": "hello"}' --pubsub redis://127.0.0.1:6379/0
    cablecar: broadcast 17 bytes to 'chat_1'
    $ echo '{"body": "hi"}' | cablecar broadcast chat_1 - --pubsub nats://127.0.0.1:4222 -q

Exit status: 0 published, 1 the pub/sub service did not take the message, 2 bad
arguments (invalid JSON, ``memory://``, unknown URL scheme, missing extra).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

from . import _json
from ._cli_help import subcommand
from .broadcast import Broadcaster
from .config import CableConfig
from .errors import AdapterError, ConfigurationError

__all__ = ["add_subcommand", "run"]

_PROG = "cablecar broadcast"


def add_subcommand(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``broadcast`` on the ``cablecar`` command's subparsers."""
    parser = subcommand(
        subparsers, "broadcast",
        "publish one JSON message to a stream through Redis, PostgreSQL or NATS",
        "Publish one JSON message to STREAM through the pub/sub service the cablecar "
        "servers use; every subscriber of STREAM on every server receives it.",
    )  # fmt: skip
    parser.add_argument("stream", metavar="STREAM", help="the stream name, e.g. chat_1")
    parser.add_argument(
        "message", metavar="JSON", help="the message as JSON; '-' reads it from stdin"
    )
    parser.add_argument(
        "--pubsub",
        "--adapter",
        dest="pubsub",
        required=True,
        metavar="URL",
        help="the servers' pub/sub URL: redis://..., postgresql://... or nats://...",
    )
    parser.add_argument(
        "--channel-prefix", default=None, metavar="P", help="the servers' channel prefix, if any"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="give up after this long"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="the servers run with history=True: store the message for clients that are away",
    )
    # The defaults are the servers' own (CableConfig's), so they cannot drift apart.
    defaults = {f.name: f.default for f in dataclasses.fields(CableConfig)}
    for setting, kind, metavar in (("history_limit", int, "N"), ("history_ttl", float, "SECONDS")):
        parser.add_argument(
            "--" + setting.replace("_", "-"),
            type=kind,
            default=defaults[setting],
            metavar=metavar,
            help=f"the servers' {setting}",
        )
    parser.add_argument(
        "--exclude-socket",
        default=None,
        metavar="SID",
        help="a connection that must not receive it",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Publish ``args.message`` on ``args.stream``; returns the exit status."""
    text = sys.stdin.read() if args.message == "-" else args.message
    try:
        message = _json.loads(text)
    except _json.JSONDecodeError as exc:
        return _fail(2, f"the message is not valid JSON: {exc}")
    try:
        broadcaster = Broadcaster(
            args.pubsub,
            channel_prefix=args.channel_prefix,
            timeout=args.timeout,
            history=args.history,
            history_limit=args.history_limit,
            history_ttl=args.history_ttl,
            outbox_size=0,  # a one-shot command reports a failure instead of waiting
        )
    except ConfigurationError as exc:
        return _fail(2, str(exc))
    try:
        asyncio.run(_publish(broadcaster, args.stream, message, args.timeout, args.exclude_socket))
    except AdapterError as exc:
        return _fail(1, str(exc))
    except TimeoutError:
        return _fail(1, f"no answer from {args.pubsub.split('@')[-1]} within {args.timeout:g} s")
    if not args.quiet:
        size = len(_json.dumps(message))
        print(f"cablecar: broadcast {size} bytes to {args.stream!r}", file=sys.stderr)
    return 0


async def _publish(
    broadcaster: Broadcaster, stream: str, message: Any, timeout: float, exclude: str | None
) -> None:
    async with broadcaster:
        async with asyncio.timeout(timeout):
            await broadcaster.broadcast(stream, message, exclude_socket=exclude)


def _fail(code: int, message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return code

"""``cablecar listen`` and ``cablecar perform``: an Action Cable client for the shell.

::

    cablecar listen ws://127.0.0.1:8080/cable ChatChannel room=lobby --count 3
    cablecar perform ws://127.0.0.1:8080/cable ChatChannel room=lobby speak body=hi
    cablecar perform ws://127.0.0.1:8080/cable BenchmarkChannel echo n=1 --wait-reply

``key=value`` arguments are decoded as JSON when they parse (``n=1`` is the number 1,
``ok=true`` a boolean, ``room='"1"'`` the string "1") and taken as strings otherwise.
``listen`` prints each message as one JSON line. Exit status: 0 on success (and on Ctrl-C),
1 when the connection or subscription is refused or a wait times out, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cablecar._json import JSON
from cablecar.errors import ConnectionRejected, SubscriptionRejected

from .._cli_help import subcommand
from .consumer import Consumer, connect
from .subscription import SubscriptionClosed

__all__ = ["add_subcommand", "main", "parse_fields"]


def parse_fields(items: Sequence[str]) -> dict[str, JSON]:
    """Turn ``["room=1", "name=bob"]`` into ``{"room": 1, "name": "bob"}``.

    Raises:
        ValueError: an item has no ``=`` or an empty key.
    """
    fields: dict[str, JSON] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            fields[key] = json.loads(raw)
        except ValueError:
            fields[key] = raw
    return fields


def _headers(items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"expected --header Name:value, got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


def _consumer(args: argparse.Namespace) -> Consumer:
    return connect(
        args.url,
        headers=_headers(args.header),
        origin=args.origin,
        open_timeout=args.connect_timeout,
        subscribe_timeout=args.connect_timeout,
        send_timeout=args.connect_timeout,
    )


def _print(message: JSON) -> None:
    sys.stdout.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _fail(message: str) -> int:
    print(f"cablecar: {message}", file=sys.stderr, flush=True)
    return 1


async def _listen(args: argparse.Namespace) -> int:
    params = parse_fields(args.params)
    received = 0
    async with _consumer(args) as consumer:
        sub = await consumer.subscribe(args.channel, params)
        print(f"cablecar: subscribed to {sub.identifier}", file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(args.timeout):
                async for message in sub:
                    _print(message)
                    received += 1
                    if args.count is not None and received >= args.count:
                        return 0
        except TimeoutError:
            if args.count is None:
                return 0  # --timeout alone: listen for that long
            return _fail(f"timed out after {args.timeout} s ({received} of {args.count} messages)")
    reason = consumer.disconnect_reason
    return _fail(f"server disconnected ({reason})") if reason else 0


async def _perform(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    split = next((i for i, item in enumerate(rest) if "=" not in item), None)
    if split is None:
        raise ValueError("missing the action name (after the channel's key=value params)")
    params, action, data = parse_fields(rest[:split]), rest[split], parse_fields(rest[split + 1 :])
    async with _consumer(args) as consumer:
        sub = await consumer.subscribe(args.channel, params)
        if args.wait_reply:
            sub._discard_received()  # subscribed()'s transmissions came before the confirmation
        await sub.perform(action, data)
        if args.wait_reply:
            try:
                _print(await sub.receive(timeout=args.timeout))
            except TimeoutError:
                return _fail(f"no reply within {args.timeout} s")
        else:
            # Action Cable never acknowledges an action, and Rails drops the commands still
            # queued when a socket closes: give the server a moment before closing.
            await asyncio.sleep(args.linger)
    return 0


def _run(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return 0
    except ValueError as exc:
        print(f"cablecar: {exc}", file=sys.stderr, flush=True)
        return 2
    except ConnectionRejected as exc:
        return _fail(str(exc))
    except SubscriptionRejected as exc:
        return _fail(str(exc))
    except SubscriptionClosed as exc:
        return _fail(str(exc))
    except TimeoutError:
        return _fail(f"timed out waiting for {args.url} (--connect-timeout {args.connect_timeout})")
    except OSError as exc:
        return _fail(f"cannot connect to {args.url}: {exc}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the cable's URL, e.g. ws://127.0.0.1:8080/cable")
    parser.add_argument("channel", help="the channel's name, e.g. ChatChannel")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="an HTTP header for the upgrade request (repeatable)",
    )
    parser.add_argument("--origin", help="the Origin header (none by default)")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for welcome and for the confirmation",
    )


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``listen`` and ``perform`` on a ``cablecar`` command line.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    """
    listen = subcommand(
        subparsers, "listen", "subscribe to a channel and print its messages as JSON lines",
        "Subscribe to a channel and print every message as one JSON line.",
    )  # fmt: skip
    _common(listen)
    listen.add_argument("params", nargs="*", metavar="KEY=VALUE", help="identifier params")
    listen.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    listen.add_argument("--timeout", type=float, metavar="S", help="stop listening after S s")
    listen.set_defaults(func=lambda args: _run(_listen, args))

    perform = subcommand(
        subparsers, "perform", "subscribe to a channel and perform an action",
        "Subscribe, perform ACTION with KEY=VALUE data, optionally print the reply.",
        usage="%(prog)s [options] url channel [KEY=VALUE ...] ACTION [KEY=VALUE ...]",
    )  # fmt: skip
    _common(perform)
    perform.add_argument(
        "rest",
        nargs="+",
        metavar="[KEY=VALUE ...] ACTION [KEY=VALUE ...]",
        help="identifier params, the action, then the action's data",
    )
    perform.add_argument(
        "--wait-reply",
        action="store_true",
        help="print the first message the channel sends after the action (its reply)",
    )
    perform.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for the reply"
    )
    perform.add_argument(
        "--linger",
        type=float,
        default=0.5,
        metavar="S",
        help="without --wait-reply: seconds to stay connected after performing",
    )
    perform.set_defaults(func=lambda args: _run(_perform, args))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cablecar.client.cli listen|perform ...``."""
    parser = argparse.ArgumentParser(prog="cablecar", description="Action Cable client commands.")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

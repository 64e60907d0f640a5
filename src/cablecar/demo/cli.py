"""``cablecar demo``: run the chat room demo on the standalone server.

    cablecar demo --host 127.0.0.1 --port 8080 [--adapter redis://127.0.0.1:6379/0]

Also runnable as ``python -m cablecar.demo`` with the same options.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .._cli_help import add_server_options, subcommand

__all__ = ["add_subcommand", "main", "run_demo"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_options(parser)
    parser.add_argument(
        "--adapter",
        "--pubsub",
        dest="adapter",
        default="memory://",
        help="pub/sub URL: memory://, redis://..., postgresql://..., nats://...",
    )


def add_subcommand(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``demo`` on the ``cablecar`` command."""
    parser = subcommand(
        subparsers, "demo", "run the chat room demo: cablecar demo --port 8080",
        "Run the chat room demo and print the URL to open.",
    )  # fmt: skip
    _add_arguments(parser)
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Serve the demo until SIGINT/SIGTERM (a graceful shutdown); returns the exit status."""
    from ..errors import ConfigurationError
    from ..transports.standalone import Server, run
    from .app import DemoCable

    try:
        cable = DemoCable(pubsub=args.adapter)
    except ConfigurationError as exc:
        print(f"cablecar demo: {exc}", file=sys.stderr)
        return 2

    def ready(server: Server) -> None:
        host = args.host if args.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        print(f"cablecar demo: open http://{host}:{server.port}/", flush=True)
        print(f"  (pub/sub {args.adapter}, pid {os.getpid()}; Ctrl-C to stop)", flush=True)

    try:
        run(cable, args.host, args.port, http_handler=cable.http_handler, on_ready=ready)
    except OSError as exc:  # the port is taken, the address is not ours...
        print(f"cablecar demo: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print("cablecar demo: stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cablecar.demo [--host H] [--port P] [--adapter URL]``."""
    import logging

    parser = argparse.ArgumentParser(prog="python -m cablecar.demo", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_demo(args)

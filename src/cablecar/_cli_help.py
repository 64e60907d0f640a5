"""What every ``cablecar`` command shares: ``--help`` with each option's default shown, and
the options of the commands that run a server."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["HelpFormatter", "add_server_options", "subcommand"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with ``(default: X)`` after each option that has a default
    (not after flags, nor after options whose default is "not given" or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.help is None:
            return action.help
        return super()._get_help_string(action)


def subcommand(subparsers: Any, name: str, help: str, description: str, **kwargs: Any) -> Any:
    """``subparsers.add_parser`` with the shared help formatter."""
    return subparsers.add_parser(
        name, help=help, description=description, formatter_class=HelpFormatter, **kwargs
    )


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and ``--log-level`` (``serve`` and ``demo``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="the least severe log lines shown",
    )  # fmt: skip

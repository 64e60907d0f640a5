"""``--help`` for every ``cablecar`` command: each option's default shown, where it has one."""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with ``(default: X)`` after each option that has a default
    (not after flags, nor after options whose default is "not given" or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.help is None:
            return action.help
        return super()._get_help_string(action)

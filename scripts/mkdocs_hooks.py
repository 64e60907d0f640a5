"""MkDocs hooks for the docs site (mkdocs.yml).

The pages link to files of the repository outside docs/ (``../examples/chat_app.py``),
which read well on a code host but are not part of the site: there they become the path
in code, so the strict build checks every link that stays a link.
"""

from __future__ import annotations

import re
from typing import Any

_OUTSIDE = re.compile(r"\[([^\]\n]+)\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")


def _plain(match: re.Match[str]) -> str:
    text, path = match.group(1), match.group(2)
    return text if path in text else f"{text} (`{path}`)"


def on_page_markdown(markdown: str, **_kwargs: Any) -> str:
    """Links to repository files outside docs/ become their path, in code."""
    return _OUTSIDE.sub(_plain, markdown)

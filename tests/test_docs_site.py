"""The docs site (mkdocs.yml) builds in strict mode: every page in the nav, every link and
anchor between pages resolves, and the API reference is generated from the docstrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_site_builds_strictly_with_the_api_reference(tmp_path: Path) -> None:
    """mkdocs build --strict succeeds; the reference page documents Cable.broadcast and
    the errors; links to repository files outside docs/ show as their paths."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "reference" / "api" / "index.html").read_text()
    for name in ("broadcast_sync", "signed_stream_name", "OutboxFull", "PublishTimeout"):
        assert name in api, name
    home = (tmp_path / "index.html").read_text()
    assert "examples/chat_app.py" in home and 'href="../examples' not in home

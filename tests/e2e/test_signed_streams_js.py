"""The official @anycable/core client subscribes to cablecar's signed and public
streams (``streamFromSigned``, ``streamFrom``) and is refused forged names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cablecar.signing import StreamSigner

from ..conftest import free_port
from ..servers import ROOT, CablecarProcess
from ..test_signed_streams import SECRET, forged

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

APP = "tests/e2e/signed_app.py:cable"


def test_anycable_core_signed_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed names confirm and receive; tampered, truncated, wrong-secret, non-JSON and
    the other forgeries are rejected; ``stream_name`` only with public streams on."""
    monkeypatch.setenv("SIGNED_SECRET", SECRET)
    strict = CablecarProcess(free_port(), APP, log=tmp_path / "strict.log").start()
    monkeypatch.setenv("PUBLIC_STREAMS", "1")
    public = CablecarProcess(free_port(), APP, log=tmp_path / "public.log").start()
    names = tmp_path / "names.json"  # a file: the deep and huge forgeries outgrow an env var
    names.write_text(json.dumps({"good": StreamSigner(SECRET).sign("room/1"), "forged": forged()}))
    try:
        result = subprocess.run(
            ["node", "--test", "--test-timeout=60000", "signed_streams.test.mjs"],
            cwd=ROOT / "tests" / "js",
            env={**os.environ, "CABLE_URL": strict.url, "CABLE_URL_PUBLIC": public.url,
                 "NAMES_FILE": str(names)},
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        strict.stop()
        public.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# pass 2" in result.stdout and "# fail 0" in result.stdout, result.stdout[-3000:]

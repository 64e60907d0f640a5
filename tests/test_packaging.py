"""The distribution a user installs: built from this tree, checked by twine, installed in a
clean virtualenv, and run from there (the demo, and an example app served by the
installed ``cablecar`` command). The sdist carries what its own tests need."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from .conftest import free_port
from .servers import wait_port
from .timing import TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300,
        env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT)
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel (and only its own dependencies) installed."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv)
    wheel = next(dist.glob("*.whl"))
    run(venv / "bin" / "pip", "install", "--disable-pip-version-check", "-q", wheel)
    return venv


def test_the_distribution_is_named_for_pypi_and_passes_twine(dist: Path) -> None:
    """The sdist and wheel are cablecar_py-<version> (the import name stays cablecar), carry
    the MIT license and classifiers, and twine check passes."""
    names = sorted(p.name for p in dist.iterdir())
    assert len(names) == 2 and all(n.startswith("cablecar_py-") for n in names), names
    out = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert out.count("PASSED") == 2, out
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
        pkg_info = sdist.extractfile(next(m for m in sdist.getmembers()
                                          if m.name.endswith("/PKG-INFO")))  # fmt: skip
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    assert "License-Expression: MIT" in metadata and "Classifier: Typing :: Typed" in metadata
    for needed in ("LICENSE", "Makefile", "tests/conftest.py", "tests/services.py",
                   "tests/rawws.py", "tests/timing.py", "tests/core.py", "docs/index.md",
                   "examples/chat_app.py", "examples/conformance_app.py"):  # fmt: skip
        assert needed in members, needed
    assert not any("node_modules" in m or "__pycache__" in m for m in members)


def test_the_sdists_own_tests_run_against_its_own_code(dist: Path, tmp_path: Path) -> None:
    """The tests in the sdist, unpacked elsewhere, import the sdist's code and pass (the
    unit layers: protocol, framing, hub, session, subscription, architecture)."""
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        sdist.extractall(tmp_path, filter="data")
    tree = next(tmp_path.iterdir())
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    where = run(
        sys.executable, "-c", "import cablecar; print(cablecar.__file__)", cwd=tree, env=env
    )
    assert where.startswith(str(tree / "src")), where
    out = run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/protocol",
        "tests/transports/test_framing.py", "tests/test_hub.py", "tests/test_session.py",
        "tests/test_subscription.py", "tests/test_architecture.py", cwd=tree, env=env,
    )  # fmt: skip
    assert " passed" in out and "failed" not in out, out[-2000:]


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A working directory outside the repository, holding a copy of one example."""
    shutil.copy(ROOT / "examples" / "chat_app.py", tmp_path / "app.py")
    yield tmp_path


def test_the_installed_package_runs_the_demo_and_an_app(installed: Path, elsewhere: Path) -> None:
    """From the clean virtualenv, outside the repository: cablecar is imported from the
    install, `cablecar demo` serves its page, and `cablecar serve app.py:cable` serves the
    README's chat app to a WebSocket client."""
    python, cablecar = installed / "bin" / "python", installed / "bin" / "cablecar"
    where = run(python, "-c", "import cablecar; print(cablecar.__file__)", cwd=elsewhere)
    assert where.startswith(str(installed)), where
    demo_port, app_port = free_port(), free_port()
    procs = [
        subprocess.Popen([cablecar, "demo", "--port", str(demo_port)], cwd=elsewhere,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([cablecar, "serve", "app.py:cable", "--port", str(app_port)],
                         cwd=elsewhere, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        wait_port(demo_port)
        wait_port(app_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{demo_port}/", timeout=TIMEOUT) as page:
            assert page.status == 200 and b"cablecar" in page.read()
        assert asyncio.run(_chat(app_port)) == {"from": "ann", "body": "hi"}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(TIMEOUT)


async def _chat(port: int) -> object:
    ident = '{"channel":"ChatChannel","room":"1"}'
    async with connect(
        f"ws://127.0.0.1:{port}/cable?user=ann",
        subprotocols=["actioncable-v1-json"],  # type: ignore[list-item]
    ) as ws:
        async with asyncio.timeout(TIMEOUT):
            await ws.send(orjson.dumps({"command": "subscribe", "identifier": ident}).decode())
            data = orjson.dumps({"action": "speak", "body": "hi"}).decode()
            while True:
                frame = orjson.loads(await ws.recv())
                if frame.get("type") == "confirm_subscription":
                    await ws.send(orjson.dumps(
                        {"command": "message", "identifier": ident, "data": data}).decode())  # fmt: skip
                elif "message" in frame and frame.get("type") != "ping":
                    return frame["message"]

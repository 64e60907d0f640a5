"""The pytest plugin's fixtures, and the examples of docs/testing.md run as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cablecar import Cable
from cablecar.testing import ChannelTester
from cablecar.testing.pytest_plugin import StartServer

from .app import make_cable

ROOT = Path(__file__).resolve().parents[2]


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_documented_examples_pass_in_pytest_asyncio_strict_mode() -> None:
    """examples/testing (docs/testing.md) passes with asyncio_mode=strict."""
    result = _pytest("examples/testing", "-o", "asyncio_mode=strict", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed" in result.stdout


def test_every_python_snippet_of_docs_testing_md_is_an_excerpt_of_the_examples() -> None:
    """The page shows code that runs: each snippet appears verbatim in examples/testing."""
    page = (ROOT / "docs" / "testing.md").read_text()
    sources = [p.read_text() for p in sorted((ROOT / "examples" / "testing").glob("*.py"))]
    snippets = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(snippets) >= 10
    for snippet in snippets:
        assert any(snippet in source for source in sources), snippet


def test_without_a_cablecar_cable_fixture_the_error_says_what_to_write(tmp_path: Path) -> None:
    """Using cablecar_tester without a cablecar_cable fixture fails with a message saying what fixture to write."""
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.asyncio\nasync def test_x(cablecar_tester):\n    pass\n"
    )
    result = _pytest(cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "define a fixture named 'cablecar_cable' that returns it" in result.stdout


@pytest.mark.parametrize(
    "cablecar_cable", [make_cable, make_cable(ping_interval=60.0)], indirect=True
)
async def test_the_cable_can_be_chosen_by_indirect_parametrization(
    cablecar_tester: ChannelTester, cablecar_cable: Cable
) -> None:
    """cablecar_tester runs the cable chosen by indirect parametrization, started."""
    assert cablecar_tester.cable is cablecar_cable and cablecar_cable.running
    conn = cablecar_tester.stub_connection(current_user="bob")
    assert (await conn.subscribe("ChatChannel", room="1")).confirmed


@pytest.mark.cablecar(raise_errors=False, timeout=2.0)
@pytest.mark.parametrize("cablecar_cable", [make_cable], indirect=True)
async def test_the_cablecar_marker_sets_the_testers_options(
    cablecar_tester: ChannelTester,
) -> None:
    """The cablecar marker's options reach the tester (raise_errors, timeout)."""
    assert cablecar_tester.raise_errors is False
    assert cablecar_tester.timeout == 2.0


async def test_cablecar_server_restarts_a_cable_an_earlier_server_stopped(
    cablecar_server: StartServer,
) -> None:
    """A module-level cable can be served by one test after another."""
    cable = make_cable()
    first = await cablecar_server(cable)
    await first.close()
    assert not cable.running
    second = await cablecar_server(cable)
    assert cable.running and second.port > 0

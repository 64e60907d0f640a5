"""The shared Action Cable conformance suite (official @rails/actioncable and @anycable/core
clients, raw sockets) against real cablecar servers, including a server restart: the
standalone server (plain, and with history) and the ASGI mount under uvicorn.

The three runs go at once (they spend most of their time waiting on the suite's own
timeouts), each against its own server on its own port, in its own working folder."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..asgi_servers import ASGIProcess
from ..conftest import free_port
from ..servers import (
    CONFORMANCE,
    CablecarProcess,
    ServerProcess,
    conformance_home,
    run_conformance_suite,
)

pytestmark = [
    pytest.mark.node,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not CONFORMANCE.exists(), reason="../shared/conformance is not beside the repo"
    ),
]

#: name -> (the server, the module whose ``start``/``stop`` restart it, its start arguments)
RUNS: dict[str, tuple[Callable[[int, Path], ServerProcess], str, tuple[str, ...]]] = {
    "standalone": (
        lambda port, log: CablecarProcess(port, log=log, env={"CABLE_HISTORY": ""}),
        "tests.servers",
        (),
    ),
    # Plain Action Cable clients see the same protocol when history is on.
    "standalone-history": (
        lambda port, log: CablecarProcess(port, log=log, env={"CABLE_HISTORY": "1"}),
        "tests.servers",
        (),
    ),
    # ``app.mount("/cable", cable.asgi())`` in Starlette, under uvicorn.
    "starlette-mount": (
        lambda port, log: ASGIProcess(port, "uvicorn", "mounted", log=log),
        "tests.asgi_servers",
        ("uvicorn", "mounted"),
    ),
}


@pytest.fixture(scope="module")
def conformance_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BaseException | None]:
    """Every run, started together; what each raised (``None``: it passed)."""
    # Made here, before the threads: npm installs once, and pytest's temporary folders
    # are not made safely from several threads at once.
    homes = {name: conformance_home(name) for name in RUNS}
    tmps = {name: tmp_path_factory.mktemp(name) for name in RUNS}

    def run(name: str) -> None:
        make, control, extra = RUNS[name]
        tmp = tmps[name]
        server = make(free_port(), tmp / "server.log").start()
        run_conformance_suite(server, control, tmp, *extra, home=homes[name])

    with ThreadPoolExecutor(len(RUNS)) as pool:
        futures = {name: pool.submit(run, name) for name in RUNS}
    return {name: future.exception() for name, future in futures.items()}


@pytest.mark.parametrize("name", RUNS)
def test_conformance_suite_passes(
    name: str, conformance_runs: dict[str, BaseException | None]
) -> None:
    """Every conformance test passes against this server; the run ends with
    'N passed, 0 failed'."""
    error = conformance_runs[name]
    if error is not None:
        raise error

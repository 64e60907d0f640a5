"""pytest fixtures for applications built on cablecar (registered through ``pytest11``,
so they are available as soon as cablecar is installed).

``cablecar_tester``: a started :class:`~cablecar.testing.ChannelTester` for the cable
that your ``cablecar_cable`` fixture returns::

    # conftest.py
    @pytest.fixture
    def cablecar_cable():
        return make_cable()          # or: return myapp.cable

    # test_chat.py
    async def test_speak(cablecar_tester):
        conn = await cablecar_tester.connect(query={"user": "bob"})
        ...

Choose the cable per test with indirect parametrization
(``@pytest.mark.parametrize("cablecar_cable", [cable_a, make_cable_b], indirect=True)``;
a callable is called) and the tester's options with a marker
(``@pytest.mark.cablecar(raise_errors=False, pubsub="memory://")``).

``cablecar_server``: start a real standalone server for a cable on a free port::

    async def test_chat(cablecar_server):
        server = await cablecar_server(cable)
        async with cablecar.client.connect(server.url + "?user=bob") as consumer:
            ...

Both are async fixtures declared with ``pytest_asyncio.fixture`` when pytest-asyncio
is installed, so they work in its ``strict`` and ``auto`` modes alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from ..cable import Cable
    from ..transports.standalone import Server
    from ._tester import ChannelTester

__all__ = [
    "StartServer",
    "cablecar_cable",
    "cablecar_server",
    "cablecar_tester",
    "pytest_configure",
]

#: The type of the ``cablecar_server`` fixture: ``await cablecar_server(cable, **kwargs)``.
StartServer = Callable[..., Awaitable["Server"]]

F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(fn: F) -> F:
    try:
        import pytest_asyncio
    except ImportError:  # anyio's plugin, or another runner, handles async fixtures
        return cast(F, pytest.fixture(fn))
    return cast(F, pytest_asyncio.fixture(fn))


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``cablecar`` marker (for ``--strict-markers``)."""
    config.addinivalue_line(
        "markers",
        "cablecar(**options): options of the cablecar_tester fixture's ChannelTester "
        "(timeout, virtual_time, raise_errors, pubsub)",
    )


@pytest.fixture
def cablecar_cable(request: pytest.FixtureRequest) -> Cable:
    """The cable ``cablecar_tester`` tests: override this fixture (in conftest.py or
    the test module) to return yours, or parametrize it indirectly."""
    if hasattr(request, "param"):
        from ..cable import Cable

        value = request.param
        cable = value if isinstance(value, Cable) else value()
        if not isinstance(cable, Cable):
            raise TypeError(f"cablecar_cable parameter is not a Cable: {cable!r}")
        return cable
    pytest.fail(
        "cablecar_tester needs to know your cable: define a fixture named "
        "'cablecar_cable' that returns it, e.g. in conftest.py:\n\n"
        "    @pytest.fixture\n"
        "    def cablecar_cable():\n"
        "        return make_cable()\n",
        pytrace=False,
    )


@_async_fixture
async def cablecar_tester(
    cablecar_cable: Cable, request: pytest.FixtureRequest
) -> AsyncIterator[ChannelTester]:
    """A started :class:`~cablecar.testing.ChannelTester` for ``cablecar_cable``,
    closed after the test (connections closed, the cable stopped)."""
    from ._tester import ChannelTester

    marker = request.node.get_closest_marker("cablecar")
    options = dict(marker.kwargs) if marker is not None else {}
    tester = ChannelTester(cablecar_cable, **options)
    await tester.start()
    try:
        yield tester
    finally:
        await tester.close()


@_async_fixture
async def cablecar_server() -> AsyncIterator[StartServer]:
    """A factory: ``server = await cablecar_server(cable, http_handler=None)`` starts a
    real standalone server on 127.0.0.1 and a free port (``server.url`` is its
    ``ws://`` URL, ``server.port`` its port); every server it started is closed after
    the test."""
    from ..transports.standalone import serve
    from ._cable import make_startable

    servers: list[Server] = []

    async def start(cable: Cable, **kwargs: Any) -> Server:
        make_startable(cable)  # a module-level cable that an earlier test stopped
        server = await serve(cable, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.close(timeout=1.0)

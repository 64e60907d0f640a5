"""Session-scoped throwaway services, as pytest fixtures.

Loaded for the whole suite by ``pytest_plugins = ["tests.services_fixtures"]`` in
``tests/conftest.py``. Each fixture starts its server once per session on a free port
(skipping the test if the binary is missing) and stops it at the end:

* ``redis_server``    -> :class:`tests.services.RedisServer`    (``.url``: ``redis://127.0.0.1:P/0``)
* ``postgres_server`` -> :class:`tests.services.PostgresServer` (``.url``: ``postgresql://postgres@127.0.0.1:P/postgres``)
* ``nats_server``     -> :class:`tests.services.NatsServer`     (``.url``: ``nats://127.0.0.1:P``)

A test that stops a session server must start it again (``try/finally``; ``start()``
is idempotent). Tests that want a broker of their own (to kill it, say) use the
classes directly: ``with RedisServer() as redis: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import NatsServer, PostgresServer, RedisServer, Service, ServiceUnavailable

__all__ = ["nats_server", "postgres_server", "redis_server"]


def _session_service(cls: type[Service]) -> Iterator[Service]:
    try:
        server = cls()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Service]:
    """A redis-server shared by the session."""
    yield from _session_service(RedisServer)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Service]:
    """A PostgreSQL cluster shared by the session (trust auth, user ``postgres``)."""
    yield from _session_service(PostgresServer)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Service]:
    """A nats-server shared by the session."""
    yield from _session_service(NatsServer)

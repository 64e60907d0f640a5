"""cablecar.testing: virtual time for timers, errors from channel code, the tester's
lifecycle around the cable."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cablecar import Cable
from cablecar.testing import ChannelTester, VirtualClock
from cablecar.testing.pytest_plugin import StartServer

from .app import GATES, events, make_cable

# -- virtual time --------------------------------------------------------------------------


async def test_advance_fires_due_timers_in_time_order_without_sleeping() -> None:
    """Two timers (every 1 s and every 2.5 s), five virtual seconds, no real waiting."""
    async with ChannelTester(make_cable()) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ClockChannel")
        await asyncio.sleep(0.05)
        assert sub.transmissions == []  # real time does not move timers
        loop = asyncio.get_running_loop()
        started = loop.time()
        await t.advance(5)
        assert loop.time() - started < 1.0
        assert t.now == 5.0
        assert sub.transmissions == [
            {"second": 1},
            {"second": 2},
            {"slow": True},
            {"second": 3},
            {"second": 4},
            {"slow": True},
            {"second": 5},
        ]


async def test_timers_stop_when_the_subscription_ends() -> None:
    """Virtual time fires a timer on advance() and not after unsubscribe; time cannot go back."""
    async with ChannelTester(make_cable()) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ClockChannel")
        await t.advance(1.5)
        await sub.unsubscribe()
        await t.advance(10)
        assert sub.transmissions == [{"second": 1}]
        with pytest.raises(ValueError, match="time only moves forward"):
            await t.advance(-1)


async def test_real_timers_with_virtual_time_off() -> None:
    """With virtual_time=False timers run on real time and advance() says why it cannot be used."""
    async with ChannelTester(make_cable(), virtual_time=False) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ClockChannel")
        await t.wait_until(lambda: len(sub.transmissions) >= 1, timeout=5)
        assert sub.transmissions[0] == {"second": 1}
        with pytest.raises(RuntimeError, match="virtual_time=False"):
            await t.advance(1)


def test_the_virtual_clock_runs_calls_in_order_and_skips_cancelled_ones() -> None:
    """The virtual clock runs due calls in time order and skips cancelled ones."""
    clock = VirtualClock()
    calls: list[str] = []
    clock.call_later(2, calls.append, "b")
    clock.call_later(1, calls.append, "a")
    clock.call_later(1.5, calls.append, "x").cancel()
    clock.call_later(3, calls.append, "late")
    clock.run_until(2)
    assert calls == ["a", "b"]
    assert clock.time() == 2
    assert [t.when() for t in clock.pending] == [3]


# -- errors from channel code --------------------------------------------------------------


async def test_an_exception_in_an_action_is_raised_by_perform(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server logs it and goes on; the test sees it raised where it happened."""
    async with ChannelTester(make_cable()) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ChatChannel", room="1")
        with caplog.at_level(logging.CRITICAL), pytest.raises(ValueError) as info:
            await sub.perform("boom")
        assert str(info.value) == "boom in an action"
        assert "(raised by ChatChannel#boom; re-raised by cablecar.testing)" in (
            info.value.__notes__
        )
        assert t.errors == [info.value]
        assert await sub.perform("speak", body="still here") == [
            {"from": "bob", "body": "still here"},
            {"ok": True},
        ]


async def test_exceptions_handled_by_rescue_from_are_not_raised() -> None:
    """An exception handled by rescue_from becomes the reply and is not recorded as an error."""
    async with ChannelTester(make_cable()) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ChatChannel", room="1")
        assert await sub.perform("lookup", key="a") == [{"found": 1}]
        assert await sub.perform("lookup", key="zz") == [{"error": "no such key: zz"}]
        assert t.errors == []


async def test_raise_errors_false_only_records_them(caplog: pytest.LogCaptureFixture) -> None:
    """With raise_errors=False an action's exception is recorded in tester.errors, not raised."""
    async with ChannelTester(make_cable(), raise_errors=False) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ChatChannel", room="1")
        with caplog.at_level(logging.CRITICAL):
            await sub.perform("boom")
        assert [str(e) for e in t.errors] == ["boom in an action"]


async def test_an_exception_in_connect_is_raised_by_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception in connect() is raised by tester.connect() with a note naming where it came from."""
    async with ChannelTester(make_cable()) as t:
        with caplog.at_level(logging.CRITICAL), pytest.raises(RuntimeError) as info:
            await t.connect(query={"user": "crash"})
        assert str(info.value) == "the user database is down"
        assert "(raised by AppConnection#connect; re-raised by cablecar.testing)" in (
            info.value.__notes__
        )


async def test_an_action_that_never_returns_fails_with_a_timeout() -> None:
    """An action that never returns makes perform() fail with a TimeoutError that says why."""
    gate = asyncio.Event()
    GATES.append(gate)
    async with ChannelTester(make_cable(), timeout=0.2) as t:
        sub = await t.stub_connection(current_user="bob").subscribe("ChatChannel", room="1")
        with pytest.raises(TimeoutError) as info:
            await sub.perform("wait")
        assert str(info.value) == (
            "the server is still handling commands after 0.2s "
            "(an action, callback or connect() that does not return?)"
        )
        gate.set()


# -- lifecycle -----------------------------------------------------------------------------


async def test_the_tester_starts_and_stops_the_cable_and_it_can_be_tested_again() -> None:
    """One module-level cable, several tests: each tester leaves it startable."""
    cable = make_cable()
    for user in ("bob", "carol"):
        async with ChannelTester(cable) as t:
            assert cable.running
            conn = await t.connect(query={"user": user})
            await conn.subscribe("ChatChannel", room="1")
        assert not cable.running
    assert events == [
        "unsubscribed bob 1",
        "disconnect bob",
        "unsubscribed carol 1",
        "disconnect carol",
    ]


def test_a_cable_can_be_tested_under_a_new_event_loop_each_time() -> None:
    """One cable can be tested under asyncio.run() twice, each on its own event loop."""
    cable = make_cable()

    async def once(user: str) -> list[object]:
        async with ChannelTester(cable) as t:
            sub = await t.stub_connection(current_user=user).subscribe("ChatChannel", room="1")
            return await sub.perform("speak", body=user)

    assert asyncio.run(once("bob"))[0] == {"from": "bob", "body": "bob"}
    assert asyncio.run(once("carol"))[0] == {"from": "carol", "body": "carol"}


async def test_a_running_cable_is_left_running(cablecar_server: StartServer) -> None:
    """With a real server on the same cable, the tester only adds its own connections."""
    cable = make_cable()
    server = await cablecar_server(cable)
    async with ChannelTester(cable) as t:
        await t.connect(query={"user": "bob"})
        assert len(cable.connections) == 1
    assert cable.running and cable.connections == []
    assert cable.timer_clock is None
    assert server.port > 0


async def test_pubsub_override_tests_a_redis_app_without_redis() -> None:
    """pubsub="memory://" swaps the adapter while the tester runs (Rails' test adapter)."""
    pytest.importorskip("redis")
    cable = Cable(channels=make_cable().channels.values(), pubsub="redis://127.0.0.1:9/0")
    original = cable.pubsub
    async with ChannelTester(cable, pubsub="memory://") as t:
        sub = await t.stub_connection().subscribe("SyncChannel")
        await sub.perform("shout", text="hi")
        t.assert_broadcast_on("sync", {"shout": "HI"})
        assert sub.transmissions == [{"shout": "HI"}, {"shouted": True}]
    assert cable.pubsub is original and not cable.running

"""Test your channels and connections: in-process, through the real server core.

Example::

    from cablecar.testing import ChannelTester

    async def test_speak():
        async with ChannelTester(cable) as t:
            conn = await t.connect(query={"user": "bob"})
            sub = await conn.subscribe("ChatChannel", room="1")
            assert sub.confirmed
            sub.assert_has_stream("chat_1")
            with t.capture_broadcasts("chat_1") as messages:
                await sub.perform("speak", body="hi")
            assert messages == [{"from": "bob", "body": "hi"}]

The pytest plugin (installed with cablecar, see :mod:`cablecar.testing.pytest_plugin`)
adds the fixtures ``cablecar_tester`` (a started :class:`ChannelTester` for the cable
your ``cablecar_cable`` fixture returns) and ``cablecar_server`` (a real server on a
free port). See docs/testing.md.
"""

from __future__ import annotations

from ._broadcasts import BroadcastLog, RecordingPubSub
from ._client import TestConnection, TestSubscription
from ._clock import VirtualClock, VirtualTimer
from ._sink import RecordingSink
from ._tester import ChannelTester

__all__ = [
    "BroadcastLog",
    "ChannelTester",
    "RecordingPubSub",
    "RecordingSink",
    "TestConnection",
    "TestSubscription",
    "VirtualClock",
    "VirtualTimer",
]

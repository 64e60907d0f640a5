"""Drive the official ``@rails/actioncable`` client (under Node, from tests/js) once:
connect, subscribe, perform one action, report the first message received.

The WebSocket adapter adds a ``Cookie`` header when given one, as a browser sends the
site's cookies with the handshake (Node's ``ws`` does not do that by itself).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from ..servers import ROOT

JS = ROOT / "tests" / "js"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "@rails" / "actioncable").is_dir(),
    reason="node or tests/js/node_modules/@rails/actioncable is missing",
)

SCRIPT = r"""
import { createRequire } from 'node:module';
const require = createRequire(process.cwd() + '/');
const WS = require('ws');
const env = process.env;
const headers = env.CABLE_COOKIE ? { Cookie: env.CABLE_COOKIE } : {};
class BrowserWebSocket extends WS { constructor(url, protocols) { super(url, protocols, { headers }); } }
globalThis.WebSocket = BrowserWebSocket;
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
const ActionCable = require('@rails/actioncable');
ActionCable.adapters.WebSocket = BrowserWebSocket;
const consumer = ActionCable.createConsumer(env.CABLE_URL);
if (env.CABLE_SUBPROTOCOL) consumer.addSubProtocol(env.CABLE_SUBPROTOCOL);
const timer = setTimeout(() => done({ error: 'timeout' }), 10000);
function done(result) {
  clearTimeout(timer);
  consumer.disconnect();
  console.log(JSON.stringify(result));
  process.exit(0);
}
consumer.subscriptions.create(JSON.parse(env.CABLE_IDENTIFIER), {
  connected() { this.perform(env.CABLE_ACTION, JSON.parse(env.CABLE_DATA)); },
  rejected() { done({ rejected: true }); },
  disconnected(arg) { if (arg && arg.willAttemptReconnect === false) done({ disconnected: arg }); },
  received(data) { done({ received: data, protocol: consumer.connection.getProtocol() }); },
});
"""


def official_client(
    url: str,
    identifier: dict[str, Any],
    action: str,
    data: dict[str, Any],
    cookie: str | None = None,
    subprotocol: str | None = None,
) -> dict[str, Any]:
    """Run the official client once (``subprotocol``: ``consumer.addSubProtocol(...)``); ``{"received": ..., "protocol": ...}``,
    ``{"rejected": true}`` or ``{"disconnected": {"willAttemptReconnect": false}}``."""
    env = {
        **os.environ,
        "CABLE_URL": url,
        "CABLE_IDENTIFIER": json.dumps(identifier),
        "CABLE_ACTION": action,
        "CABLE_DATA": json.dumps(data),
        "CABLE_COOKIE": cookie or "",
        "CABLE_SUBPROTOCOL": subprotocol or "",
    }
    result = subprocess.run(
        ["node", "--input-type=module", "-e", SCRIPT],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


async def assert_refused(url: str) -> None:
    """A connection to ``url`` without credentials is refused as unauthorized."""
    import cablecar.client
    from cablecar.errors import ConnectionRejected

    with pytest.raises(ConnectionRejected) as info:
        async with cablecar.client.connect(url, reconnect=False):
            pass
    assert info.value.reason == "unauthorized"

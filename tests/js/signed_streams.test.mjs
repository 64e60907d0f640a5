// Signed and public streams with the official @anycable/core client against cablecar's
// $pubsub channel (tests/e2e/signed_app.py). Driven by tests/e2e/test_signed_streams_js.py:
//   CABLE_URL         a server with streams_secret (public streams off)
//   CABLE_URL_PUBLIC  the same app with public_streams=True
//   NAMES_FILE        a JSON file: {"good": <signed "room/1">, "forged": {kind: name}}
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { sleep, until } from './helpers.mjs';
import { createCable } from '@anycable/core';

const NAMES = JSON.parse(readFileSync(process.env.NAMES_FILE, 'utf8'));

function client(url) {
  return createCable(url, {
    protocol: 'actioncable-v1-json',  // the default of @anycable/web; no history needed
    websocketImplementation: WebSocket,
    logLevel: 'error',
    reconnectStrategy: () => 200,
  });
}


async function publish(cable, stream, message) {
  const control = cable.subscribeTo('ControlChannel');
  await control.ensureSubscribed();
  await control.perform('publish', { stream, message });
  control.disconnect();
}

test('streamFromSigned confirms and receives broadcasts; forged names are rejected', async () => {
  const cable = client(process.env.CABLE_URL);
  try {
    const channel = cable.streamFromSigned(NAMES.good);
    const got = [];
    channel.on('message', (m) => got.push(m));
    await channel.ensureSubscribed();
    assert.equal(channel.state, 'connected');
    for (const [kind, name] of Object.entries(NAMES.forged)) {
      const forged = cable.streamFromSigned(name);
      await assert.rejects(forged.ensureSubscribed(), /rejected/i, kind);
      assert.equal(forged.state, 'closed', kind);
    }
    const publicChannel = cable.streamFrom('room/1');
    await assert.rejects(publicChannel.ensureSubscribed(), /rejected/i, 'public stream_name');
    await publish(cable, 'room/1', { body: 'hello' });
    await until(() => got.length === 1, 5000, 'the broadcast');
    assert.deepEqual(got, [{ body: 'hello' }]);
    assert.equal(cable.state, 'connected');
  } finally {
    cable.disconnect();
  }
});

test('public stream_name is accepted when public streams are enabled', async () => {
  const cable = client(process.env.CABLE_URL_PUBLIC);
  try {
    const channel = cable.streamFrom('lobby');
    const got = [];
    channel.on('message', (m) => got.push(m));
    await channel.ensureSubscribed();
    const signed = cable.streamFromSigned(NAMES.good);
    await signed.ensureSubscribed();
    await publish(cable, 'lobby', 'open');
    await until(() => got.length === 1, 5000, 'the public broadcast');
    assert.deepEqual(got, ['open']);
  } finally {
    cable.disconnect();
  }
});

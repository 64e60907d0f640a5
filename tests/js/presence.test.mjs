// Presence and whisper with the official @anycable/web client (extended protocol) against
// cablecar with history=True (tests/e2e/reliable_app.py, presence_ttl 2 s).
// Driven by tests/e2e/test_presence_js.py, which passes:
//   CABLE_URL   one server on memory://
//   CLUSTER     JSON {"url1", "url2", "pid1"}: two servers sharing Redis (when set)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { sleep, until } from './helpers.mjs';
import { createCable } from '@anycable/web';

const nonce = Math.random().toString(36).slice(2);
const cables = [];


function client(url, user) {
  const cable = createCable(`${url}?user=${user}`, {
    protocol: 'actioncable-v1-ext-json',
    websocketImplementation: WebSocket,
    logLevel: 'error',
    reconnectStrategy: () => 200,
  });
  cables.push(cable);
  return cable;
}

// A channel that records its presence events and messages.
async function join(cable, channelName, room) {
  const channel = cable.subscribeTo(channelName, { room });
  channel.events = [];
  channel.messages = [];
  channel.on('presence', (m) => channel.events.push(m));
  channel.on('message', (m) => channel.messages.push(m));
  await channel.ensureSubscribed();
  return channel;
}

const kinds = (ch, type) => ch.events.filter((e) => e.type === type).map((e) => e.id);

test.after(() => { for (const c of cables) c.disconnect(); });

test('join, info, leave on unsubscribe; one member for two sessions of one id', async () => {
  const url = process.env.CABLE_URL;
  const room = `p-${nonce}`;
  const [a, a2, b] = [client(url, 'ann'), client(url, 'ann'), client(url, 'bob')];
  const chB = await join(b, 'ChatChannel', room);
  const chA = await join(a, 'ChatChannel', room);
  await chA.presence.join('ann', { name: 'Ann' });
  await until(() => kinds(chB, 'join').includes('ann'), 5000, "B sees ann's join", () => chB.events);
  assert.deepEqual(chB.events.find((e) => e.type === 'join'), { type: 'join', id: 'ann', info: { name: 'Ann' } });
  assert.deepEqual(await chB.presence.info(), { ann: { name: 'Ann' } });

  // A second session of the same id: no second join; its leave is silent.
  const chA2 = await join(a2, 'ChatChannel', room);
  await chA2.presence.join('ann', { name: 'Ann' });
  await sleep(300);
  assert.deepEqual(kinds(chB, 'join'), ['ann']);
  chA2.disconnect();
  await sleep(300);
  assert.deepEqual(kinds(chB, 'leave'), []);

  // The last session unsubscribes: one leave.
  chA.disconnect();
  await until(() => kinds(chB, 'leave').includes('ann'), 5000, "B sees ann's leave", () => chB.events);
  assert.deepEqual(kinds(chB, 'leave'), ['ann']);
  assert.deepEqual(await chB.presence.info(), {});
});

test('info() on a channel without presence settles with an error', async () => {
  const cable = client(process.env.CABLE_URL, 'cid');
  const plain = await join(cable, 'PlainChannel', `q-${nonce}`);
  await assert.rejects(plain.presence.info(), /presence/i);
});

test('whisper reaches the other two subscribers, never the sender', async () => {
  const url = process.env.CABLE_URL;
  const room = `w-${nonce}`;
  const [x, y, z] = await Promise.all(['xa', 'ya', 'za'].map((u) => join(client(url, u), 'ChatChannel', room)));
  const plain = await join(client(url, 'pa'), 'PlainChannel', room);
  x.whisper({ event: 'typing', from: 'xa' });
  plain.whisper({ event: 'nowhere' });
  await until(() => y.messages.length && z.messages.length, 5000, 'the whisper');
  await sleep(500);
  assert.deepEqual(y.messages, [{ event: 'typing', from: 'xa' }]);
  assert.deepEqual(z.messages, [{ event: 'typing', from: 'xa' }]);
  assert.deepEqual(x.messages, []);
  assert.deepEqual(plain.messages, []);
});

test('cluster: a member on node 1 is seen on node 2 and leaves when node 1 is SIGKILLed', { skip: !process.env.CLUSTER }, async () => {
  const { url1, url2, pid1 } = JSON.parse(process.env.CLUSTER);
  const room = `c-${nonce}`;
  const watcher = await join(client(url2, 'wat'), 'ChatChannel', room);
  const member = await join(client(url1, 'mem'), 'ChatChannel', room);
  await member.presence.join('mem', { node: 1 });
  await until(() => kinds(watcher, 'join').includes('mem'), 5000, 'the join across nodes', () => watcher.events);
  assert.deepEqual(await watcher.presence.info(), { mem: { node: 1 } });
  const killed = Date.now();
  process.kill(pid1, 'SIGKILL');
  // presence_ttl is 2 s; the sweep runs every second.
  await until(() => kinds(watcher, 'leave').includes('mem'), 8000, 'the leave after SIGKILL', () => watcher.events);
  const took = Date.now() - killed;
  assert.ok(took >= 1000, `left ${took} ms after the kill: before the TTL?`);
  assert.deepEqual(await watcher.presence.info(), {});
});

// The official @anycable/core client on the extended protocol against cablecar with
// history=True (tests/e2e/reliable_app.py): nothing lost, nothing twice, in order.
// Driven by tests/e2e/test_anycable_ext.py, which starts the servers and passes:
//   CABLE_URL          a server on memory:// (history_limit 100)
//   CABLE_URL_LIMITED  a server on memory:// with history_limit 3
//   CLUSTER            JSON: {"kind", "url1", "url2", "pid1", "pubsub", "prefix", "python"}
//                      two servers sharing a broker (scenario b), when set
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import { sleep, until } from './helpers.mjs';
import { createCable } from '@anycable/core';

const nonce = Math.random().toString(36).slice(2);


// A TCP proxy we can cut: the client's connection dies without a close frame, and new
// connections are refused until resume(); its target can change (another node).
function proxy(targetPort) {
  const sockets = new Set();
  let target = targetPort;
  let open = true;
  const server = net.createServer((client) => {
    if (!open) { client.destroy(); return; }
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client); sockets.add(upstream);
    client.pipe(upstream); upstream.pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', end); upstream.on('error', end); client.on('close', end); upstream.on('close', end);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port,
    cut() { open = false; for (const s of sockets) s.destroy(); sockets.clear(); },
    resume(newTarget) { if (newTarget) target = newTarget; open = true; },
    close() { for (const s of sockets) s.destroy(); server.close(); },
  })));
}

const portOf = (url) => Number(new URL(url).port);
const viaProxy = (url, p) => url.replace(/:\d+\//, `:${p.port}/`);

function client(url, user, extra = {}) {
  return createCable(`${url}?user=${user}`, {
    protocol: 'actioncable-v1-ext-json',
    websocketImplementation: WebSocket,
    logLevel: 'error',
    // Reconnect fast: the default backoff would stretch a test to minutes.
    reconnectStrategy: () => 200,
    ...extra,
  });
}

// Subscribes and records every message ({n}) with its meta, and info/connect events.
async function listen(cable, room) {
  const got = [];
  const events = [];
  const channel = cable.subscribeTo('ChatChannel', { room });
  channel.on('message', (msg, meta) => got.push({ n: msg.n, offset: meta && meta.offset, epoch: meta && meta.epoch }));
  channel.on('info', (e) => events.push({ info: e.type }));
  channel.on('connect', (e) => events.push({ connect: e }));
  await channel.ensureSubscribed();
  return { channel, got, events };
}

function assertExactlyOnceInOrder(got, expected) {
  assert.deepEqual(got.map((m) => m.n), expected, 'every message exactly once, in order');
  for (let i = 1; i < got.length; i++) {
    assert.ok(got[i].offset > got[i - 1].offset, `offsets increase: ${JSON.stringify(got)}`);
  }
}

async function speaker(url, room) {
  const cable = client(url, 'speaker');
  const channel = cable.subscribeTo('ChatChannel', { room });
  await channel.ensureSubscribed();
  return { cable, say: (n) => channel.perform('speak', { n }) };
}

// A subscriber `user` on url through a proxy we can cut, and a speaker in `room` straight to url.
async function behindProxy(url, user, room) {
  const p = await proxy(portOf(url));
  const cable = client(viaProxy(url, p), user);
  const pub = await speaker(url, room);
  return { p, cable, pub, close() { cable.disconnect(); pub.cable.disconnect(); p.close(); } };
}

// Once sub has message 0, its connection is cut while 1..10 are said, and let back pauseMs later.
async function missTen({ p, pub }, sub, pauseMs) {
  await pub.say(0);
  await until(() => sub.got.length === 1, 5000, 'the first message');
  p.cut();
  for (let n = 1; n <= 10; n++) await pub.say(n);
  await sleep(pauseMs);
  p.resume();
}

test('a: a TCP cut while 10 are broadcast: the session is restored, the 10 arrive once, then live', async () => {
  const room = `a-${nonce}`;
  const scene = await behindProxy(process.env.CABLE_URL, 'ann', room);
  const { pub } = scene;
  try {
    const sub = await listen(scene.cable, room);
    await missTen(scene, sub, 2000);
    await until(() => sub.events.some((e) => e.connect && e.connect.restored), 10000, 'a restored session');
    await until(() => sub.got.length === 11, 10000, 'the missed messages', () => ({ got: sub.got, events: sub.events }));
    await pub.say(11);
    await until(() => sub.got.length === 12, 5000, 'a live message');
    await sleep(200);
    assertExactlyOnceInOrder(sub.got, [...Array(12).keys()]);
  } finally { scene.close(); }
});

test('c: a new subscriber with historyTimestamp gets what came after it', async () => {
  const url = process.env.CABLE_URL;
  const room = `c-${nonce}`;
  const pub = await speaker(url, room);
  const since = Math.floor(Date.now() / 1000);
  try {
    for (let n = 0; n < 3; n++) await pub.say(n);
    await sleep(100);
    const cable = client(url, 'late', { historyTimestamp: since });
    try {
      const sub = await listen(cable, room);
      await until(() => sub.events.some((e) => e.info === 'history_received'), 5000, 'history_received');
      await pub.say(3);
      await until(() => sub.got.length === 4, 5000, 'the history and a live one');
      assertExactlyOnceInOrder(sub.got, [0, 1, 2, 3]);
    } finally { cable.disconnect(); }
  } finally { pub.cable.disconnect(); }
});

test('c: a gap beyond the history limit gets reject_history (history_not_found)', async () => {
  const room = `lim-${nonce}`;
  const scene = await behindProxy(process.env.CABLE_URL_LIMITED, 'gappy', room);
  try {
    const sub = await listen(scene.cable, room);
    await missTen(scene, sub, 1500);
    await until(() => sub.events.some((e) => e.info === 'history_not_found'), 10000, 'history_not_found');
    assert.deepEqual(sub.got.map((m) => m.n), [0], 'nothing replayed from an incomplete history');
  } finally { scene.close(); }
});

test('d: a reconnect in the middle of a burst: no duplicate, no gap', async () => {
  const room = `d-${nonce}`;
  const scene = await behindProxy(process.env.CABLE_URL, 'bursty', room);
  const { p, pub } = scene;
  const total = 300;
  try {
    const sub = await listen(scene.cable, room);
    // About 200 messages/s for 1.5 s: the cut misses some 60 (within history_limit)
    // and the burst goes on while the backlog is replayed.
    const burst = (async () => { for (let n = 0; n < total; n++) { await pub.say(n); await sleep(5); } })();
    await until(() => sub.got.length >= 50, 10000, 'the burst to start');
    p.cut();
    await sleep(300);
    p.resume();
    await burst;
    await until(() => sub.got.length >= total, 15000, `all ${total} messages`, () => ({
      count: sub.got.length, events: sub.events,
      missing: [...Array(total).keys()].filter((n) => !sub.got.some((m) => m.n === n)).slice(0, 20),
      tail: sub.got.slice(-5),
    }));
    await sleep(300);
    assertExactlyOnceInOrder(sub.got, [...Array(total).keys()]);
    assert.ok(sub.events.some((e) => e.connect && e.connect.restored), 'the session was restored');
  } finally { scene.close(); }
});

const cluster = process.env.CLUSTER ? JSON.parse(process.env.CLUSTER) : null;

test('b: the client\'s node is killed; 10 broadcast from a third process; the other node restores them', { skip: !cluster }, async () => {
  const p = await proxy(portOf(cluster.url1));
  const room = `b-${cluster.kind}-${nonce}`;
  const cable = client(viaProxy(cluster.url1, p), 'bea');
  const broadcast = (n) => new Promise((resolve, reject) => {
    const args = ['-m', 'cablecar', 'broadcast', '--pubsub', cluster.pubsub, '--history', '-q',
      ...(cluster.prefix ? ['--channel-prefix', cluster.prefix] : []), `chat_${room}`, JSON.stringify({ n })];
    const child = spawn(cluster.python, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`broadcast ${n}: ${code} ${err}`))));
  });
  try {
    const sub = await listen(cable, room);
    await broadcast(0);
    await until(() => sub.got.length === 1, 5000, 'the first message');
    p.cut();
    process.kill(cluster.pid1, 'SIGKILL');
    for (let n = 1; n <= 10; n++) await broadcast(n);
    p.resume(portOf(cluster.url2));
    await until(() => sub.events.some((e) => e.connect && e.connect.restored), 15000, 'a restored session on the other node');
    await until(() => sub.got.length === 11, 10000, 'the missed messages');
    await broadcast(11);
    await until(() => sub.got.length === 12, 5000, 'a live message');
    await sleep(200);
    assertExactlyOnceInOrder(sub.got, [...Array(12).keys()]);
  } finally { cable.disconnect(); p.close(); }
});

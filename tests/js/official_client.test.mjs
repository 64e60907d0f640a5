// The official @rails/actioncable client against a cablecar server (URL in CABLE_URL):
// cablecar's own promises beyond the shared conformance suite.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import WebSocket from 'ws';

// The official client needs a WebSocket global and the browser's add/removeEventListener.
if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WebSocket;
if (typeof globalThis.addEventListener !== 'function') globalThis.addEventListener = () => {};
if (typeof globalThis.removeEventListener !== 'function') globalThis.removeEventListener = () => {};
const ActionCable = createRequire(import.meta.url)('@rails/actioncable');
ActionCable.adapters.WebSocket = WebSocket;

const URL = process.env.CABLE_URL;
const nonce = Math.random().toString(36).slice(2);

function events() {
  const log = [];
  const waiters = [];
  const push = (e) => { log.push(e); for (const w of [...waiters]) if (w.pred(e)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(e); } };
  const waitFor = (pred, ms = 5000, what = 'event') => {
    const hit = log.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      waiters.push(w);
      setTimeout(() => reject(new Error(`timeout waiting for ${what}; saw ${JSON.stringify(log)}`)), ms);
    });
  };
  const mixin = (tag) => ({
    connected(arg) { push({ tag, type: 'connected', arg }); },
    disconnected(arg) { push({ tag, type: 'disconnected', arg }); },
    rejected() { push({ tag, type: 'rejected' }); },
    received(data) { push({ tag, type: 'received', data }); },
  });
  return { log, waitFor, mixin };
}

test('subscribe, perform and receive a broadcast with the official client', async () => {
  const ev = events();
  const consumer = ActionCable.createConsumer(`${URL}?user=ann-${nonce}`);
  try {
    const sub = consumer.subscriptions.create({ channel: 'ChatChannel', room: `r-${nonce}` }, ev.mixin('chat'));
    await ev.waitFor((e) => e.type === 'connected', 5000, 'connected');
    sub.perform('speak', { body: 'héllo 👋' });
    const got = await ev.waitFor((e) => e.type === 'received', 5000, 'received');
    assert.deepEqual(got.data, { from: `ann-${nonce}`, body: 'héllo 👋' });
  } finally { consumer.disconnect(); }
});

test('unknown channel is rejected (the guarantor stops re-sending)', async () => {
  const ev = events();
  const consumer = ActionCable.createConsumer(`${URL}?user=bo-${nonce}`);
  try {
    consumer.subscriptions.create({ channel: 'NoSuchChannel' }, ev.mixin('nope'));
    await ev.waitFor((e) => e.type === 'rejected', 5000, 'rejected');
    consumer.subscriptions.create({ channel: 'RejectChannel' }, ev.mixin('rej'));
    await ev.waitFor((e) => e.tag === 'rej' && e.type === 'rejected', 5000, 'rejected');
  } finally { consumer.disconnect(); }
});

test('actions of one client are handled in order (100 echoes come back in sequence)', async () => {
  const ev = events();
  const consumer = ActionCable.createConsumer(`${URL}?user=cy-${nonce}`);
  try {
    const sub = consumer.subscriptions.create({ channel: 'BenchmarkChannel' }, ev.mixin('b'));
    await ev.waitFor((e) => e.type === 'connected', 5000, 'connected');
    for (let i = 0; i < 100; i++) sub.perform('echo', { payload: `${nonce}:${i}`, seq: i });
    await ev.waitFor((e) => e.type === 'received' && e.data.seq === 99, 10000, 'last echo');
    const seqs = ev.log.filter((e) => e.type === 'received' && e.data.action === 'echo' && String(e.data.payload).startsWith(nonce)).map((e) => e.data.seq);
    assert.deepEqual(seqs, [...Array(100).keys()]);
  } finally { consumer.disconnect(); }
});

test('unauthorized: the client is told and does not reconnect', async () => {
  const ev = events();
  const consumer = ActionCable.createConsumer(`${URL}?user=reject`);
  try {
    consumer.subscriptions.create({ channel: 'ChatChannel', room: '1' }, ev.mixin('x'));
    const d = await ev.waitFor((e) => e.type === 'disconnected', 5000, 'disconnected');
    assert.deepEqual(d.arg, { willAttemptReconnect: false });
  } finally { consumer.disconnect(); }
});

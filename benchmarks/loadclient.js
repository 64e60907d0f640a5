#!/usr/bin/env node
// Load client for the scenarios the anchors' client.js does not cover. Prints ONE JSON line per
// event on stdout; progress on stderr. Only loopback targets. Every loop bounded.
//
//   node loadclient.js streams --url ws://127.0.0.1:P/cable --clients 5000 --per-stream 5 \
//        --rounds 10 --burst 20
//     Many streams with few subscribers each: client i subscribes to ChatChannel room
//     "r<floor(i / per-stream)>"; the first client of every room is its speaker. Each round every
//     speaker performs `speak` once (paced: the next round starts when every delivery of this one
//     arrived, and not before --interval ms); then every speaker sends --burst speaks back to
//     back. Every delivery is counted per (room, seq) and checked against the receiver's room.
//
//   node loadclient.js idle --url ws://127.0.0.1:P/cable --clients 10000 [--mode raw]
//     Connects and subscribes (BenchmarkChannel) N clients, prints {"event":"ready",...}, then
//     waits for commands on stdin: "close" closes every socket (close handshake, then terminate
//     the stragglers) and prints {"event":"closed",...}; "exit" (or EOF) exits.
'use strict';
const WebSocket = require('ws');
const { performance } = require('perf_hooks');
const readline = require('readline');

const SCEN = process.argv[2];
function parseArgs(argv) {
  const a = {
    url: '', mode: 'actioncable', clients: 100, 'per-stream': 5, rounds: 10, burst: 20, interval: 100,
    concurrency: 50, sources: 8, 'bcast-timeout': 60, 'max-seconds': 900, 'connect-timeout': 30,
    channel: '', settle: 500,
  };
  for (let i = 3; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in a)) { console.error('unknown option --' + k); process.exit(2); }
    a[k] = argv[++i];
  }
  for (const k of ['clients', 'per-stream', 'rounds', 'burst', 'interval', 'concurrency', 'sources', 'bcast-timeout', 'max-seconds', 'connect-timeout', 'settle']) a[k] = Number(a[k]);
  return a;
}
if (SCEN !== 'streams' && SCEN !== 'idle') { console.error('usage: loadclient.js streams|idle --url ...'); process.exit(2); }
const A = parseArgs(process.argv);
{
  const host = new URL(A.url).hostname;
  if (!(/^127\./.test(host) || host === 'localhost')) { console.error('refusing non-loopback target ' + host); process.exit(2); }
}
const AC = A.mode === 'actioncable';
// Offered before the plain protocol (e.g. actioncable-v1-ext-json for a cable with history).
const EXTRA_PROTOCOLS = (process.env.CABLECAR_BENCH_PROTOCOLS || '').split(',').filter(Boolean);
const now = () => performance.timeOrigin + performance.now();
const T0 = now();
const log = (...x) => console.error(`[load ${((now() - T0) / 1000).toFixed(1)}s]`, ...x);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const r2 = (x) => x == null || Number.isNaN(x) ? null : Math.round(x * 100) / 100;
function pct(sorted, p) { if (!sorted.length) return null; const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1)); return sorted[i]; }
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const hardStop = setTimeout(() => { log('max-seconds reached, aborting'); out({ event: 'aborted', reason: 'max-seconds' }); process.exit(1); }, A['max-seconds'] * 1000);

const N = A.clients;
const K = Math.max(1, A['per-stream']);
const ROOMS = SCEN === 'streams' ? Math.ceil(N / K) : 0;
const R = SCEN === 'streams' ? A.rounds : 0;
const BURST = SCEN === 'streams' ? A.burst : 0;
const SEQS = 1 + R + BURST; // seq 0 = warmup, 1..R paced, R+1..R+BURST burst
const channel = A.channel || (SCEN === 'streams' ? 'ChatChannel' : 'BenchmarkChannel');
const identFor = (i) => SCEN === 'streams' ? JSON.stringify({ channel, room: 'r' + Math.floor(i / K) }) : JSON.stringify({ channel });

// ---------- delivery accounting (streams) ----------
const roomSize = new Int32Array(ROOMS);          // subscribed members per room
const perSeq = new Int32Array(SEQS);             // deliveries per seq, all rooms
const perRoomSeq = new Int32Array(ROOMS * SEQS); // deliveries per (room, seq)
const sendTime = new Float64Array(SEQS);
const lastRecv = new Float64Array(SEQS);
const lat = new Float64Array(Math.max(1, N * Math.max(R, 1)));
let latN = 0, misrouted = 0, duplicates = 0, unknownMsgs = 0, pings = 0, results = 0;
let subscribed = 0, connectErrors = 0, rejected = 0, closedEarly = 0;
let waiter = null;
let phase = 'connect';
const sockets = [];
let expectedPerSeq = 0; // sum of room sizes (every member receives every speak of its room)

const K_BODY = Buffer.from('"body":'), K_R = Buffer.from('"r":'), K_S = Buffer.from('"s":'), K_T = Buffer.from('"t":');
function numAt(buf, i) {
  while (buf[i] === 32) i++;
  let j = i;
  for (; j < buf.length; j++) { const c = buf[j]; if (!((c >= 48 && c <= 57) || c === 46 || c === 45 || c === 43 || c === 101 || c === 69)) break; }
  return Number(buf.latin1Slice(i, j));
}
function onDelivery(ws, room, seq, t) {
  const r = now();
  if (!(seq >= 0 && seq < SEQS) || !(room >= 0 && room < ROOMS)) { unknownMsgs++; return; }
  if (room !== ws._room) { misrouted++; return; }
  const bit = ws._seen;
  if (bit[seq]) { duplicates++; return; }
  bit[seq] = 1;
  perSeq[seq]++; perRoomSeq[room * SEQS + seq]++;
  lastRecv[seq] = r;
  if (seq >= 1 && seq <= R) lat[latN++] = r - t;
  checkWaiter();
}
function live() { return subscribed - closedEarly; }
function checkWaiter() { if (waiter && perSeq[waiter.seq] >= Math.min(expectedPerSeq, expectedPerSeq - closedEarly)) { const w = waiter; waiter = null; w.resolve(true); } }
function waitFor(seq, timeoutMs) {
  if (perSeq[seq] >= expectedPerSeq - closedEarly) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => { waiter = null; resolve(false); }, timeoutMs);
    waiter = { seq, resolve: (v) => { clearTimeout(t); resolve(v); } };
  });
}

function onMessage(ws, data) {
  if (Buffer.isBuffer(data)) {
    const b = data.indexOf(K_BODY);
    if (b >= 0) {
      const ri = data.indexOf(K_R, b), si = data.indexOf(K_S, b), ti = data.indexOf(K_T, b);
      if (ri >= 0 && si >= 0 && ti >= 0) return onDelivery(ws, numAt(data, ri + 4), numAt(data, si + 4), numAt(data, ti + 4));
    }
  }
  let m;
  try { m = JSON.parse(data); } catch (e) { unknownMsgs++; return; }
  if (!AC) { if (m.type === 'broadcast' || m.type === 'broadcastResult') return; unknownMsgs++; return; }
  const t = m.type;
  if (t !== undefined) {
    if (t === 'ping') { pings++; return; }
    if (t === 'welcome') { ws.send(JSON.stringify({ command: 'subscribe', identifier: ws._ident })); return; }
    if (t === 'confirm_subscription') { ws._sub(); return; }
    if (t === 'reject_subscription' || t === 'disconnect') { rejected++; ws._fail(new Error(t)); return; }
    unknownMsgs++; return;
  }
  const p = m.message;
  if (p && p.body && typeof p.body === 'object') return onDelivery(ws, p.body.r, p.body.s, p.body.t);
  if (p && (p.ok !== undefined || p.action === 'broadcastResult')) { results++; return; }
  unknownMsgs++;
}

function openOne(i) {
  return new Promise((resolve) => {
    let done = false;
    const src = `127.0.0.${1 + (i % A.sources)}`;
    const u = A.url + (A.url.includes('?') ? '&' : '?') + 'user=u' + i;
    const ws = new WebSocket(u, AC ? [...EXTRA_PROTOCOLS, 'actioncable-v1-json', 'actioncable-unsupported'] : undefined,
      { localAddress: src, perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: A['connect-timeout'] * 1000 });
    ws._i = i; ws._room = SCEN === 'streams' ? Math.floor(i / K) : -1; ws._ident = identFor(i);
    ws._seen = SCEN === 'streams' ? new Uint8Array(SEQS) : null;
    const to = setTimeout(() => ws._fail(new Error('subscribe timeout')), A['connect-timeout'] * 1000);
    ws._sub = () => { if (done) return; done = true; clearTimeout(to); subscribed++; if (ws._room >= 0) roomSize[ws._room]++; sockets.push(ws); resolve(true); };
    ws._fail = (e) => { if (done) return; done = true; clearTimeout(to); connectErrors++; if (connectErrors <= 5) log('connect error', i, e && e.message); try { ws.terminate(); } catch (x) { } resolve(false); };
    ws.on('open', () => { if (!AC) ws._sub(); });
    ws.on('message', (d) => onMessage(ws, d));
    ws.on('error', (e) => ws._fail(e));
    ws.on('close', () => { ws._closed = true; if (!done) ws._fail(new Error('closed')); else if (phase !== 'closing') { closedEarly++; checkWaiter(); } if (closeWaiter) closeWaiter(); });
  });
}
let closeWaiter = null;

async function connectAll() {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(A.concurrency, N); w++) workers.push((async () => { while (next < N) { const i = next++; await openOne(i); } })());
  await Promise.all(workers);
}

function speak(ws, seq) {
  const body = { r: ws._room, s: seq, t: now() };
  ws.send(JSON.stringify({ command: 'message', identifier: ws._ident, data: JSON.stringify({ action: 'speak', body }) }));
}

async function streams() {
  log(`connecting ${N} clients to ${ROOMS} rooms of ${K} (${A.url})`);
  const tc0 = now();
  await connectAll();
  const connectS = (now() - tc0) / 1000;
  log(`subscribed ${subscribed}/${N} in ${r2(connectS)}s (${connectErrors} errors)`);
  // one speaker per room: the first subscribed member
  const speakers = new Array(ROOMS).fill(null);
  for (const ws of sockets) if (!speakers[ws._room] || ws._i < speakers[ws._room]._i) speakers[ws._room] = ws;
  const active = speakers.filter(Boolean);
  for (let r = 0; r < ROOMS; r++) expectedPerSeq += roomSize[r];
  await sleep(A.settle);
  phase = 'speak';
  // warmup
  sendTime[0] = now(); for (const ws of active) speak(ws, 0);
  const wok = await waitFor(0, A['bcast-timeout'] * 1000);
  log(`warmup ${wok ? 'complete' : 'INCOMPLETE'} (${perSeq[0]}/${expectedPerSeq}) in ${r2(lastRecv[0] - sendTime[0])}ms`);
  await sleep(Math.max(A.interval, 200));
  const lastClient = [];
  let incomplete = 0;
  for (let s = 1; s <= R; s++) {
    const ts = now(); sendTime[s] = ts;
    for (const ws of active) speak(ws, s);
    if (!await waitFor(s, A['bcast-timeout'] * 1000)) incomplete++;
    lastClient.push(lastRecv[s] - ts);
    const el = now() - ts; if (el < A.interval) await sleep(A.interval - el);
  }
  const L = Array.from(lat.subarray(0, latN)).sort((x, y) => x - y);
  const lcs = lastClient.slice().sort((x, y) => x - y);
  const latency = { deliveries: latN, expected: expectedPerSeq * R, incomplete_rounds: incomplete, p50_ms: r2(pct(L, 50)), p95_ms: r2(pct(L, 95)), p99_ms: r2(pct(L, 99)), max_ms: r2(L[L.length - 1]), last_client_p50_ms: r2(pct(lcs, 50)) };
  log(`latency: p50 ${latency.p50_ms} p99 ${latency.p99_ms} max ${latency.max_ms}`);
  await sleep(300);
  const tb0 = now();
  for (let s = R + 1; s <= R + BURST; s++) { sendTime[s] = now(); for (const ws of active) speak(ws, s); }
  const deadline = tb0 + A['bcast-timeout'] * 1000 * Math.max(1, BURST / 4);
  for (let s = R + 1; s <= R + BURST; s++) { const left = deadline - now(); if (left <= 0) break; await waitFor(s, left); }
  let delivered = 0, tEnd = tb0;
  for (let s = R + 1; s <= R + BURST; s++) { delivered += perSeq[s]; if (perSeq[s]) tEnd = Math.max(tEnd, lastRecv[s]); }
  const el = (tEnd - tb0) / 1000;
  const throughput = { messages: active.length * BURST, delivered, expected: expectedPerSeq * BURST, elapsed_s: r2(el), deliveries_per_s: r2(delivered / el), messages_per_s: r2(active.length * BURST / el) };
  log(`throughput: ${throughput.deliveries_per_s} deliveries/s (${delivered}/${throughput.expected} in ${r2(el)}s)`);
  // rooms that missed something (each member must get each seq exactly once)
  let roomsShort = 0;
  for (let r = 0; r < ROOMS; r++) for (let s = 0; s < SEQS; s++) if (perRoomSeq[r * SEQS + s] !== roomSize[r]) { roomsShort++; break; }
  phase = 'closing';
  out({ event: 'result', scenario: 'streams', clients: N, per_stream: K, rooms: ROOMS, speakers: active.length, rounds: R, burst: BURST, subscribed, connect_errors: connectErrors, rejected, closed_early: closedEarly, connect_s: r2(connectS), warmup_complete: wok, latency, throughput, misrouted, duplicates, rooms_short: roomsShort, unknown_msgs: unknownMsgs, pings, action_results: results, total_s: r2((now() - T0) / 1000) });
  for (const ws of sockets) { try { ws.terminate(); } catch (e) { } }
}

async function idle() {
  log(`connecting ${N} idle clients (${A.mode}) to ${A.url}`);
  const tc0 = now();
  await connectAll();
  const connectS = (now() - tc0) / 1000;
  log(`subscribed ${subscribed}/${N} in ${r2(connectS)}s (${connectErrors} errors)`);
  out({ event: 'ready', subscribed, connect_errors: connectErrors, rejected, connect_s: r2(connectS), connect_per_s: r2(subscribed / connectS) });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const cmd = line.trim();
    if (cmd === 'close') {
      phase = 'closing';
      const t0 = now();
      for (const ws of sockets) { try { ws.close(1000); } catch (e) { } }
      const dl = t0 + 15000;
      while (now() < dl && sockets.some((w) => !w._closed)) await new Promise((r) => { closeWaiter = r; setTimeout(r, 200); });
      closeWaiter = null;
      let forced = 0;
      for (const ws of sockets) if (!ws._closed) { forced++; try { ws.terminate(); } catch (e) { } }
      out({ event: 'closed', closed: sockets.length, forced, close_s: r2((now() - t0) / 1000), dropped_while_idle: closedEarly, pings, unknown_msgs: unknownMsgs });
    } else if (cmd === 'exit') break;
  }
}

(SCEN === 'streams' ? streams() : idle()).then(() => { clearTimeout(hardStop); setTimeout(() => process.exit(0), 100); })
  .catch((e) => { log('fatal', e && e.stack); out({ event: 'aborted', reason: String(e) }); process.exit(1); });

// cablecar.js (the package's browser client) driven under Node against a live Action Cable server.
//
//   CABLE_URL=ws://127.0.0.1:PORT/cable node --experimental-websocket --test tests/js/cablecar_js.test.mjs
//
// The server must serve the conformance application (examples/conformance_app.py, or the Rails
// anchor's app.rb): ChatChannel (room param, action speak -> broadcast {from, body}),
// BenchmarkChannel (action echo), RejectChannel, and ?user=reject refused as unauthorized.
// Network trouble is made with a real TCP proxy between the client and the server: it can cut
// every connection, refuse new ones, go silent, or lose the first subscribe frame.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { createHmac } from "node:crypto";
import { createConsumer, createWebSocketURL } from "../../src/cablecar/static/cablecar.js";
import { sleep, unique, waitFor } from "./helpers.mjs";

const CABLE_URL = process.env.CABLE_URL;
const skip = CABLE_URL ? false : "CABLE_URL is not set";
const consumers = [];
const proxies = [];

after(() => {
  for (const consumer of consumers) consumer.disconnect();
  for (const proxy of proxies) proxy.close();
});

function withUser(base, user) {
  const url = new URL(base);
  url.searchParams.set("user", user);
  return url.href;
}

// A consumer that records its state changes.
function consumer(user, { base = CABLE_URL, ...options } = {}) {
  const c = createConsumer(withUser(base, user), options);
  c.states = [];
  c.onstatechange = (state, detail) => c.states.push({ state, ...detail });
  consumers.push(c);
  return c;
}

// A subscription that records every callback, in order.
function subscribe(c, params) {
  const log = { events: [], received: [] };
  const record = (name) => (arg) => log.events.push(arg === undefined ? name : [name, arg]);
  const sub = c.subscriptions.create(params, {
    initialized: record("initialized"),
    connected: record("connected"),
    disconnected: record("disconnected"),
    rejected: record("rejected"),
    received(data) {
      log.received.push(data);
    },
  });
  sub.log = log;
  return sub;
}

const has = (sub, name) => sub.log.events.some((e) => e === name || e[0] === name);
const count = (sub, name) => sub.log.events.filter((e) => e === name || e[0] === name).length;
const lastState = (c) => c.states.at(-1)?.state;

// A TCP proxy in front of the server, to cut, refuse, silence or lose traffic for real.
async function startProxy(target, { dropSubscribes = 0 } = {}) {
  const { hostname, port } = new URL(target);
  const pairs = new Set();
  const proxy = { dropped: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    const pair = { client, upstream, silent: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) socket.on("close", end).on("error", end);
    upstream.on("data", (bytes) => pair.silent || client.write(bytes));
    let buffer = Buffer.alloc(0);
    let handshakeDone = false;
    client.on("data", (bytes) => {
      if (pair.silent) return;
      if (dropSubscribes === 0) return upstream.write(bytes);
      buffer = Buffer.concat([buffer, bytes]);
      if (!handshakeDone) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        upstream.write(buffer.subarray(0, end + 4));
        buffer = buffer.subarray(end + 4);
        handshakeDone = true;
      }
      for (let frame; (frame = takeFrame()); ) {
        if (dropSubscribes > 0 && frame.text.includes('"command":"subscribe"')) {
          dropSubscribes -= 1;
          proxy.dropped += 1;
        } else {
          upstream.write(frame.raw);
        }
      }
    });
    // One whole client frame (masked, RFC 6455) off the buffer, or null.
    function takeFrame() {
      if (buffer.length < 2) return null;
      let length = buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) [length, offset] = [buffer.length >= 4 ? buffer.readUInt16BE(2) : -1, 4];
      else if (length === 127) [length, offset] = [buffer.length >= 10 ? Number(buffer.readBigUInt64BE(2)) : -1, 10];
      if (length < 0 || buffer.length < offset + 4 + length) return null;
      const mask = buffer.subarray(offset, offset + 4);
      const payload = Buffer.from(buffer.subarray(offset + 4, offset + 4 + length));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      const raw = buffer.subarray(0, offset + 4 + length);
      buffer = buffer.subarray(raw.length);
      return { raw, text: payload.toString("utf8") };
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxyPort = server.address().port;
  Object.assign(proxy, {
    url: target.replace(`${hostname}:${port}`, `127.0.0.1:${proxyPort}`),
    cutAll() {
      for (const pair of [...pairs]) pair.client.destroy();
    },
    silenceAll() {
      for (const pair of pairs) pair.silent = true;
    },
    async refuse() {
      server.close();
      this.cutAll();
    },
    async accept() {
      await new Promise((resolve) => server.listen(proxyPort, "127.0.0.1", resolve));
    },
    close() {
      server.close();
      this.cutAll();
    },
  });
  proxies.push(proxy);
  return proxy;
}

test("http(s) URLs and paths become ws(s) URLs", () => {
  assert.equal(createWebSocketURL("http://example.com:3000/cable"), "ws://example.com:3000/cable");
  assert.equal(createWebSocketURL("https://example.com/cable?x=1"), "wss://example.com/cable?x=1");
  assert.equal(createWebSocketURL("ws://h/cable"), "ws://h/cable");
  assert.equal(createWebSocketURL(() => "wss://h/c"), "wss://h/c");
});

test("connects after welcome, subscribes, and delivers a room's messages to that room only", { skip }, async () => {
  const room = unique("room");
  const alice = consumer("alice");
  const bob = consumer("bob");
  const carol = consumer("carol");
  const a = subscribe(alice, { channel: "ChatChannel", room });
  const b = subscribe(bob, { channel: "ChatChannel", room });
  const c = subscribe(carol, { channel: "ChatChannel", room: unique("elsewhere") });
  assert.equal(a.perform("speak", { body: "too early" }), false, "nothing is sent before welcome");
  assert.deepEqual(a.log.events, ["initialized"]);
  await waitFor(() => [a, b, c].every((s) => has(s, "connected")), "three confirmations");
  assert.deepEqual(alice.states.map((s) => s.state), ["connecting", "connected"]);
  assert.deepEqual(a.log.events, ["initialized", ["connected", { reconnected: false }]]);

  assert.equal(b.perform("speak", { body: "hi <b>all</b> ✓" }), true);
  const expected = { from: "bob", body: "hi <b>all</b> ✓" };
  await waitFor(() => a.log.received.length && b.log.received.length, "the message at alice and bob");
  assert.deepEqual(a.log.received, [expected]);
  assert.deepEqual(b.log.received, [expected]);
  c.perform("speak", { body: "other room" });
  await waitFor(() => c.log.received.length, "carol's own message");
  await sleep(200);
  assert.deepEqual(c.log.received, [{ from: "carol", body: "other room" }]);
  assert.equal(a.log.received.length, 1);
});

test("subscriptions.create accepts a channel name; perform adds the action", { skip }, async () => {
  const c = consumer("echoer");
  const sub = subscribe(c, "BenchmarkChannel");
  assert.equal(sub.identifier, '{"channel":"BenchmarkChannel"}');
  await waitFor(() => has(sub, "connected"), "confirmation");
  const data = { n: 1, text: "x" };
  assert.equal(sub.perform("echo", data), true);
  assert.deepEqual(data, { n: 1, text: "x" }, "the caller's object is left alone");
  await waitFor(() => sub.log.received.length, "the echo");
  assert.deepEqual(sub.log.received[0], { n: 1, text: "x", action: "echo" });
});

test("a rejected subscription calls rejected() and is forgotten", { skip }, async () => {
  const c = consumer("rejectee");
  const rejected = subscribe(c, { channel: "RejectChannel" });
  const blank = subscribe(c, { channel: "ChatChannel", room: "" });
  const fine = subscribe(c, { channel: "ChatChannel", room: unique("ok") });
  await waitFor(() => has(rejected, "rejected") && has(blank, "rejected") && has(fine, "connected"), "answers");
  assert.ok(!has(rejected, "connected"));
  assert.deepEqual(c.subscriptions.subscriptions, [fine]);
  assert.equal(lastState(c), "connected");
});

test("an unauthorized connection goes offline and does not retry", { skip }, async () => {
  const c = consumer("reject");
  const sub = subscribe(c, { channel: "ChatChannel", room: unique("r") });
  await waitFor(() => lastState(c) === "offline", "offline");
  assert.deepEqual(c.states.at(-1), { state: "offline", reason: "unauthorized", transport: "websocket" });
  await sleep(1500);
  assert.equal(c._socketCount, 1, "no second connection attempt");
  assert.equal(lastState(c), "offline");
  assert.ok(!has(sub, "connected"));
});

test("unsubscribe() stops deliveries to that subscription", { skip }, async () => {
  const room = unique("room");
  const a = subscribe(consumer("leaver"), { channel: "ChatChannel", room });
  const b = subscribe(consumer("stayer"), { channel: "ChatChannel", room });
  await waitFor(() => has(a, "connected") && has(b, "connected"), "confirmations");
  a.unsubscribe();
  await sleep(500); // the protocol has no unsubscribe acknowledgement
  b.perform("speak", { body: "after" });
  await waitFor(() => b.log.received.length, "the message at the stayer");
  await sleep(300);
  assert.deepEqual(a.log.received, []);
});

test("after the server goes away it retries with backoff, then reconnects and re-subscribes", { skip }, async () => {
  const room = unique("room");
  const proxy = await startProxy(CABLE_URL);
  const alice = consumer("alice", { base: proxy.url });
  const a = subscribe(alice, { channel: "ChatChannel", room });
  const b = subscribe(consumer("bob"), { channel: "ChatChannel", room });
  await waitFor(() => has(a, "connected") && has(b, "connected"), "confirmations");

  await proxy.refuse(); // cut the connection and refuse new ones for a while
  await waitFor(() => has(a, "disconnected"), "disconnected()");
  assert.deepEqual(a.log.events.at(-1), ["disconnected", { willAttemptReconnect: true }]);
  assert.equal(lastState(alice), "reconnecting");
  const socketsBefore = alice._socketCount;
  await sleep(2600); // retries after about 0.5-0.75 s, then 0.9-1.35 s more, then 1.6-2.4 s more
  assert.ok(alice._socketCount - socketsBefore >= 2, `retried (${alice._socketCount - socketsBefore} attempts)`);
  assert.ok(alice._socketCount - socketsBefore <= 3, "with backoff, not in a tight loop");
  assert.equal(a.perform("speak", { body: "lost" }), false, "nothing is sent while disconnected");

  await proxy.accept();
  await waitFor(() => count(a, "connected") === 2, "re-subscription", 8000);
  assert.deepEqual(a.log.events.at(-1), ["connected", { reconnected: true }]);
  assert.equal(lastState(alice), "connected");
  b.perform("speak", { body: "welcome back" });
  await waitFor(() => a.log.received.length, "a message after the reconnect");
  assert.deepEqual(a.log.received, [{ from: "bob", body: "welcome back" }]);
});

test("a silent connection is detected as stale, dropped and reopened", { skip }, async () => {
  const proxy = await startProxy(CABLE_URL);
  const c = consumer("quiet", { base: proxy.url, staleThreshold: 4 });
  const sub = subscribe(c, { channel: "ChatChannel", room: unique("room") });
  await waitFor(() => has(sub, "connected"), "confirmation");
  const silencedAt = Date.now();
  proxy.silenceAll(); // the TCP connection stays up, but nothing gets through any more
  await waitFor(() => lastState(c) === "reconnecting", "stale detection", 8000);
  const detectedAfter = Date.now() - silencedAt;
  assert.ok(detectedAfter >= 1000 && detectedAfter <= 6500, `detected after ${detectedAfter} ms`);
  assert.equal(c.states.at(-1).reason, "stale");
  await waitFor(() => count(sub, "connected") === 2, "re-subscription on a new socket", 5000);
  assert.equal(lastState(c), "connected");
});

test("a subscribe that gets no answer is sent again every 500 ms", { skip }, async () => {
  const proxy = await startProxy(CABLE_URL, { dropSubscribes: 1 });
  const c = consumer("unlucky", { base: proxy.url });
  const start = Date.now();
  const sub = subscribe(c, { channel: "ChatChannel", room: unique("room") });
  await waitFor(() => has(sub, "connected"), "confirmation after the retry", 4000);
  assert.equal(proxy.dropped, 1);
  assert.ok(Date.now() - start >= 450, "confirmed only after a re-send");
  assert.deepEqual(sub.log.events, ["initialized", ["connected", { reconnected: false }]]);
});

test("disconnect() stops for good; connect() starts again", { skip }, async () => {
  const c = consumer("quitter");
  const sub = subscribe(c, { channel: "ChatChannel", room: unique("room") });
  await waitFor(() => has(sub, "connected"), "confirmation");
  c.disconnect();
  assert.equal(lastState(c), "offline");
  assert.deepEqual(sub.log.events.at(-1), ["disconnected", { willAttemptReconnect: false }]);
  await sleep(1200);
  assert.equal(c._socketCount, 1);
  c.connect();
  await waitFor(() => count(sub, "connected") === 2, "re-subscription after connect()");
  assert.deepEqual(sub.log.events.at(-1), ["connected", { reconnected: true }]);
});

// Rails' MessageVerifier format, as cable.signed_stream_name() makes it.
function sign(name, secret = process.env.STREAMS_SECRET) {
  const encoded = Buffer.from(JSON.stringify(name)).toString("base64");
  return `${encoded}--${createHmac("sha256", secret).update(encoded).digest("hex")}`;
}

test("streamFromSigned() receives a signed stream; a forged name is rejected", { skip }, async () => {
  const room = unique("signed");
  const c = consumer("signer");
  const signed = c.streamFromSigned(sign(`chat_${room}`), {
    connected() { this.up = true; },
    received(data) { (this.got ||= []).push(data); },
  });
  const forged = subscribe(c, { channel: "$pubsub", signed_stream_name: sign(`chat_${room}`, "wrong") });
  const speaker = subscribe(c, { channel: "ChatChannel", room });
  await waitFor(() => signed.up && has(forged, "rejected") && has(speaker, "connected"), "answers");
  speaker.perform("speak", { body: "over a signed stream" });
  await waitFor(() => signed.got?.length, "the broadcast");
  assert.deepEqual(signed.got, [{ from: "signer", body: "over a signed stream" }]);
  assert.ok(!has(forged, "connected"));
});

// -- the extended protocol (CABLE_EXT=1: the server runs with history=True) --------------
const skipExt = skip || (process.env.CABLE_EXT === "1" ? false : "CABLE_EXT is not set");

test("extended: a cut connection resumes its session and misses nothing", { skip: skipExt }, async () => {
  const room = unique("resume");
  const proxy = await startProxy(CABLE_URL);
  const c = consumer("resumer", { base: proxy.url, reconnectDelay: { min: 0.1, max: 0.3, factor: 1.5, jitter: 0 } });
  const sub = subscribe(c, { channel: "ChatChannel", room });
  const speaker = subscribe(consumer("speaker"), { channel: "ChatChannel", room });
  await waitFor(() => has(sub, "connected") && has(speaker, "connected"), "both subscribed");
  assert.equal(c.ext, true);
  assert.ok(c.sid, "a session id from the welcome");
  speaker.perform("speak", { body: "0" });
  await waitFor(() => sub.log.received.length === 1, "the first message");
  await proxy.refuse();
  await waitFor(() => c.state === "reconnecting", "the cut");
  for (let n = 1; n <= 5; n++) speaker.perform("speak", { body: String(n) });
  await waitFor(() => speaker.log.received.length === 6, "the speaker's own echoes");
  await proxy.accept();
  await waitFor(() => sub.log.received.length === 6, "the missed messages", 10000);
  speaker.perform("speak", { body: "6" });
  await waitFor(() => sub.log.received.length === 7, "a live one");
  assert.deepEqual(sub.log.received.map((m) => m.body), ["0", "1", "2", "3", "4", "5", "6"]);
  assert.ok(c.states.some((s) => s.state === "connected" && s.restored), "the session was resumed");
  assert.ok(count(sub, "connected") >= 1);
});

test("extended: presence join/info/leave and whisper between two consumers", { skip: skipExt }, async () => {
  const room = unique("presence");
  const events = [];
  const ann = consumer("ann").subscriptions.create({ channel: "ChatChannel", room }, {
    connected() { this.up = true; }, received(m) { (this.got ||= []).push(m); },
  });
  const bob = consumer("bob").subscriptions.create({ channel: "ChatChannel", room }, {
    connected() { this.up = true; }, received(m) { (this.got ||= []).push(m); },
    presenceChanged(event) { events.push(event); },
  });
  await waitFor(() => ann.up && bob.up, "both subscribed");
  assert.ok(ann.presence.join("ann", { name: "Ann" }));
  await waitFor(() => events.length === 1, "the join event");
  assert.deepEqual(events[0], { type: "join", id: "ann", info: { name: "Ann" } });
  assert.deepEqual(await bob.presence.info(), { ann: { name: "Ann" } });
  assert.ok(ann.whisper({ typing: true }));
  await waitFor(() => bob.got?.length === 1, "the whisper");
  assert.deepEqual(bob.got, [{ typing: true }]);
  await sleep(300);
  assert.equal(ann.got, undefined, "the sender does not get its own whisper");
  ann.presence.leave();
  await waitFor(() => events.length === 2, "the leave event");
  assert.deepEqual(events[1], { type: "leave", id: "ann" });
  const plain = consumer("cid").subscriptions.create({ channel: "BenchmarkChannel" }, {
    connected() { this.up = true; },
  });
  await waitFor(() => plain.up, "a channel without presence");
  await assert.rejects(plain.presence.info(), /not available/);
});

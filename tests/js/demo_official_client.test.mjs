// The official @rails/actioncable client (its ESM build, unchanged) against the chat demo.
//
//   DEMO_URL=http://127.0.0.1:PORT node --test tests/js/demo_official_client.test.mjs
//
// Node 20 has no WebSocket global by default: the `ws` package stands in for the browser's,
// and the two window functions the client's ConnectionMonitor calls get no-op stand-ins.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { sleep, unique, waitFor } from "./helpers.mjs";

globalThis.WebSocket = WebSocket;
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
const { createConsumer, adapters } = await import("@rails/actioncable/app/assets/javascripts/actioncable.esm.js");
adapters.WebSocket = WebSocket;
// The demo page's whisper (typing), sent here by the official @anycable/core client.
const { createCable } = await import("@anycable/core");

const DEMO_URL = process.env.DEMO_URL;
const skip = DEMO_URL ? false : "DEMO_URL is not set";
const CABLE_URL = DEMO_URL && DEMO_URL.replace(/^http/, "ws") + "/cable";
const consumers = [];
after(() => consumers.forEach((c) => c.disconnect()));

function consumer(name) {
  const query = name === undefined ? "" : `?name=${encodeURIComponent(name)}`;
  const c = createConsumer(CABLE_URL + query);
  consumers.push(c);
  return c;
}

// A subscription recording what it gets: `log.of(type)` lists the data frames of a type.
function subscribe(c, params) {
  const log = { events: [], data: [] };
  log.of = (type) => log.data.filter((d) => d.type === type);
  const sub = c.subscriptions.create(params, {
    connected: (arg) => log.events.push(["connected", arg]),
    disconnected: (arg) => log.events.push(["disconnected", arg]),
    rejected: () => log.events.push(["rejected"]),
    received: (data) => log.data.push(data),
  });
  sub.log = log;
  return sub;
}
const confirmed = (sub) => sub.log.events.some((e) => e[0] === "connected");

async function join(name, room) {
  const sub = subscribe(consumer(name), { channel: "ChatChannel", room });
  await waitFor(() => confirmed(sub), `${name} in ${room}`);
  return sub;
}

test("history, messages, presence and typing reach the official client", { skip }, async () => {
  const room = unique("room");
  const alice = await join("alice", room);
  const [history] = alice.log.data;
  assert.equal(history.type, "history", "the history comes before anything else");
  assert.deepEqual(history.messages, []);
  assert.deepEqual(history.members, ["alice"]);
  assert.equal(history.you.name, "alice");

  // Presence events reach a plain Action Cable client as ordinary messages.
  const bob = await join("bob", room);
  await waitFor(() => alice.log.of("join").some((j) => j.id === "bob"), "bob's arrival");
  assert.deepEqual(alice.log.of("join").find((j) => j.id === "bob"), { type: "join", id: "bob", info: { name: "bob" } });

  // Typing is a whisper; the official client cannot send one but receives it.
  const erin = createCable(`${CABLE_URL}?name=erin`, {
    protocol: "actioncable-v1-ext-json", websocketImplementation: WebSocket, logLevel: "error",
  });
  consumers.push(erin);
  const erinRoom = erin.subscribeTo("ChatChannel", { room });
  await erinRoom.ensureSubscribed();
  await erinRoom.whisper({ type: "typing", name: "erin", sid: "x" });
  await waitFor(() => alice.log.of("typing").length, "the typing whisper");
  assert.deepEqual(alice.log.of("typing"), [{ type: "typing", name: "erin", sid: "x" }]);
  erinRoom.disconnect();
  await waitFor(() => alice.log.of("leave").some((l) => l.id === "erin"), "erin's unsubscribe");

  const before = Date.now();
  bob.perform("speak", { body: "  hello <b>there</b>\u0000\u202e ✓  " });
  await waitFor(() => alice.log.of("message").length && bob.log.of("message").length, "the message");
  const [message] = alice.log.of("message");
  assert.deepEqual(bob.log.of("message")[0], message);
  assert.equal(message.name, "bob");
  assert.equal(message.body, "hello <b>there</b> ✓", "trimmed, control characters removed, HTML untouched");
  assert.equal(message.room, room);
  assert.equal(message.id, 1);
  assert.ok(Math.abs(message.ts - before) < 5000, "a server timestamp in ms");

  const dave = await join("dave", room);
  assert.deepEqual(dave.log.data[0].messages, [message], "a newcomer gets the history");
  assert.deepEqual(dave.log.data[0].members, ["alice", "bob", "dave"]);

  // bob's socket closes without an unsubscribe: he leaves one presence_ttl (5 s) later.
  bob.consumer.disconnect();
  await waitFor(() => alice.log.of("leave").some((l) => l.id === "bob"), "bob's leaving", 15000);
  assert.deepEqual(alice.log.of("leave").at(-1), { type: "leave", id: "bob" });
});

test("empty, oversized and malformed messages are refused with an error to the sender only", { skip }, async () => {
  const room = unique("room");
  const sender = await join("sender", room);
  const other = await join("other", room);
  sender.perform("speak", { body: "   \n\t " });
  sender.perform("speak", { body: "x".repeat(100_000) });
  sender.perform("speak", { body: 42 });
  sender.perform("speak", {});
  await waitFor(() => sender.log.of("error").length === 4, "four errors");
  assert.deepEqual(sender.log.of("error").map((e) => e.code), ["empty", "too_long", "invalid", "invalid"]);
  assert.match(sender.log.of("error")[1].message, /100000 characters long; the limit is 2000/);
  sender.perform("speak", { body: "y".repeat(2000) });
  await waitFor(() => other.log.of("message").length, "a 2000-character message");
  assert.equal(other.log.of("message")[0].body.length, 2000);
  assert.deepEqual(other.log.of("error"), []);
});

test("a newcomer gets the last 50 messages", { skip }, async () => {
  const room = unique("busy");
  // Each subscriber may speak 10 times per 10 s, so six people say 10 things each.
  const speakers = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => join(`speaker${i}`, room)));
  for (let n = 0; n < 10; n++) speakers.forEach((s, i) => s.perform("speak", { body: `${i}:${n}` }));
  await waitFor(() => speakers[0].log.of("message").length === 60, "60 messages");
  const late = await join("latecomer", room);
  const history = late.log.data[0].messages;
  assert.equal(history.length, 50);
  assert.deepEqual(history.map((m) => m.id), Array.from({ length: 50 }, (_, i) => i + 11));
  const tooFast = speakers[0];
  tooFast.perform("speak", { body: "one more" });
  await waitFor(() => tooFast.log.of("error").length, "the rate limit");
  assert.equal(tooFast.log.of("error")[0].code, "too_fast");
});

test("the room list is live and rooms can be created by name", { skip }, async () => {
  const rooms = subscribe(consumer("lister"), { channel: "RoomsChannel" });
  await waitFor(() => rooms.log.of("rooms").length, "the room list");
  const names = rooms.log.of("rooms")[0].rooms.map((r) => r.name);
  assert.deepEqual(names.slice(0, 3), ["lobby", "python", "random"]);

  const fresh = unique("Fresh room");
  rooms.perform("create", { name: `  ${fresh}\u0007 ` });
  rooms.perform("create", { name: "x".repeat(41) });
  await waitFor(() => rooms.log.of("error").length, "the refusal");
  assert.equal(rooms.log.of("error")[0].code, "invalid");
  await waitFor(() => rooms.log.of("rooms").some((u) => u.rooms.some((r) => r.name === fresh)), "the new room");

  await join("joiner", fresh);
  await waitFor(
    () => rooms.log.of("rooms").at(-1).rooms.find((r) => r.name === fresh)?.members === 1,
    "the member count",
  );
});

test("a connection without a usable name is refused for good", { skip }, async () => {
  for (const name of [undefined, "", "   ", "n".repeat(41)]) {
    const sub = subscribe(consumer(name), { channel: "ChatChannel", room: "lobby" });
    await waitFor(() => sub.log.events.length, `the refusal of ${JSON.stringify(name)}`);
    assert.deepEqual(sub.log.events, [["disconnected", { willAttemptReconnect: false }]]);
  }
  const blank = subscribe(consumer("someone"), { channel: "ChatChannel", room: " \u0000 " });
  await waitFor(() => blank.log.events.length, "the rejection of a blank room");
  assert.deepEqual(blank.log.events, [["rejected"]]);
});

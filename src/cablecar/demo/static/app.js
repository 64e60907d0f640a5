// The chat demo page. Everything a person typed is put on the page with textContent,
// never innerHTML, so HTML or script in a name or a message stays plain text.
import { createConsumer } from "/static/cablecar.js";

const MAX_BODY = 2000;
const TYPING_SHOWN_MS = 3000;
const TYPING_SEND_EVERY_MS = 2000;
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
const STATE_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

const $ = (id) => document.getElementById(id);
const timeFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Same rule as the server: invisible characters out, spaces collapsed, 1 to 40 characters.
function cleanName(value) {
  const name = String(value ?? "").normalize("NFC").replace(INVISIBLE, " ").split(/\s+/).filter(Boolean).join(" ");
  return name && [...name].length <= 40 ? name : null;
}

const state = {
  name: null,
  sid: null,
  consumer: null,
  roomsSub: null,
  chatSub: null,
  room: null,
  rooms: [],
  epoch: null, // changes when the server restarts (message ids start again)
  seen: new Set(),
  members: new Set(), // names in the room: protocol presence
  added: 0, // messages put on the page
  missedFrom: null, // state.added when the connection came back (catching up)
  typers: new Map(), // sid -> {name, until}
  lastTypingSent: 0,
  clockOffset: 0, // server clock minus ours, from the fastest HTTP round trip
  bestRtt: Infinity,
};

// -- HTTP: the JSON endpoints (also measure the clock offset) -----------------------------

async function api(path) {
  const sentAt = Date.now();
  const response = await fetch(path, { cache: "no-store" });
  const receivedAt = Date.now();
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  const data = await response.json();
  if (typeof data.server_time === "number" && receivedAt - sentAt < state.bestRtt) {
    state.bestRtt = receivedAt - sentAt;
    state.clockOffset = data.server_time - (sentAt + receivedAt) / 2;
  }
  return { data, receivedAt };
}

const delayOf = (message, receivedAt) => Math.max(0, receivedAt + state.clockOffset - message.ts);
const formatDelay = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);

// -- connection state ---------------------------------------------------------------------

function showState(connectionState, detail = {}) {
  $("conn-state").dataset.state = connectionState;
  $("conn-text").textContent = STATE_TEXT[connectionState] ?? connectionState;
  // Which transport carries the chat: a WebSocket, or long polling when one is blocked.
  const transport = detail.transport === "longpoll" ? "long polling" : "WebSocket";
  $("conn-transport").textContent = connectionState === "connected" ? ` (${transport})` : "";
  $("conn-state").dataset.transport = detail.transport ?? "websocket";
  if (connectionState === "offline" && detail.reason === "unauthorized") {
    stop();
    showWelcome("The server refused this name. Pick another one.");
  }
}

// -- joining and leaving ------------------------------------------------------------------

function showWelcome(error = "") {
  $("welcome").hidden = false;
  $("chat").hidden = true;
  $("how").hidden = true;
  $("me").hidden = true;
  $("name-error").textContent = error;
  $("name-input").value = state.name ?? "";
  $("name-input").focus();
}

function start(name) {
  state.name = name;
  try {
    localStorage.setItem("cablecar-demo-name", name);
  } catch {
    // storage may be disabled; the name just is not remembered
  }
  $("welcome").hidden = true;
  $("chat").hidden = false;
  $("how").hidden = false;
  $("me").hidden = false;
  $("me-name").textContent = name;
  const consumer = createConsumer(`/cable?name=${encodeURIComponent(name)}`);
  consumer.onstatechange = showState;
  state.consumer = consumer;
  state.roomsSub = consumer.subscriptions.create({ channel: "RoomsChannel" }, {
    received(data) {
      if (data.type === "rooms") renderRooms(data.rooms);
    },
  });
  joinRoom(initialRoom());
  restartPolling();
  $("composer-input").focus();
}

function stop() {
  if (state.consumer) state.consumer.disconnect();
  state.consumer = state.roomsSub = state.chatSub = null;
  clearInterval(poll.timer);
}

function initialRoom() {
  const match = /^#room=(.*)$/.exec(location.hash);
  let room = null;
  try {
    room = match && cleanName(decodeURIComponent(match[1]));
  } catch {
    room = null; // a malformed %-escape
  }
  return room || "lobby";
}

function joinRoom(room) {
  if (state.chatSub) state.chatSub.unsubscribe();
  Object.assign(state, { room, epoch: null, seen: new Set() });
  state.typers.clear();
  renderTyping();
  $("messages").replaceChildren();
  $("member-list").replaceChildren();
  $("member-count").textContent = "";
  $("room-title").textContent = `# ${room}`;
  $("how-room").textContent = `# ${room}`;
  $("composer-input").placeholder = `Message # ${room}`;
  history.replaceState(null, "", `#room=${encodeURIComponent(room)}`);
  renderRooms(state.rooms);
  for (const column of [rr, poll, push]) resetColumn(column);
  state.chatSub = state.consumer.subscriptions.create({ channel: "ChatChannel", room }, {
    connected({ reconnected }) {
      // On the extended protocol the server replays what we missed, then says so.
      if (reconnected && this.recovering) state.missedFrom = state.added;
      else if (reconnected) addNotice("Connection is back.");
      catchUp(room);
    },
    historyCompleted() {
      if (state.missedFrom === null) return;
      const caught = state.added - state.missedFrom;
      state.missedFrom = null;
      addNotice(`Reconnected: ${caught} missed message${caught === 1 ? "" : "s"} caught up.`);
    },
    historyLost() {
      state.missedFrom = null;
      addNotice("Reconnected. Older messages are fetched from the server.");
    },
    disconnected({ willAttemptReconnect }) {
      state.typers.clear();
      renderTyping();
      addNotice(willAttemptReconnect ? "Connection lost. Reconnecting…" : "Disconnected.");
    },
    rejected() {
      addNotice(`Could not join # ${room}.`);
    },
    received(data) {
      if (room === state.room) onRoomData(data);
    },
    // Presence events (extended protocol); plain Action Cable gets them in received().
    presenceChanged(event) {
      if (room === state.room) onPresence(event);
    },
  });
}

// Someone joined or left the room (protocol presence: once per name, however many tabs).
function onPresence(event) {
  const name = event.type === "join" ? (event.info?.name ?? event.id) : event.id;
  if (typeof name !== "string") return;
  if (event.type === "join") state.members.add(name);
  else if (event.type === "leave") state.members.delete(name);
  else return;
  setMembers([...state.members].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: "base" })));
  if (name !== state.name) addNotice(`${name} ${event.type === "join" ? "joined" : "left"}.`);
}

// -- what the room channel sends ----------------------------------------------------------

function onRoomData(data) {
  switch (data.type) {
    case "history": {
      if (state.epoch && data.epoch !== state.epoch) {
        addNotice("The server restarted: earlier messages are no longer in its memory.");
        state.seen = new Set();
      }
      state.epoch = data.epoch;
      state.sid = data.you.sid;
      const log = $("messages");
      log.setAttribute("aria-busy", "true"); // don't read 50 old messages aloud
      for (const message of data.messages) addMessage(message);
      log.setAttribute("aria-busy", "false");
      state.members = new Set(data.members);
      setMembers(data.members);
      const newest = data.messages.at(-1)?.id ?? 0;
      for (const column of [rr, poll]) {
        if (column.epoch !== data.epoch) Object.assign(column, { epoch: data.epoch, since: newest });
      }
      return;
    }
    case "message": {
      const receivedAt = Date.now();
      if (addMessage(data)) {
        push.requests += 1;
        showLatest(push, data, delayOf(data, receivedAt));
      }
      state.typers.delete(data.sid);
      return renderTyping();
    }
    case "join":
    case "leave":
      return onPresence(data);
    case "typing": // a whisper from another page
      if (data.sid === state.sid) return;
      state.typers.set(data.sid, { name: data.name, until: Date.now() + TYPING_SHOWN_MS });
      renderTyping();
      setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
      return;
    case "error":
      return showError("composer-error", data.message);
  }
}

// Messages published between the history snapshot and the live stream: fetch them.
async function catchUp(room) {
  try {
    const { data } = await api(`/api/rooms/${encodeURIComponent(room)}/messages?since=0`);
    if (room === state.room && data.epoch === state.epoch) data.messages.forEach((m) => addMessage(m));
  } catch {
    // the push stream carries on; nothing to repair
  }
}

// -- rendering ----------------------------------------------------------------------------

function nearBottom(log) {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function hueOf(text) {
  let hash = 0;
  for (const char of text) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

// Insert a message in id order; false if it was already shown.
function addMessage(message) {
  const key = `${message.epoch}:${message.id}`;
  if (state.seen.has(key)) return false;
  state.seen.add(key);
  state.added += 1;
  const item = el("li", message.sid === state.sid ? "msg mine" : "msg");
  item.dataset.id = message.id;
  item.dataset.epoch = message.epoch;
  const avatar = el("span", "avatar", [...message.name][0].toUpperCase());
  avatar.style.setProperty("--hue", hueOf(message.name));
  avatar.setAttribute("aria-hidden", "true");
  const meta = el("p", "meta");
  const time = el("time", "", timeFormat.format(new Date(message.ts)));
  time.dateTime = new Date(message.ts).toISOString();
  meta.append(el("span", "author", message.name), " ", time);
  const text = el("div", "text");
  text.append(meta, el("p", "body", message.body));
  item.append(avatar, text);

  const log = $("messages");
  const stick = nearBottom(log);
  let before = null;
  for (let node = log.lastElementChild; node; node = node.previousElementSibling) {
    const sameRun = node.dataset.epoch === message.epoch; // ids restart with the server
    if (!sameRun || Number(node.dataset.id) < message.id) break;
    before = node;
  }
  log.insertBefore(item, before);
  if (stick || message.sid === state.sid) log.scrollTop = log.scrollHeight;
  return true;
}

function addNotice(text) {
  const log = $("messages");
  const stick = nearBottom(log);
  log.append(el("li", "notice", text));
  if (stick) log.scrollTop = log.scrollHeight;
}

function setMembers(names) {
  const list = $("member-list");
  list.replaceChildren(
    ...names.map((name) => {
      const item = el("li", "member", name);
      if (name === state.name) item.append(el("span", "you", " (you)"));
      return item;
    }),
  );
  $("member-count").textContent = `(${names.length})`;
}

function renderRooms(rooms) {
  state.rooms = rooms;
  const list = $("room-list");
  const focused = document.activeElement?.dataset?.room;
  list.replaceChildren();
  for (const room of rooms) {
    const button = el("button", "room-button");
    button.type = "button";
    button.dataset.room = room.name;
    const people = room.members === 1 ? "1 person" : `${room.members} people`;
    button.append(el("span", "room-name", `# ${room.name}`), el("span", "count", String(room.members)));
    button.setAttribute("aria-label", `${room.name}, ${people}`);
    if (room.name === state.room) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => room.name !== state.room && joinRoom(room.name));
    const item = el("li");
    item.append(button);
    list.append(item);
    if (room.name === focused) button.focus();
  }
}

function renderTyping() {
  const now = Date.now();
  for (const [sid, typer] of state.typers) if (typer.until <= now) state.typers.delete(sid);
  const names = [...new Set([...state.typers.values()].map((t) => t.name))];
  $("typing").textContent =
    names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` :
    names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : `${names.length} people are typing…`;
}

function showError(id, text) {
  $(id).textContent = text;
}

// -- the "how it works" panel -------------------------------------------------------------

// Every column shows the same readings (class, label, value before any message); only
// the label of the count differs.
const READINGS = [["latest", "Latest message", "–"], ["delay", "Shown after", "–"], ["requests", null, "0"]];

function column(id, countLabel) {
  const node = $(id);
  const list = document.createElement("dl");
  for (const [name, label, initial] of READINGS) {
    const term = document.createElement("dt");
    term.textContent = label ?? countLabel;
    const value = document.createElement("dd");
    value.className = name;
    value.textContent = initial;
    list.append(term, value);
  }
  node.append(list);
  return { node, epoch: null, since: 0, requests: 0, empty: 0, failed: 0, timer: null };
}

const rr = column("method-rr", "Requests");
const poll = column("method-poll", "Requests");
const push = column("method-push", "Messages pushed");

function resetColumn(col) {
  Object.assign(col, { epoch: null, since: 0, requests: 0, empty: 0, failed: 0 });
  for (const [name, , initial] of READINGS) col.node.querySelector(`.${name}`).textContent = initial;
}

function showLatest(col, message, delay) {
  col.node.querySelector(".latest").textContent = `${message.name}: ${message.body}`;
  col.node.querySelector(".delay").textContent = formatDelay(delay);
  col.node.querySelector(".requests").textContent = String(col.requests);
}

async function fetchColumn(col) {
  const room = state.room;
  if (!room || col.epoch === null) return; // wait for the room's history first
  col.requests += 1;
  try {
    const path = `/api/rooms/${encodeURIComponent(room)}/messages?since=${col.since}`;
    const { data, receivedAt } = await api(path);
    if (room !== state.room) return;
    if (data.epoch !== col.epoch) Object.assign(col, { epoch: data.epoch, since: 0 }); // restarted
    const newest = data.messages.at(-1);
    if (newest && newest.id > col.since) {
      col.since = newest.id;
      showLatest(col, newest, delayOf(newest, receivedAt));
    } else {
      col.empty += 1;
    }
  } catch {
    col.failed += 1;
  }
  const notes = [col.empty && `${col.empty} found nothing new`, col.failed && `${col.failed} failed`];
  const note = notes.filter(Boolean).join(", ");
  col.node.querySelector(".requests").textContent = note ? `${col.requests} (${note})` : String(col.requests);
}

function restartPolling() {
  clearInterval(poll.timer);
  poll.timer = setInterval(() => fetchColumn(poll), Number($("poll-interval").value) * 1000);
}

// -- forms and keys -----------------------------------------------------------------------

$("name-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = cleanName($("name-input").value);
  if (!name) return showError("name-error", "A name has 1 to 40 characters.");
  showError("name-error", "");
  start(name);
});

$("change-name").addEventListener("click", () => {
  stop();
  showWelcome();
});

$("room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = cleanName($("room-input").value);
  if (!name) return showError("room-error", "A room name has 1 to 40 characters.");
  showError("room-error", "");
  $("room-input").value = "";
  joinRoom(name); // joining a room that does not exist yet creates it
  $("composer-input").focus();
});

const input = $("composer-input");

function updateCount() {
  const length = [...input.value.trim()].length;
  const count = $("char-count");
  count.textContent = length > MAX_BODY * 0.8 ? `${length} / ${MAX_BODY} characters.` : "";
  count.classList.toggle("over", length > MAX_BODY);
}

input.addEventListener("input", () => {
  updateCount();
  showError("composer-error", "");
  const now = Date.now();
  if (input.value.trim() && state.chatSub && now - state.lastTypingSent > TYPING_SEND_EVERY_MS) {
    // A whisper: straight to the others in the room, no action code, no history.
    if (state.chatSub.whisper({ type: "typing", name: state.name, sid: state.sid })) state.lastTypingSent = now;
  }
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = input.value.trim();
  const length = [...body].length;
  if (!body) return showError("composer-error", "Type a message first: empty messages are not sent.");
  if (length > MAX_BODY) {
    return showError("composer-error",
      `Your message is ${length} characters long; the limit is ${MAX_BODY}. It was not sent.`);
  }
  if (!state.chatSub || !state.chatSub.perform("speak", { body })) {
    return showError("composer-error", "Not connected: your message was not sent. Try again when connected.");
  }
  showError("composer-error", "");
  input.value = "";
  state.lastTypingSent = 0;
  updateCount();
});

$("rr-refresh").addEventListener("click", () => fetchColumn(rr));
$("poll-interval").addEventListener("change", restartPolling);

// -- start --------------------------------------------------------------------------------

api("/api/rooms").then(({ data }) => state.rooms.length || renderRooms(data.rooms)).catch(() => {});
let remembered = null;
try {
  remembered = cleanName(localStorage.getItem("cablecar-demo-name"));
} catch {
  remembered = null;
}
if (remembered) start(remembered);
else showWelcome();

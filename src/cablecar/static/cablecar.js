// cablecar.js: a small, dependency-free Action Cable client for browsers (an ES module).
//
// It has the official @rails/actioncable client's API shape and speaks the same protocol
// (actioncable-v1-json), so it works against cablecar and against Rails:
//
//   import { createConsumer } from "/static/cablecar.js";
//   const consumer = createConsumer("/cable");            // ws(s):// or http(s):// or a path
//   consumer.onstatechange = (state, detail) => { ... };  // see `state` below
//   const room = consumer.subscriptions.create({ channel: "ChatChannel", room: "lobby" }, {
//     connected({ reconnected }) {}, disconnected({ willAttemptReconnect }) {},
//     rejected() {}, received(data) {}, initialized() {},
//   });
//   room.perform("speak", { body: "hi" });                // true if the frame was sent
//   consumer.streamFromSigned(signedName, { received(data) {} });  // a signed stream ($pubsub)
//
// With a cablecar server on history=True it speaks AnyCable's extended protocol (turn it
// off with createConsumer(url, {extended: false})): a reconnect resumes the session (?sid=)
// and gets what was missed, in order; room.whisper(data) and room.presence.join(id, info),
// .leave(), await .info(); events at the mixin's presenceChanged({type, id, info}).
// After a reconnect with subscription.recovering true, the mixin's historyCompleted() says
// everything missed has arrived, historyLost() that some is no longer in the history.
//
// Behaviour, compared with the official client:
// - Commands are sent only after the server's welcome; every subscription is (re)sent on
//   each welcome, so subscriptions survive reconnects.
// - A subscribe still pending after 500 ms is sent again until it is confirmed or rejected.
// - Any frame (ping, welcome, data) counts as a sign of life; a socket silent for
//   `staleThreshold` seconds (6, two missed 3 s pings) is dropped and reopened.
// - A lost socket is reopened after an exponential backoff with jitter (0.5 s, then about
//   x1.8 per attempt, at most 20 s), instead of waiting for the next stale check.
// - {"type":"disconnect","reconnect":false} (e.g. unauthorized), an unsupported subprotocol
//   or consumer.disconnect() stop it for good ("offline"); a later subscriptions.create() or
//   consumer.connect() starts it again.
// - WebSocket first; when a WebSocket cannot open (a proxy strips the upgrade, a firewall
//   blocks it) the next attempt uses long polling (HTTP POSTs to <mount path>/lp, the same
//   channels, identity and history), and every `upgradeInterval` seconds (30) a WebSocket
//   is tried again: when it opens, the connection moves back to it (resuming the session
//   with history=True). consumer.transport says which is in use ("websocket" or
//   "longpoll"); createConsumer(url, {transports: ["websocket"]}) turns the fallback off.
// - consumer.state: "idle" (before the first connect), "connecting", "connected" (welcomed),
//   "reconnecting" (waiting to retry, or retrying), "offline" (stopped; detail.reason says why).
// - connected({reconnected}) is true when this subscription had been confirmed on an
//   earlier socket, so the page knows it may have missed messages.

export const INTERNAL = {
  message_types: { welcome: "welcome", disconnect: "disconnect", ping: "ping",
    confirmation: "confirm_subscription", rejection: "reject_subscription" },
  default_mount_path: "/cable",
  protocols: ["actioncable-v1-json", "actioncable-unsupported"],
  // AnyCable's extended protocol, offered first unless {extended: false}: session resume,
  // stream history, presence and whisper, where the server speaks it (history=True).
  ext_protocol: "actioncable-v1-ext-json",
};

// Swap adapters.WebSocket for another implementation (e.g. the `ws` package under Node).
export const adapters = { WebSocket: undefined, logger: globalThis.console };

export const logger = {
  enabled: false,
  log(...messages) {
    if (this.enabled) adapters.logger.log("[cablecar]", ...messages, Date.now());
  },
};

export function createConsumer(url = getConfig("url") || INTERNAL.default_mount_path, options = {}) {
  return new Consumer(url, options);
}

// The <meta name="action-cable-url" content="..."> value, as the official client reads it.
export function getConfig(name) {
  const element = globalThis.document?.head?.querySelector(`meta[name='action-cable-${name}']`);
  return element ? element.getAttribute("content") : undefined;
}

// Relative and http(s) URLs become absolute ws(s) URLs (relative to the page's location).
export function createWebSocketURL(url) {
  if (typeof url === "function") url = url();
  const absolute = new URL(url, globalThis.location?.href);
  absolute.protocol = absolute.protocol.replace(/^http/, "ws");
  return absolute.href;
}

export class Consumer {
  static defaults = {
    extended: true, // offer the extended protocol (resume, history, presence, whisper)
    transports: ["websocket", "longpoll"], // in order of preference; the rest are fallbacks
    upgradeInterval: 30, // seconds between WebSocket probes while on long polling
    staleThreshold: 6, // seconds without any frame before the socket counts as dead
    reconnectDelay: { min: 0.5, max: 20, factor: 1.8, jitter: 0.5 }, // seconds; jitter: +0..50%
  };

  constructor(url, options = {}) {
    this._url = url;
    this.options = { ...Consumer.defaults, ...options };
    this.subprotocols = [];
    this.subscriptions = new Subscriptions(this);
    this.state = "idle";
    this.onstatechange = null; // (state, {reason}) => void
    this._running = false; // should a socket be open (or being reopened)?
    this._ws = null;
    this._welcomed = false; // has the current socket received welcome?
    this._everConnected = false;
    this._attempts = 0; // reconnect attempts since the last welcome
    this._socketCount = 0;
    this._retryTimer = null;
    this._monitor = null;
    this.ext = false; // the current socket speaks the extended protocol
    this.sid = null; // its session id: sent back on reconnect to resume the session
    this._positions = new Map(); // identifier -> {stream: {epoch, offset}} (history)
    this._since = 0; // unix seconds of the last positioned message
    this.transport = this.options.transports[0] ?? "websocket"; // the one in use (or next)
    this._probe = null; // a WebSocket tried while on long polling
    this._lastProbe = 0;
    if (typeof window !== "undefined") {
      // Back online: don't wait for the backoff timer.
      window.addEventListener("online", () => this._running && !this._ws && this._open());
    }
  }

  get url() {
    const url = createWebSocketURL(this._url);
    if (!this.sid) return url;
    const withSid = new URL(url);
    withSid.searchParams.set("sid", this.sid); // resume this session (AnyCable's ?sid=)
    return withSid.href;
  }

  // Subscribe to a stream by a name the server signed (Python: cable.signed_stream_name),
  // through the $pubsub channel, like @anycable/web's cable.streamFromSigned().
  streamFromSigned(signedStreamName, mixin = {}) {
    return this.subscriptions.create({ channel: "$pubsub", signed_stream_name: signedStreamName }, mixin);
  }

  // Subscribe to a public stream by its name (the server needs public_streams=True).
  streamFrom(streamName, mixin = {}) {
    return this.subscriptions.create({ channel: "$pubsub", stream_name: streamName }, mixin);
  }

  addSubProtocol(subprotocol) {
    this.subprotocols = [...this.subprotocols, subprotocol];
  }

  // Open the connection (idempotent). Returns true if a new socket was opened.
  connect() {
    this._running = true;
    if (!this._monitor) this._monitor = setInterval(() => this._checkStale(), 1000);
    if (this._ws || this._retryTimer) return false;
    this._open();
    return true;
  }

  // Close the connection for good (until connect() or subscriptions.create() is called).
  disconnect() {
    this._stop("client");
  }

  ensureActiveConnection() {
    if (!this._running) this.connect();
  }

  isConnected() {
    return this._welcomed;
  }

  // Send one command object; false (and nothing sent) unless the server has welcomed us.
  send(data) {
    if (!this._welcomed || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(data));
    return true;
  }

  _setState(state, detail = {}) {
    detail = { ...detail, transport: this.transport };
    if (state === this.state) return;
    logger.log(`state ${this.state} -> ${state}`, detail.reason ?? "");
    this.state = state;
    if (typeof this.onstatechange === "function") this.onstatechange(state, detail);
  }

  _open() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const WebSocketClass = adapters.WebSocket || globalThis.WebSocket;
    const offered = this.options.extended ? [INTERNAL.ext_protocol, ...INTERNAL.protocols] : INTERNAL.protocols;
    const SocketClass = this.transport === "longpoll" ? LongPollSocket : WebSocketClass;
    const ws = new SocketClass(this.url, [...offered, ...this.subprotocols]);
    ws._opened = false;
    this._ws = ws;
    this._welcomed = false;
    this._lastSeen = Date.now();
    this._socketCount += 1;
    this._setState(this._everConnected || this._attempts > 0 ? "reconnecting" : "connecting");
    ws.onopen = () => {
      if (ws !== this._ws) return;
      ws._opened = true;
      this._lastProbe = Date.now();
      this.ext = ws.protocol === INTERNAL.ext_protocol;
      if (!this.ext) this.sid = null;
      if (ws.protocol !== INTERNAL.protocols[0] && !this.ext) {
        logger.log(`unsupported subprotocol '${ws.protocol}', stopping`);
        this._stop("unsupported_protocol");
      }
    };
    ws.onmessage = (event) => ws === this._ws && this._receive(ws, event.data);
    ws.onclose = () => this._socketGone(ws);
    // Browsers follow an error with a close event; Node 20's WebSocket may not, so drop it now.
    ws.onerror = () => this._drop(ws, "error");
  }

  _receive(ws, raw) {
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return logger.log("ignoring a frame that is not JSON", raw);
    }
    this._lastSeen = Date.now();
    const types = INTERNAL.message_types;
    switch (frame.type) {
      case types.welcome: {
        this._welcomed = true;
        this._everConnected = true;
        this._attempts = 0;
        if (this.ext && typeof frame.sid === "string") this.sid = frame.sid;
        const restored = this.ext && frame.restored === true && Array.isArray(frame.restored_ids)
          ? new Set(frame.restored_ids) : null;
        this._setState("connected", { restored: Boolean(restored) });
        return this.subscriptions.reload(restored);
      }
      case types.disconnect:
        logger.log(`server disconnect: reason=${frame.reason} reconnect=${frame.reconnect}`);
        if (frame.reconnect === false) return this._stop(frame.reason || "disconnect");
        return this._drop(ws, frame.reason);
      case types.ping:
        if (this.ext) this.send({ command: "pong" });
        return;
      case types.confirmation:
        return this.subscriptions.confirm(frame.identifier);
      case types.rejection:
        return this.subscriptions.reject(frame.identifier);
      case "confirm_history": // everything missed while away has been delivered
        return this.subscriptions.notify(frame.identifier, "historyCompleted");
      case "reject_history": // what was missed is no longer in the server's history
        return this.subscriptions.notify(frame.identifier, "historyLost");
      case "presence":
        return this.subscriptions.presence(frame.identifier, frame.message);
      default:
        if (!this._welcomed) return;
        if (typeof frame.stream_id === "string" && typeof frame.offset === "number") {
          const streams = this._positions.get(frame.identifier) ?? {};
          streams[frame.stream_id] = { epoch: frame.epoch, offset: frame.offset };
          this._positions.set(frame.identifier, streams);
          this._since = Math.floor(Date.now() / 1000);
        }
        this.subscriptions.notify(frame.identifier, "received", frame.message);
    }
  }

  // Forget the current socket (closing it without waiting for the server), then reconnect
  // or go offline.
  _drop(ws, reason) {
    this._socketGone(ws, reason);
    try {
      ws.close();
    } catch {
      // already closing
    }
  }

  _socketGone(ws, reason) {
    if (ws !== this._ws) return; // an old socket's late close event
    const wasConnected = this._welcomed;
    this._ws = null;
    this._welcomed = false;
    this.subscriptions.socketClosed();
    if (wasConnected) {
      this.subscriptions.notifyAll("disconnected", { willAttemptReconnect: this._running });
    }
    if (!this._running) return this._setState("offline", { reason });
    const transports = this.options.transports;
    if (ws._opened) {
      this._failures = 0;
      if (this.transport === transports[0]) this._firstWorked = true;
    } else {
      this._failures = (this._failures ?? 0) + 1;
    }
    // A transport that could not even open gives way to the next one: at once when the
    // preferred one has never worked here (a proxy that strips WebSocket upgrades), or
    // after three failures in a row (a server that is down fails every transport alike).
    const giveWay = !this._firstWorked || this._failures >= 3 || this.transport !== transports[0];
    if (!ws._opened && reason !== "upgrade" && transports.length > 1 && giveWay) {
      const next = (transports.indexOf(this.transport) + 1) % transports.length;
      this._failures = 0;
      this.transport = transports[next];
      logger.log(`transport: ${this.transport}`);
      if (next > 0) return this._open();
    }
    if (reason === "upgrade") return this._open(); // a WebSocket works again: move now
    this._scheduleReconnect(reason);
  }

  // On long polling: now and then see whether a WebSocket opens; if one does, move to it.
  _tryUpgrade() {
    const interval = this.options.upgradeInterval * 1000;
    if (this.transport !== "longpoll" || !this._welcomed || this._probe) return;
    if (Date.now() - this._lastProbe < interval) return;
    this._lastProbe = Date.now();
    const WebSocketClass = adapters.WebSocket || globalThis.WebSocket;
    let probe;
    try {
      probe = new WebSocketClass(this.url, INTERNAL.protocols);
    } catch {
      return;
    }
    this._probe = probe;
    const done = () => { if (this._probe === probe) this._probe = null; };
    probe.onopen = () => {
      done();
      probe.close();
      if (this.transport !== "longpoll" || !this._ws) return;
      logger.log("a WebSocket opens again: leaving long polling");
      this.transport = this.options.transports[0];
      this._drop(this._ws, "upgrade");
    };
    probe.onerror = done;
    probe.onclose = done;
  }

  _scheduleReconnect(reason) {
    const { min, max, factor, jitter } = this.options.reconnectDelay;
    const base = Math.min(max, min * factor ** this._attempts);
    const delay = base * (1 + jitter * Math.random());
    this._attempts += 1;
    logger.log(`reconnecting in ${delay.toFixed(2)} s (attempt ${this._attempts})`);
    this._setState("reconnecting", { reason, delay });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay * 1000);
  }

  _checkStale() {
    this._tryUpgrade();
    const ws = this._ws;
    // Long polling has no pings: an answered poll is its sign of life.
    const threshold = ws?.staleAfter ?? this.options.staleThreshold;
    const lastSeen = Math.max(this._lastSeen, ws?.lastSeen ?? 0);
    if (ws && Date.now() - lastSeen > threshold * 1000) {
      logger.log(`no frame for ${threshold} s: dropping a stale socket`);
      this._drop(ws, "stale");
    }
  }

  // What the extended protocol asks for after a reconnect: everything after our positions.
  _historyRequest(identifier) {
    const streams = this._positions.get(identifier);
    return streams ? { since: this._since, streams } : null;
  }

  _stop(reason) {
    this._running = false;
    this.sid = null;
    clearInterval(this._monitor);
    clearTimeout(this._retryTimer);
    this._monitor = this._retryTimer = null;
    if (this._ws) this._drop(this._ws, reason);
    else this._setState("offline", { reason });
  }
}

// Long polling with a WebSocket's face (readyState, protocol, send, close, on* handlers),
// so the consumer drives it like a socket. Each POST carries the commands queued since the
// last one and the number of the last frame received (X-Cablecar-Poll-Ack): the server
// keeps every frame until a later poll acknowledges it, so a lost or aborted response
// loses nothing; frames seen twice are skipped by their number.
export class LongPollSocket {
  constructor(url, protocols = []) {
    const target = new URL(url.replace(/^ws/, "http"));
    target.pathname = target.pathname.replace(/\/+$/, "") + "/lp";
    this.url = target.href;
    this.readyState = 0; // CONNECTING
    this.protocol = "";
    this.staleAfter = 20; // seconds without an answer (the server holds a poll 15 s at most)
    this.lastSeen = Date.now();
    this._offered = protocols;
    this._pid = null;
    this._ack = 0;
    this._outbox = [];
    this._inflight = 0;
    this._flushQueued = false;
    this._controllers = new Set();
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._request();
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("long polling: not open");
    this._outbox.push(data);
    if (this._flushQueued) return;
    this._flushQueued = true;
    queueMicrotask(() => {
      this._flushQueued = false;
      if (this._outbox.length && this.readyState === 1) this._request(); // the server
    }); // answers the waiting poll at once, empty, and this one carries the commands
  }

  close() {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    for (const controller of this._controllers) controller.abort();
    queueMicrotask(() => this.onclose?.({ code: 1000, reason: "" }));
  }

  _fail() {
    if (this.readyState >= 2) return;
    this.onerror?.(new Event("error"));
    this.close();
  }

  _request() {
    const headers = { "Content-Type": "application/x-ndjson" };
    if (this._pid) {
      headers["X-AnyCable-Poll-ID"] = this._pid;
      headers["X-Cablecar-Poll-Ack"] = String(this._ack);
    }
    const body = this._outbox.splice(0).join("\n");
    const controller = new AbortController();
    this._controllers.add(controller);
    this._inflight += 1;
    fetch(this.url, { method: "POST", headers, body, credentials: "same-origin", signal: controller.signal })
      .then(async (response) => {
        const text = await response.text();
        if (this.readyState >= 2) return;
        this.lastSeen = Date.now();
        if (response.status === 401 && this._pid) return this.close(); // session expired
        if (!response.ok && response.status !== 401) return this._fail();
        this._pid = response.headers.get("X-AnyCable-Poll-ID") || this._pid;
        const lines = text.split("\n").filter((line) => line.trim());
        const last = Number(response.headers.get("X-Cablecar-Poll-Seq") || 0);
        if (this.readyState === 0) {
          this.readyState = 1;
          const welcome = lines.length ? JSON.parse(lines[0]) : {};
          const ext = typeof welcome.sid === "string" && this._offered.includes("actioncable-v1-ext-json");
          this.protocol = ext ? "actioncable-v1-ext-json" : "actioncable-v1-json";
          this.onopen?.({});
        }
        let seq = last - lines.length;
        for (const line of lines) {
          seq += 1;
          if (seq <= this._ack) continue; // already had it (a response resent)
          this._ack = seq;
          if (this.readyState !== 1) return;
          this.onmessage?.({ data: line });
        }
        if (response.status === 401) this.close();
      })
      .catch(() => this._fail())
      .finally(() => {
        this._controllers.delete(controller);
        this._inflight -= 1;
        if (this.readyState === 1 && this._inflight === 0) this._request();
      });
  }
}

export class Subscription {
  constructor(consumer, params = {}, mixin = {}) {
    this.consumer = consumer;
    this.identifier = JSON.stringify(params);
    Object.assign(this, mixin);
  }

  // Call a channel action: {"action": action, ...data}. True if the frame was sent.
  perform(action, data = {}) {
    return this.send({ ...data, action });
  }

  send(data) {
    return this.consumer.send({ command: "message", identifier: this.identifier, data: JSON.stringify(data) });
  }

  // Send data to the other subscribers of the channel's whisper stream (extended protocol):
  // typing indicators, cursors. False if it could not be sent.
  whisper(data) {
    return this.consumer.ext && this.consumer.send({ command: "whisper", identifier: this.identifier, data });
  }

  // Presence (extended protocol): join(id, info), leave(), info() -> Promise<{id: info}>.
  // Events arrive at the mixin's presenceChanged({type: "join"|"leave", id, info}) callback.
  get presence() {
    this._presence ??= new Presence(this);
    return this._presence;
  }

  unsubscribe() {
    return this.consumer.subscriptions.remove(this);
  }
}

export class Presence {
  constructor(subscription) {
    this.subscription = subscription;
    this.joined = null; // {id, info} while joined: joined again after a reconnect
    this._waiting = [];
  }

  join(id, info = null) {
    this.joined = { id: String(id), info };
    return this._send({ command: "join", presence: this.joined });
  }

  leave() {
    this.joined = null;
    return this._send({ command: "leave" });
  }

  info() {
    return new Promise((resolve, reject) => {
      if (!this._send({ command: "presence", data: {} })) {
        reject(new Error("presence needs a connected extended-protocol socket"));
        return;
      }
      this._waiting.push({ resolve, reject });
    });
  }

  _send(frame) {
    const consumer = this.subscription.consumer;
    return consumer.ext && consumer.send({ ...frame, identifier: this.subscription.identifier });
  }

  _frame(message) {
    if (message.type === "info" || message.type === "error") {
      const waiting = this._waiting.shift();
      if (!waiting) return;
      if (message.type === "error") waiting.reject(new Error("presence is not available here"));
      else waiting.resolve(Object.fromEntries((message.records ?? []).map((r) => [r.id, r.info])));
    }
  }

  _disconnected() {
    for (const waiting of this._waiting.splice(0)) waiting.reject(new Error("disconnected"));
  }
}

export class Subscriptions {
  constructor(consumer) {
    this.consumer = consumer;
    this.subscriptions = [];
    this._pending = new Set(); // sent, neither confirmed nor rejected yet (the guarantor)
    this._retryTimer = null;
  }

  create(channelOrParams, mixin) {
    const params = typeof channelOrParams === "object" ? channelOrParams : { channel: channelOrParams };
    const subscription = new Subscription(this.consumer, params, mixin);
    this.subscriptions.push(subscription);
    this.consumer.ensureActiveConnection();
    this.notify(subscription, "initialized");
    this.subscribe(subscription);
    return subscription;
  }

  subscribe(subscription) {
    subscription._confirmedOn = null;
    const frame = { command: "subscribe", identifier: subscription.identifier };
    // recovering: a history request went out; historyCompleted() or historyLost() follows.
    subscription.recovering = false;
    if (this.consumer.ext) {
      const history = this.consumer._historyRequest(subscription.identifier);
      if (history) frame.history = history; // what we missed while away
      subscription.recovering = Boolean(history);
      const joined = this._joined(subscription.identifier);
      if (joined) frame.presence = joined; // joined again right after the confirmation
    }
    if (this.consumer.send(frame)) {
      this._pending.add(subscription);
      if (!this._retryTimer) this._retryTimer = setTimeout(() => this._retry(), 500);
    }
  }

  _retry() {
    this._retryTimer = null;
    for (const subscription of this._pending) {
      logger.log(`re-sending subscribe ${subscription.identifier}`);
      this.subscribe(subscription);
    }
  }

  remove(subscription) {
    this._forget(subscription);
    if (!this.findAll(subscription.identifier).length) this._command(subscription, "unsubscribe");
    return subscription;
  }

  confirm(identifier) {
    const socket = this.consumer._socketCount;
    for (const subscription of this.findAll(identifier)) {
      this._pending.delete(subscription);
      if (subscription._confirmedOn === socket) continue; // a duplicate confirmation
      const reconnected = Boolean(subscription._wasConfirmed);
      subscription._confirmedOn = socket;
      subscription._wasConfirmed = true;
      this.notify(subscription, "connected", { reconnected });
    }
  }

  reject(identifier) {
    for (const subscription of this.findAll(identifier)) {
      this._forget(subscription);
      this.notify(subscription, "rejected");
    }
  }

  // After a welcome: subscribe again, except what a resumed session still holds (restored
  // ids): those are confirmed at once and ask for what was missed.
  reload(restored = null) {
    const asked = new Set();
    for (const subscription of this.subscriptions) {
      const id = subscription.identifier;
      if (!restored?.has(id)) {
        this.subscribe(subscription);
        continue;
      }
      const history = this.consumer._historyRequest(id);
      for (const s of this.findAll(id)) s.recovering = Boolean(history);
      this.confirm(id);
      if (asked.has(id)) continue;
      asked.add(id);
      if (history) this.consumer.send({ command: "history", identifier: id, history });
      const joined = this._joined(id);
      if (joined) this.consumer.send({ command: "join", identifier: id, presence: joined });
    }
  }

  presence(identifier, message) {
    if (!message || typeof message !== "object") return;
    for (const subscription of this.findAll(identifier)) {
      subscription._presence?._frame(message);
      if (message.type === "join" || message.type === "leave") this.notify(subscription, "presenceChanged", message);
    }
  }

  _joined(identifier) {
    for (const subscription of this.findAll(identifier)) {
      if (subscription._presence?.joined) return subscription._presence.joined;
    }
    return null;
  }

  socketClosed() {
    this._pending.clear(); // reload() sends them all again after the next welcome
    for (const subscription of this.subscriptions) {
      subscription._confirmedOn = null;
      subscription._presence?._disconnected();
    }
  }

  findAll(identifier) {
    return this.subscriptions.filter((s) => s.identifier === identifier);
  }

  notifyAll(callbackName, ...args) {
    for (const subscription of [...this.subscriptions]) this.notify(subscription, callbackName, ...args);
  }

  notify(subscriptionOrIdentifier, callbackName, ...args) {
    const targets = typeof subscriptionOrIdentifier === "string"
      ? this.findAll(subscriptionOrIdentifier) : [subscriptionOrIdentifier];
    for (const subscription of targets) {
      if (typeof subscription[callbackName] === "function") subscription[callbackName](...args);
    }
  }

  _forget(subscription) {
    this._pending.delete(subscription);
    this.subscriptions = this.subscriptions.filter((s) => s !== subscription);
  }

  _command(subscription, command) {
    return this.consumer.send({ command, identifier: subscription.identifier });
  }
}

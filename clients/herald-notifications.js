// herald-notifications.js: a standalone browser (and Node >= 20 with
// --experimental-websocket) client for herald's /ws/notifications/.
// It does what the contract recommends to frontends: the token as the
// WebSocket subprotocol, reconnection with exponential backoff and full
// jitter, de-duplication by notification id, and resume from the last id
// seen (?last_id=N), so a reconnect neither loses nor repeats a notification.
//
//   import { HeraldNotifications } from "./herald-notifications.js";
//   const feed = new HeraldNotifications({
//     url: "wss://example.com/ws/notifications/",
//     getToken: async () => accessTokenInMemory,     // called before each connect
//     onNotification: (n) => render(n),               // each id exactly once
//     onEvent: (event) => {},                         // every other event
//     onStatus: (status, detail) => {},               // "open" | "closed" | "reconnecting"
//     onGap: (resumed) => refetch(),                  // herald could not vouch for a resume
//   });
//   // options: minDelay/maxDelay (ms, backoff), openTimeout (ms, handshake), lastId
//   feed.start();  feed.markRead(id);  feed.markAllRead();  feed.refresh(token);  feed.stop();

/** Close codes after which reconnecting is pointless without a new token. */
const AUTH_CODES = new Set([4001, 4003]);

export class HeraldNotifications {
  constructor(options) {
    this.url = options.url;
    this.getToken = options.getToken || (async () => null);
    this.onNotification = options.onNotification || (() => {});
    this.onEvent = options.onEvent || (() => {});
    this.onStatus = options.onStatus || (() => {});
    // Called with the `resumed` data when herald says it could not recover
    // everything since our position (`recovered: false`): reload the list
    // from the application (or resume from 0) to show what may be missing.
    this.onGap = options.onGap || (() => {});
    this.minDelay = options.minDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 30000;
    this.openTimeout = options.openTimeout ?? 10000;
    this.lastId = options.lastId ?? null;
    this.seen = new Set();
    this.seenOrder = [];
    this.seenLimit = options.seenLimit ?? 2000;
    this.attempt = 0;
    this.stopped = true;
    this.ws = null;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  send(message) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  markRead(id) { return this.send({ type: "mark_read", id }); }
  markAllRead() { return this.send({ type: "mark_all_read" }); }
  refresh(token) { return this.send({ type: "refresh", token }); }
  ping() { return this.send({ type: "ping" }); }

  async connect() {
    if (this.stopped) return;
    let token = null;
    try {
      token = await this.getToken();
    } catch (error) {
      this.onStatus("reconnecting", { error: String(error) });
      return this.scheduleReconnect();
    }
    const url = new URL(this.url);
    if (this.lastId !== null) url.searchParams.set("last_id", String(this.lastId));
    const ws = new WebSocket(url.toString(), token ? [token] : []);
    this.ws = ws;
    let opened = false;
    // Browsers fire "close" after a failed handshake; Node's WebSocket only
    // fires "error" and stays CONNECTING. Either way, and for a handshake
    // that never answers, the connection is lost exactly once.
    const lost = (code, reason) => {
      clearTimeout(handshake);
      if (this.ws !== ws) return;
      this.ws = null;
      this.onStatus("closed", { code, reason });
      if (!this.stopped) this.scheduleReconnect(code);
    };
    const handshake = setTimeout(() => {
      lost(1006, "handshake timed out");
      try { ws.close(); } catch { /* already closing */ }
    }, this.openTimeout);
    ws.onopen = () => {
      opened = true;
      clearTimeout(handshake);
      this.attempt = 0;
      this.onStatus("open", {});
    };
    ws.onmessage = (message) => this.handle(message.data);
    ws.onerror = () => {
      if (!opened) lost(1006, "connection failed");
    };
    ws.onclose = (event) => lost(event.code, event.reason);
  }

  scheduleReconnect(code) {
    // Full jitter: a random delay up to min(max, min * 2^attempt).
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = AUTH_CODES.has(code) ? Math.max(ceiling, this.minDelay) : Math.random() * ceiling;
    this.attempt += 1;
    this.onStatus("reconnecting", { delay, attempt: this.attempt });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  handle(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (event.type === "notification" && event.data && typeof event.data.id === "number") {
      const id = event.data.id;
      if (this.lastId === null || id > this.lastId) this.lastId = id;
      if (this.seen.has(id)) return;
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > this.seenLimit) this.seen.delete(this.seenOrder.shift());
      this.onNotification(event.data);
      return;
    }
    if (event.type === "resumed" && event.data) {
      // The server pages a long replay (also one it started itself when
      // live messages may have been lost: `resync: true`).
      if (event.data.more) this.send({ type: "resume", last_id: event.data.last_id });
      if (event.data.recovered === false) this.onGap(event.data);
    }
    this.onEvent(event);
  }
}

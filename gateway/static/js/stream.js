// Watching jobs live: one EventSource per group of up to 50 active jobs (`GET /events`), so a
// page watching many jobs stays within a browser's six connections per origin.
//
// The page never relies on EventSource's own reconnect: a browser gives up for good on any
// non-200 answer (a proxy's 502 during a deploy), and its retry reuses the URL it was opened
// with. On any error the page closes the stream and opens a new one after a backoff, from its
// own cursor (`?last_event_id=`), which only moves when an event is applied. Each job drops
// events at or before its cursor, so a replayed event is never applied twice.
//
// With `?transport=ws` (js/transport.js) each group is one WebSocket to `/events/ws` instead,
// with the same URL, cursor and retries: the same events arrive as JSON messages
// (`{"id", "type", "data"}`), and any close before every job ended (a dead gateway, a refused
// handshake, a close code other than the end's) is a failure like EventSource's error.

import { jobStatus, ApiError } from "./api.js";
import { compareStreamIds, formatCursor, positionIn } from "./cursor.js";
import { CONNECTION_TYPES, STORED_TYPES } from "./events.js";
import { chosenTransport, socketAddress } from "./transport.js";

export const MAX_JOBS_PER_STREAM = 50;
const MAX_URL_CHARS = 8000; // well under what servers and proxies accept in a request line
const BACKOFF_FIRST_MS = 300;
const BACKOFF_MAX_MS = 10_000;
const FAILURES_BEFORE_PROBE = 3;
const PROBE_EVERY = 5;
// A running job writes at least a heartbeat every JOBWIRE_HEARTBEAT_S (15 s by default); a
// stream silent for much longer is presumed dead (a network that vanished without a word),
// and reopened from the cursor. A false alarm costs one reconnection.
const SILENCE_LIMIT_MS = 45_000;
// EventSource hands a listener only the event types it was registered for ("message": none).
const LISTENED_TYPES = [...STORED_TYPES, ...CONNECTION_TYPES, "message"];

function backoffMs(failures) {
  const base = Math.min(BACKOFF_FIRST_MS * 2 ** Math.max(0, failures - 1), BACKOFF_MAX_MS);
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

export function streamUrl(jobs, transport = "sse") {
  const params = new URLSearchParams();
  for (const job of jobs) params.append("job", job.id);
  for (const job of jobs) if (job.watchToken) params.append("token", job.watchToken);
  const cursor = formatCursor(jobs.map((job) => [job.id, job.cursor]));
  if (cursor) params.set("last_event_id", cursor);
  return `${transport === "ws" ? "/events/ws" : "/events"}?${params}`;
}

// A watch token is `base64url(JSON [job id, expiry in unix s, …]).signature`: signed, not
// encrypted, so the page can tell when one has expired without asking.
export function tokenExpired(token, nowMs = Date.now()) {
  if (typeof token !== "string") return false;
  try {
    const body = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
    const expiresAt = JSON.parse(atob(body))[1];
    return typeof expiresAt === "number" && expiresAt * 1000 <= nowMs;
  } catch {
    return false;
  }
}

// One EventSource over a fixed set of jobs, reopened from the cursor after any error.
class Feed {
  constructor(watcher, jobs) {
    this.watcher = watcher;
    this.jobs = jobs;
    this.source = null;
    this.timer = null;
    this.watchdog = null;
    this.heardAt = 0; // performance.now() of the stream's last sign of life
    this.failures = 0;
    this.everOpened = false;
    this.renewing = false; // asking the gateway for fresh watch tokens
    this.state = "connecting"; // connecting | open | reconnecting | unauthorized | closed
  }

  get finished() {
    return this.jobs.every((job) => job.terminal);
  }

  open() {
    this.clearTimer();
    if (this.finished) return this.close();
    // A stream with an expired token is refused (401) however often it is tried: a job that
    // runs longer than the token lasts gets a fresh one from GET /jobs/{id}, with the key.
    if (this.jobs.some((job) => !job.terminal && tokenExpired(job.watchToken))) {
      this.renewTokensThenOpen();
      return;
    }
    const active = this.jobs.filter((job) => !job.terminal);
    if (this.watcher.transport === "ws") return this.openSocket(active);
    const source = new EventSource(streamUrl(active));
    this.source = source;
    this.feedWatchdog();
    source.addEventListener("open", () => {
      if (this.source !== source) return;
      this.everOpened = true;
      this.feedWatchdog();
      this.setState("open");
    });
    for (const type of LISTENED_TYPES) {
      source.addEventListener(type, (event) => this.received(source, event));
    }
  }

  // The WebSocket twin of the EventSource above: `source` is the socket.
  openSocket(jobs) {
    const socket = new WebSocket(socketAddress(streamUrl(jobs, "ws")));
    this.source = socket;
    this.feedWatchdog();
    socket.addEventListener("open", () => {
      if (this.source !== socket) return;
      this.everOpened = true;
      this.feedWatchdog();
      this.setState("open");
    });
    socket.addEventListener("message", (message) => this.receivedMessage(socket, message));
    // The `end` message comes after every job's terminal event, which closed the feed already:
    // a close still heard here came before that, whatever its code.
    socket.addEventListener("close", () => {
      if (this.source === socket) this.failed();
    });
  }

  receivedMessage(socket, message) {
    if (this.source !== socket) return;
    const { id, type, data } = JSON.parse(message.data);
    if (type === "end") return;
    this.failures = 0;
    this.feedWatchdog();
    this.watcher.apply(type, id ?? "", data);
    if (this.finished) this.close();
  }

  received(source, event) {
    if (this.source !== source) return;
    // An SSE event named `error` (a job's non-fatal error) arrives as a MessageEvent;
    // the connection failing is a plain Event.
    if (!(event instanceof MessageEvent)) return this.failed();
    this.failures = 0;
    this.feedWatchdog();
    this.watcher.deliver(event);
    if (this.finished) this.close();
  }

  failed() {
    this.clearTimer();
    this.source?.close();
    this.source = null;
    if (this.finished) return this.close();
    this.failures += 1;
    this.setState("reconnecting");
    if (this.shouldProbe()) this.probe();
    this.timer = setTimeout(() => this.open(), backoffMs(this.failures));
  }

  async renewTokensThenOpen() {
    if (this.renewing) return;
    this.renewing = true;
    try {
      await this.probe();
    } finally {
      this.renewing = false;
    }
    if (this.state === "unauthorized" || this.state === "closed") return;
    const stillExpired = this.jobs.some((job) => !job.terminal && tokenExpired(job.watchToken));
    // The network is still away, or no key to renew with: back off and try again.
    if (stillExpired) this.failed();
    else this.open();
  }

  // A stream refused from the start (a job expired while the page was closed) is probed at
  // once; one that worked before, after a few failures and then now and then.
  shouldProbe() {
    if (!this.everOpened && this.failures === 1) return true;
    return this.failures === FAILURES_BEFORE_PROBE || this.failures % PROBE_EVERY === 0;
  }

  // EventSource cannot see why it failed: ask the REST side about each job.
  async probe() {
    for (const job of this.jobs.filter((candidate) => !candidate.terminal)) {
      try {
        const state = await jobStatus(job.id);
        // An expired watch token makes the stream fail while the API key still works.
        if (typeof state?.watch_token === "string") job.watchToken = state.watch_token;
      } catch (error) {
        if (!(error instanceof ApiError)) return; // the network is still away
        if (error.status === 404) {
          job.markGone();
          this.watcher.changed(job);
        } else if (error.status === 401 || error.status === 403) {
          // Retrying cannot help until the key changes (`retryNow`).
          this.clearTimer();
          this.source?.close();
          this.source = null;
          this.setState("unauthorized");
          return;
        }
      }
    }
    if (this.finished) this.close();
  }

  // The network is back, or the key changed: try now instead of after the backoff.
  retryNow() {
    if (this.state === "reconnecting" || this.state === "unauthorized") {
      this.failures = Math.min(this.failures, 1);
      this.open();
    }
  }

  // The browser says the network is gone: end the stream instead of waiting for a timeout.
  suspend() {
    if (this.state === "closed") return;
    this.source?.close();
    this.source = null;
    this.clearTimer();
    this.failures += 1;
    this.setState("reconnecting");
    this.timer = setTimeout(() => this.open(), backoffMs(this.failures));
  }

  close() {
    this.clearTimer();
    this.source?.close();
    this.source = null;
    this.setState("closed");
  }

  // Called for every event: it only notes the time, and the one timer, when it fires, checks
  // how long the stream has really been silent (a new timer per event costs as much as the
  // rest of applying it, at thousands of events a second).
  feedWatchdog() {
    this.heardAt = performance.now();
    if (this.watchdog === null) this.watchSilence(SILENCE_LIMIT_MS);
  }

  watchSilence(delayMs) {
    this.watchdog = setTimeout(() => {
      const silentMs = performance.now() - this.heardAt;
      if (silentMs < SILENCE_LIMIT_MS) return this.watchSilence(SILENCE_LIMIT_MS - silentMs);
      this.watchdog = null;
      this.failed();
    }, delayMs);
  }

  clearTimer() {
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    this.timer = null;
    this.watchdog = null;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.watcher.feedChanged();
  }
}

// All the page's streams: which jobs each carries, and applying what they deliver.
export class Watcher {
  constructor({ onJobChanged, onConnectionChanged, transport = chosenTransport() }) {
    this.transport = transport;
    this.jobs = new Map();
    this.feeds = new Set();
    this.onJobChanged = onJobChanged;
    this.onConnectionChanged = onConnectionChanged;
    this.syncScheduled = false;
    window.addEventListener("online", () => this.each((feed) => feed.retryNow()));
    window.addEventListener("offline", () => this.each((feed) => feed.suspend()));
    window.addEventListener("jobwire:key-changed", () => this.each((feed) => feed.retryNow()));
  }

  watch(job) {
    this.jobs.set(job.id, job);
    this.scheduleSync();
  }

  forget(job) {
    this.jobs.delete(job.id);
  }

  each(action) {
    for (const feed of [...this.feeds]) action(feed);
  }

  get connection() {
    const states = [...this.feeds].map((feed) => feed.state);
    if (states.includes("unauthorized")) return "unauthorized";
    if (states.includes("reconnecting")) return "reconnecting";
    if (states.includes("connecting")) return "connecting";
    if (states.includes("open")) return "live";
    return navigator.onLine ? "idle" : "offline";
  }

  // Submits often come in bursts: gather them into one reopening of the stream.
  scheduleSync() {
    if (this.syncScheduled) return;
    this.syncScheduled = true;
    setTimeout(() => {
      this.syncScheduled = false;
      this.sync();
    }, 0);
  }

  // Puts every active job that no stream carries onto one, reopening the newest stream with
  // room (from the cursor of each of its jobs) rather than opening another connection.
  sync() {
    const carried = new Set();
    for (const feed of this.feeds) for (const job of feed.jobs) carried.add(job);
    const waiting = [...this.jobs.values()].filter((job) => !job.terminal && !carried.has(job));
    if (waiting.length === 0) return;
    const newest = [...this.feeds].at(-1);
    let group = [];
    if (newest && newest.state !== "unauthorized") {
      group = newest.jobs.filter((job) => !job.terminal);
      this.drop(newest);
    }
    for (const job of waiting) {
      if (!fits(group, job)) {
        this.start(group);
        group = [];
      }
      group.push(job);
    }
    this.start(group);
  }

  start(jobs) {
    if (jobs.length === 0) return;
    const feed = new Feed(this, jobs);
    this.feeds.add(feed);
    feed.open();
    this.feedChanged();
  }

  drop(feed) {
    feed.close();
    this.feeds.delete(feed);
  }

  // An EventSource's event.
  deliver(message) {
    this.apply(message.type, message.lastEventId, JSON.parse(message.data));
  }

  // One event of any stream: its type, its id (the cursor) and its data (the envelope).
  apply(type, eventId, event) {
    const job = this.jobs.get(event.job);
    if (job === undefined) return;
    if (type === "reset") {
      job.reset(event.reason, event.state);
    } else if (!CONNECTION_TYPES.has(type)) {
      const position = positionIn(eventId, job.id);
      if (position === null || compareStreamIds(position, job.cursor) <= 0) return;
      job.cursor = position;
      job.apply(event);
    }
    this.changed(job);
  }

  changed(job) {
    this.onJobChanged(job);
  }

  feedChanged() {
    for (const feed of [...this.feeds]) {
      if (feed.state === "closed") this.feeds.delete(feed);
    }
    this.onConnectionChanged(this.connection);
  }
}

function fits(group, job) {
  if (group.length >= MAX_JOBS_PER_STREAM) return false;
  return streamUrl([...group, job]).length <= MAX_URL_CHARS;
}

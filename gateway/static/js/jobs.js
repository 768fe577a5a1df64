// One job as the page knows it: everything its events said, folded into one state.

import { TERMINAL_TYPES } from "./events.js";
import { Output } from "./output.js";

export class Job {
  constructor({ id, name, args, watchToken = null, createdAt = null }) {
    this.id = id;
    this.name = name;
    this.args = args;
    this.watchToken = watchToken;
    this.createdAt = createdAt; // unix ms of the submit: the list is newest first
    this.status = "queued";
    this.attempt = 0;
    this.progress = null;
    this.cursor = null; // id of the last event applied: the stream resumes after it
    this.output = new Output(); // partial output of the current attempt: a new one per attempt
    this.notes = []; // errors, retries and logs, as {kind, text}
    this.result = undefined;
    this.failure = null;
    this.heartbeatAt = null;
    this.queuedAt = null; // unix ms of the first and the terminal event: how long it took
    this.finishedAt = null;
    this.gone = false; // the gateway no longer knows the job (expired)
  }

  get terminal() {
    return TERMINAL_TYPES.has(this.status) || this.gone;
  }

  apply(event) {
    const data = event.data ?? {};
    this.attempt = Math.max(this.attempt, event.attempt ?? 0);
    if (this.queuedAt === null) this.queuedAt = event.ts ?? null;
    if (TERMINAL_TYPES.has(event.type)) this.finishedAt = event.ts ?? null;
    const handler = HANDLERS[event.type];
    if (handler) handler(this, data, event);
  }

  // The gateway could not vouch for our position: it sends the job's snapshot, then every
  // event it still holds, so the card is rebuilt from those. The job stays open until the
  // replayed terminal event arrives, so the stream is not closed before the replay.
  reset(reason, state) {
    this.cursor = null;
    this.restartOutput();
    this.notes = [{ kind: "log", text: `replayed from what the gateway still holds (${reason})` }];
    if (!state) return;
    this.status = TERMINAL_TYPES.has(state.status) ? "running" : (state.status ?? this.status);
    this.attempt = state.attempt ?? this.attempt;
    this.progress = state.progress ?? this.progress;
    this.queuedAt = state.created_at ?? this.queuedAt;
  }

  markGone() {
    this.gone = true;
    this.notes.push({ kind: "error", text: "the gateway no longer knows this job (expired?)" });
  }

  restartOutput() {
    this.output = new Output();
  }

  get tookSeconds() {
    if (this.queuedAt === null || this.finishedAt === null) return null;
    return (this.finishedAt - this.queuedAt) / 1000;
  }

  get percent() {
    if (this.status === "completed") return 100;
    const value = this.progress?.percent;
    return typeof value === "number" ? Math.max(0, Math.min(100, value)) : null;
  }
}

const HANDLERS = {
  queued(job) {
    job.status = "queued";
  },
  started(job, data) {
    job.status = "running";
    // A new attempt produces its output again from the start.
    if (job.output.end > 0) job.restartOutput();
    if (data.attempt > 1) job.notes.push({ kind: "retry", text: `attempt ${data.attempt} started` });
  },
  progress(job, data) {
    job.status = "running";
    job.progress = data;
  },
  heartbeat(job, _data, event) {
    job.heartbeatAt = event.ts;
  },
  data(job, data) {
    job.output.append(typeof data.token === "string" ? data.token : `${JSON.stringify(data)}\n`);
  },
  log(job, data) {
    job.notes.push({ kind: "log", text: `${data.level ?? "info"}: ${data.message ?? ""}` });
  },
  error(job, data) {
    const retry = data.retryable ? " (retryable)" : "";
    job.notes.push({ kind: "error", text: `error: ${data.type ?? "Error"}: ${data.message ?? ""}${retry}` });
  },
  retrying(job, data) {
    job.status = "retrying";
    const delay = typeof data.delay_s === "number" ? ` in ${data.delay_s} s` : "";
    job.notes.push({
      kind: "retry",
      text: `retrying: attempt ${data.attempt}${delay} after ${data.reason ?? "an error"}`,
    });
  },
  completed(job, data) {
    job.status = "completed";
    job.result = data.result;
  },
  failed(job, data) {
    job.status = "failed";
    job.failure = data;
  },
  cancelled(job, data) {
    job.status = "cancelled";
    job.failure = data;
  },
};

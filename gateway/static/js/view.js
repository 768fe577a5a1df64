// Drawing the page: a card per job, the connection badge (the form's fields: form.js).
// Job data is only ever set as text, never parsed as HTML.

const CONNECTION_TEXT = {
  live: "live",
  connecting: "connecting…",
  reconnecting: "reconnecting…",
  unauthorized: "not authorized: set the API key in Settings",
  idle: "idle",
  offline: "offline",
};

export function showConnection(element, state) {
  element.dataset.state = state;
  element.textContent = CONNECTION_TEXT[state] ?? state;
}

// The system figures, or a dash for each when they cannot be read (no key, no network).
export function showSystem(element, figures) {
  const show = (value) => (typeof value === "number" ? String(value) : "–");
  element.textContent =
    `workers alive: ${show(figures?.workers)} · queued: ${show(figures?.queued)} · ` +
    `running: ${show(figures?.running)}`;
}

export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${String(whole % 60).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

function formatElapsed(seconds) {
  if (seconds < 0.1) return "under 0.1 s";
  return seconds < 10 ? `${seconds.toFixed(1)} s` : formatDuration(seconds);
}

export function formatRate(rate) {
  if (typeof rate !== "number" || !Number.isFinite(rate)) return "";
  const digits = rate >= 100 ? 0 : rate >= 10 ? 1 : 2;
  return `${rate.toFixed(digits)}/s`;
}

// The last this many characters of an output are on screen unless "Show all" is chosen.
export const VISIBLE_OUTPUT_CHARS = 16 * 1024;
const MAX_OUTPUT_NODES = 64;

// Removes the first `count` characters of an element holding only text nodes, and one more
// when the cut leaves the second half of a character outside the BMP (an emoji) in front;
// returns how many it removed.
function trimFront(element, count) {
  const wanted = Math.max(0, count);
  let left = wanted;
  while (left > 0 && element.firstChild) {
    const node = element.firstChild;
    if (node.length <= left) {
      left -= node.length;
      node.remove();
    } else {
      node.deleteData(0, left);
      left = 0;
    }
  }
  const first = element.firstChild;
  if (first && isLowSurrogate(first.data.charCodeAt(0))) {
    first.deleteData(0, 1);
    left -= 1;
  }
  return wanted - left;
}

function isLowSurrogate(code) {
  return code >= 0xdc00 && code <= 0xdfff;
}

function formatSize(chars) {
  if (chars < 1024) return `${chars} characters`;
  if (chars < 1024 * 1024) return `${(chars / 1024).toFixed(0)} KB`;
  return `${(chars / 1024 / 1024).toFixed(1)} MB`;
}

function summarize(value) {
  const text = JSON.stringify(value);
  return text === undefined ? "" : text;
}

export class JobCard {
  constructor(template, job, { onCancel }) {
    this.job = job;
    this.element = template.content.firstElementChild.cloneNode(true);
    this.element.dataset.jobId = job.id;
    this.part = (name) => this.element.querySelector(`.${name}`);
    const nameId = `job-${job.id}-name`;
    this.part("job-name").id = nameId;
    this.part("job-name").textContent = job.name;
    this.element.querySelector("article").setAttribute("aria-labelledby", nameId);
    this.part("job-id").textContent = job.id;
    this.part("job-id").title = `job id ${job.id}; arguments ${summarize(job.args)}`;
    this.part("bar").setAttribute("aria-label", `Progress of ${job.name}`);
    this.part("output").setAttribute("aria-label", `Output of ${job.name}`);
    const cancel = this.part("cancel");
    cancel.setAttribute("aria-label", `Cancel ${job.name} ${job.id}`);
    cancel.addEventListener("click", () => onCancel(this));
    this.part("show-all").addEventListener("click", () => this.toggleShowAll());
    this.shown = { output: null, end: 0, chars: 0, all: false }; // what the output box holds
    this.renderedNotes = 0;
    this.render();
  }

  render() {
    const job = this.job;
    this.element.dataset.status = job.gone ? "gone" : job.status;
    const attempt = job.attempt > 1 ? ` · attempt ${job.attempt}` : "";
    this.part("status").textContent = `${job.gone ? "gone" : job.status}${attempt}`;
    this.renderBar();
    this.renderFigures();
    this.renderOutput();
    this.renderNotes();
    this.renderOutcome();
    this.part("cancel").hidden = job.terminal;
  }

  renderBar() {
    const bar = this.part("bar");
    const percent = this.job.percent;
    bar.classList.toggle("indeterminate", percent === null && !this.job.terminal);
    this.part("fill").style.width = `${percent ?? (this.job.terminal ? 100 : 0)}%`;
    if (percent === null) {
      bar.removeAttribute("aria-valuenow");
      bar.setAttribute("aria-valuetext", this.job.status);
    } else {
      bar.setAttribute("aria-valuenow", String(Math.round(percent)));
      bar.setAttribute("aria-valuetext", `${Math.round(percent)}%`);
    }
  }

  renderFigures() {
    const job = this.job;
    const progress = job.progress ?? {};
    const percent = job.percent;
    const running = !job.terminal;
    this.part("percent").textContent = percent === null ? "" : `${percent.toFixed(0)}%`;
    this.part("stage").textContent = progress.stage ? `stage: ${progress.stage}` : "";
    let message = progress.message ?? "";
    if (!message && running && job.heartbeatAt !== null) {
      message = `working (last heartbeat ${new Date(job.heartbeatAt).toLocaleTimeString()})`;
    }
    this.part("message").textContent = message;
    this.part("rate").textContent = running ? formatRate(progress.rate) : "";
    const eta = running ? formatDuration(progress.eta_s) : "";
    this.part("eta").textContent = eta ? `ETA ${eta}` : "";
    const took = job.tookSeconds;
    this.part("took").textContent = took === null ? "" : `took ${formatElapsed(took)}`;
  }

  // Appends only the text not yet shown, as one text node per frame, and keeps only the last
  // VISIBLE_OUTPUT_CHARS on screen unless the person asked for all of it: a long output costs
  // nothing per new token, and a flood costs one bounded write per frame.
  renderOutput() {
    const output = this.job.output;
    const element = this.part("output");
    if (this.shown.output !== output) {
      // A new attempt, or a reset: its output starts over.
      this.shown = { output, end: output.start, chars: 0, all: false };
      element.textContent = "";
    }
    const shown = this.shown;
    if (output.end > shown.end) {
      const from = shown.all ? shown.end : Math.max(shown.end, output.end - VISIBLE_OUTPUT_CHARS);
      this.appendOutput(output.text(from), from > shown.end);
      shown.end = output.end;
    }
    element.hidden = output.end === 0;
    this.renderShowAll();
  }

  appendOutput(text, replace) {
    const element = this.part("output");
    const shown = this.shown;
    if (replace) {
      element.textContent = text;
      shown.chars = text.length;
    } else {
      element.append(text);
      shown.chars += text.length;
    }
    if (!shown.all) shown.chars -= trimFront(element, shown.chars - VISIBLE_OUTPUT_CHARS);
    // A text node per frame, merged now and then: the node count stays small.
    if (element.childNodes.length > MAX_OUTPUT_NODES) element.normalize();
  }

  renderShowAll() {
    const button = this.part("show-all");
    const output = this.job.output;
    const cut = output.end > VISIBLE_OUTPUT_CHARS;
    button.hidden = !cut;
    if (!cut) return;
    const label = this.shown.all
      ? `Show only the last ${formatSize(VISIBLE_OUTPUT_CHARS)}`
      : `Show all ${formatSize(output.length)}`;
    const dropped = output.dropped
      ? `the first ${formatSize(output.start)} are no longer kept by this page`
      : "";
    if (button.textContent !== label) button.textContent = label;
    if (button.title !== dropped) button.title = dropped;
  }

  toggleShowAll() {
    const output = this.job.output;
    const all = !this.shown.all;
    const from = all ? output.start : Math.max(output.start, output.end - VISIBLE_OUTPUT_CHARS);
    this.shown = { output, end: output.end, chars: 0, all };
    this.appendOutput(output.text(from), true);
    this.renderShowAll();
  }

  renderNotes() {
    const notes = this.part("notes");
    if (this.job.notes.length < this.renderedNotes) {
      notes.textContent = "";
      this.renderedNotes = 0;
    }
    for (const note of this.job.notes.slice(this.renderedNotes)) {
      const item = document.createElement("li");
      item.className = `note ${note.kind}`;
      item.textContent = note.text;
      notes.append(item);
    }
    this.renderedNotes = this.job.notes.length;
  }

  renderOutcome() {
    const job = this.job;
    const outcome = this.part("outcome");
    let text = "";
    if (job.status === "completed") {
      text = `Result: ${summarize(job.result)}`;
    } else if (job.status === "failed") {
      const failure = job.failure ?? {};
      text = `Failed: ${failure.type ?? "Error"}: ${failure.message ?? ""}`;
    } else if (job.status === "cancelled") {
      text = `Cancelled: ${job.failure?.reason ?? ""}`;
    }
    if (outcome.textContent !== text) outcome.textContent = text;
  }

  showProblem(text) {
    const item = document.createElement("li");
    item.className = "note error";
    item.textContent = text;
    this.part("notes").append(item);
  }
}

// Asks in the settings panel whether the key a link carries may replace the one saved in this
// browser; calls `onAnswer(true)` to replace it, `onAnswer(false)` to keep it. Returns a
// function that takes the question back unanswered (a key was set by hand meanwhile).
export function askToReplaceKey(panel, onAnswer) {
  panel.querySelector(".key-question")?.remove();
  const question = document.createElement("div");
  question.className = "key-question";
  question.setAttribute("role", "group");
  const text = document.createElement("p");
  text.id = "key-question-text";
  text.className = "problem";
  text.textContent =
    "The link you opened carries an API key that is not the one saved in this browser. " +
    "Use the link's key from now on? Whoever holds a key sees the jobs submitted with it: " +
    "only switch if you trust whoever sent the link.";
  question.setAttribute("aria-labelledby", text.id);
  const replace = textButton("Use the link's key");
  const keep = textButton("Keep the saved key");
  const buttons = document.createElement("div");
  buttons.className = "row";
  buttons.append(replace, keep);
  question.append(text, buttons);
  const answer = (replaceKey) => {
    question.remove();
    onAnswer(replaceKey);
  };
  replace.addEventListener("click", () => answer(true));
  keep.addEventListener("click", () => answer(false));
  panel.querySelector("summary").after(question);
  panel.open = true;
  keep.focus();
  return () => question.remove();
}

function textButton(text) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  return button;
}

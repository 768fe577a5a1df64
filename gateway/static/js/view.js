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
    this.renderedGeneration = job.outputGeneration;
    this.renderedChunks = 0;
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

  // Appends only the chunks not yet shown, so a long output costs nothing per new token.
  renderOutput() {
    const output = this.part("output");
    if (this.renderedGeneration !== this.job.outputGeneration) {
      output.textContent = "";
      this.renderedGeneration = this.job.outputGeneration;
      this.renderedChunks = 0;
    }
    const chunks = this.job.output;
    if (chunks.length > this.renderedChunks) {
      output.append(chunks.slice(this.renderedChunks).join(""));
      this.renderedChunks = chunks.length;
    }
    output.hidden = chunks.length === 0;
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

// Wires the page together: the catalog into the form, submissions into cards and the watcher.

import { apiKey, cancelJob, listJobs, loadCatalog, submitJob, systemFigures } from "./api.js";
import {
  ArgumentProblems,
  readArguments,
  renderArgumentFields,
  showArgumentProblems,
} from "./form.js";
import { FrameBatch } from "./frames.js";
import { Job } from "./jobs.js";
import { REMEMBERED_JOBS, loadCleared, loadJobs, saveCleared, saveJobs } from "./storage.js";
import { Watcher } from "./stream.js";
import { JobCard, askToReplaceKey, showConnection, showSystem } from "./view.js";

const CATALOG_RETRY_MS = 3000;
// How often the page asks for the key's jobs (new ones from elsewhere) and the system figures.
const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);
const cards = new Map(); // job id -> card, oldest first
let catalog = new Map();
let catalogTimer = null;
let refreshTimer = null;
const cleared = loadCleared(); // ids of jobs cleared here, kept off the page
let withdrawKeyQuestion = () => {}; // takes back an unanswered question about a link's key

const redraws = new FrameBatch((id) => cards.get(id)?.render());
const watcher = new Watcher({
  onJobChanged: (job) => redraws.mark(job.id),
  onConnectionChanged: (state) => showConnection($("connection"), state),
});

async function refreshCatalog() {
  clearTimeout(catalogTimer);
  const select = $("job-name");
  try {
    const specs = await loadCatalog();
    catalog = new Map(specs.map((spec) => [spec.name, spec]));
  } catch (error) {
    $("submit-error").textContent = `Could not load the job list: ${error.message}`;
    if (error.status === 401 && !$("settings").open) askForKey();
    catalogTimer = setTimeout(refreshCatalog, CATALOG_RETRY_MS);
    return;
  }
  if (catalog.size === 0) {
    $("submit-error").textContent = "No worker has advertised any job yet; waiting for one…";
    catalogTimer = setTimeout(refreshCatalog, CATALOG_RETRY_MS);
    return;
  }
  $("submit-error").textContent = "";
  const chosen = select.value;
  select.replaceChildren(
    ...[...catalog.keys()].map((name) => new Option(name, name, false, name === chosen)),
  );
  select.disabled = false;
  $("submit-button").disabled = false;
  showSpec();
}

function showSpec() {
  const spec = catalog.get($("job-name").value);
  $("job-doc").textContent = spec?.doc ?? "";
  renderArgumentFields($("job-args"), spec);
}

async function submit(event) {
  event.preventDefault();
  const name = $("job-name").value;
  const problem = $("submit-error");
  problem.textContent = "";
  showArgumentProblems($("job-args"), []);
  let args;
  try {
    args = readArguments($("job-args"));
  } catch (error) {
    showRefusedArguments(error.problems ?? []);
    return;
  }
  const button = $("submit-button");
  button.disabled = true;
  try {
    const answer = await submitJob(name, args);
    const watchToken = answer.watch_token ?? null;
    addJob(new Job({ id: answer.job_id, name, args, watchToken, createdAt: Date.now() }));
  } catch (error) {
    if (error.code === "invalid_args" && Array.isArray(error.detail)) {
      showRefusedArguments(error.detail);
    } else {
      problem.textContent = `Not submitted: ${error.message}`;
    }
    if (error.status === 401) askForKey();
  } finally {
    button.disabled = false;
  }
}

// Each refused argument beside its field; the rest (one given in "more arguments") above.
function showRefusedArguments(problems) {
  const elsewhere = showArgumentProblems($("job-args"), problems);
  const where = elsewhere.length ? new ArgumentProblems(elsewhere).message : "see the fields marked";
  $("submit-error").textContent = `Not submitted: ${where}`;
}

function addJob(job) {
  const known = cards.get(job.id);
  if (known) {
    // Listed by the gateway before the submit's answer came: the same job.
    if (job.watchToken) known.job.watchToken = job.watchToken;
    return;
  }
  const card = new JobCard($("job-template"), job, { onCancel: cancel });
  cards.set(job.id, card);
  place(card);
  $("no-jobs").hidden = true;
  watcher.watch(job);
  remember();
}

// Newest first: before the first card submitted no later than this one (a remembered job from
// before the page kept submit times counts as oldest).
function place(card) {
  const created = card.job.createdAt ?? 0;
  for (const element of $("jobs").children) {
    if ((cards.get(element.dataset.jobId)?.job.createdAt ?? 0) <= created) {
      element.before(card.element);
      return;
    }
  }
  $("jobs").append(card.element);
}

function remember() {
  const jobs = [...cards.values()].map((card) => card.job);
  jobs.sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
  saveJobs(jobs);
}

// The key's jobs the gateway lists (curl, the CLI, another tab) join those the page knows.
async function refreshJobs() {
  const page = await listJobs(REMEMBERED_JOBS);
  for (const state of page.jobs) {
    if (cleared.has(state.job_id)) continue;
    const watchToken = state.watch_token ?? null;
    const known = cards.get(state.job_id);
    if (known) {
      // A fresh token for the next reconnect: the one the page holds may expire first.
      if (watchToken) known.job.watchToken = watchToken;
      continue;
    }
    const { job_id: id, name, args, created_at: createdAt } = state;
    addJob(new Job({ id, name, args, watchToken, createdAt }));
  }
}

async function refreshSystem() {
  try {
    showSystem($("system"), await systemFigures());
  } catch {
    showSystem($("system"), null);
  }
}

async function refresh() {
  clearTimeout(refreshTimer);
  if (!document.hidden) {
    try {
      await refreshJobs();
    } catch {
      // The network or the key: the streams and the form say so; tried again shortly.
    }
    await refreshSystem();
  }
  refreshTimer = setTimeout(refresh, REFRESH_MS);
}

async function cancel(card) {
  const button = card.part("cancel");
  button.disabled = true;
  try {
    await cancelJob(card.job.id);
  } catch (error) {
    card.showProblem(`Cancel failed: ${error.message}`);
    button.disabled = false;
  }
}

function clearFinished() {
  for (const [id, card] of cards) {
    if (card.job.terminal) {
      card.element.remove();
      cards.delete(id);
      cleared.delete(id);
      cleared.add(id);
      watcher.forget(card.job);
    }
  }
  $("no-jobs").hidden = cards.size > 0;
  saveCleared(cleared);
  remember();
}

function askForKey() {
  $("settings").open = true;
  $("api-key").focus();
}

function setUpSettings() {
  const input = $("api-key");
  const note = $("settings-note");
  input.value = apiKey.get();
  $("settings-form").addEventListener("submit", (event) => {
    event.preventDefault();
    withdrawKeyQuestion();
    apiKey.set(input.value.trim());
    note.textContent = input.value.trim() ? "Key saved in this browser." : "No key set.";
  });
  $("forget-key").addEventListener("click", () => {
    withdrawKeyQuestion();
    input.value = "";
    apiKey.set("");
    note.textContent = "Key forgotten.";
  });
}

// The key a link carries (`#key=…`, as `jobwire up` prints it), taken out of the address bar
// at once so it is not bookmarked or shared further; null when there is none.
function takeKeyFromAddress() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const key = params.get("key");
  if (key === null) return null;
  params.delete("key");
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
  window.history.replaceState(null, "", url);
  return key.trim() || null;
}

// A link's key is used at once only when this browser has none saved. One that differs from
// the saved key waits for the person's word: whoever sends a link could otherwise swap in a
// key of their own, and see every job submitted here afterwards.
function useKeyFromLink() {
  const offered = takeKeyFromAddress();
  const saved = apiKey.get();
  if (offered === null || offered === saved) return;
  if (!saved) {
    apiKey.set(offered);
    return;
  }
  withdrawKeyQuestion = askToReplaceKey($("settings"), (replace) => {
    withdrawKeyQuestion = () => {};
    if (replace) {
      apiKey.set(offered);
      $("api-key").value = offered;
    }
    $("settings-note").textContent = replace
      ? "The link's key is saved in this browser."
      : "Kept the saved key; the link's key was not used.";
  });
}

useKeyFromLink();
for (const saved of loadJobs()) addJob(new Job(saved));
setUpSettings();
window.addEventListener("jobwire:key-changed", refreshCatalog);
window.addEventListener("jobwire:key-changed", refresh);
document.addEventListener("visibilitychange", () => document.hidden || refresh());
$("job-name").addEventListener("change", showSpec);
$("submit-form").addEventListener("submit", submit);
$("clear-finished").addEventListener("click", clearFinished);
showConnection($("connection"), watcher.connection);
refreshCatalog();
refresh();

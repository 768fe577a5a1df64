// The gateway's REST side, and the API key the page sends with it.
//
// The key comes from the URL fragment (`#key=…`, which never reaches a server or its logs) or
// the settings form, and is kept in localStorage.

const KEY_STORAGE = "jobwire.apiKey";
const SUBMIT_ATTEMPTS = 4;

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(describe(status, code, detail));
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

function describe(status, code, detail) {
  const text = typeof detail === "string" ? detail : JSON.stringify(detail);
  return `${code} (${status}): ${text}`;
}

export const apiKey = {
  get() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  },
  set(value) {
    try {
      if (value) localStorage.setItem(KEY_STORAGE, value);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // Storage refused (private mode): the key lasts for this page only.
    }
    window.dispatchEvent(new CustomEvent("jobwire:key-changed"));
  },
};

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const payload = await readJson(response);
  if (!response.ok) {
    throw new ApiError(response.status, payload?.error ?? "error", payload?.detail ?? response.statusText);
  }
  return payload;
}

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: "not_json", detail: text.slice(0, 200) };
  }
}

function isNetworkError(error) {
  return error instanceof TypeError;
}

function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// A job id made here makes a retried POST safe: the gateway answers the same job again.
// (crypto.randomUUID needs a secure context, which a plain-HTTP LAN address is not.)
export function newJobId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export async function loadCatalog() {
  const answer = await call("GET", "/catalog");
  return answer.jobs;
}

export async function submitJob(name, args) {
  const body = { name, args, job_id: newJobId() };
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call("POST", "/jobs", body);
    } catch (error) {
      if (!isNetworkError(error) || attempt >= SUBMIT_ATTEMPTS) throw error;
      await pause(250 * 2 ** attempt);
    }
  }
}

export function cancelJob(jobId) {
  return call("DELETE", `/jobs/${encodeURIComponent(jobId)}`);
}

export function jobStatus(jobId) {
  return call("GET", `/jobs/${encodeURIComponent(jobId)}`);
}

// The key's jobs, newest first (whoever submitted them: this page, another tab, curl, the CLI).
export function listJobs(limit) {
  return call("GET", `/jobs?${new URLSearchParams({ limit: String(limit) })}`);
}

// Workers alive, jobs queued and running.
export function systemFigures() {
  return call("GET", "/system");
}

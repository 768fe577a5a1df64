// The jobs this page shows (submitted here or listed by the gateway), kept in localStorage so a
// reload shows them again at once: their streams are replayed from the start, which rebuilds
// each card exactly.

const JOBS_STORAGE = "jobwire.jobs";
const CLEARED_STORAGE = "jobwire.cleared";
export const REMEMBERED_JOBS = 50;
// Jobs cleared from the page stay off it when the gateway lists them again.
const REMEMBERED_CLEARED = 1000;

export function loadJobs() {
  try {
    const saved = JSON.parse(localStorage.getItem(JOBS_STORAGE) ?? "[]");
    return Array.isArray(saved) ? saved.filter((entry) => typeof entry?.id === "string") : [];
  } catch {
    return [];
  }
}

// `jobs` oldest first; only the newest are kept.
export function saveJobs(jobs) {
  const entries = jobs.slice(-REMEMBERED_JOBS).map((job) => ({
    id: job.id,
    name: job.name,
    args: job.args,
    watchToken: job.watchToken,
    createdAt: job.createdAt,
  }));
  try {
    localStorage.setItem(JOBS_STORAGE, JSON.stringify(entries));
  } catch {
    // Storage full or refused: the list lasts for this page only.
  }
}

export function loadCleared() {
  try {
    const saved = JSON.parse(localStorage.getItem(CLEARED_STORAGE) ?? "[]");
    return new Set(Array.isArray(saved) ? saved.filter((id) => typeof id === "string") : []);
  } catch {
    return new Set();
  }
}

// `ids` oldest first; only the newest are kept.
export function saveCleared(ids) {
  try {
    localStorage.setItem(CLEARED_STORAGE, JSON.stringify([...ids].slice(-REMEMBERED_CLEARED)));
  } catch {
    // Storage full or refused: cleared jobs stay off the page until it is reloaded.
  }
}

// The jobs this browser submitted, kept in localStorage so a reload shows them again: their
// streams are replayed from the start, which rebuilds each card exactly.

const JOBS_STORAGE = "jobwire.jobs";
export const REMEMBERED_JOBS = 50;

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
  }));
  try {
    localStorage.setItem(JOBS_STORAGE, JSON.stringify(entries));
  } catch {
    // Storage full or refused: the list lasts for this page only.
  }
}

// The event types of shared/events.py, for the page, which cannot import Python.
//
// Written here rather than served by the gateway as a module generated from Python: the page
// stays plain files, with no build step and no route of its own to keep within the page's CSP
// and caching, and tests/gateway/static/test_events_js.py fails as soon as a list here and
// Python's differ. Each list is a JSON array, so that test reads it as JSON.

// Events a job writes: each is stored, and its id moves the cursor.
export const STORED_TYPES = Object.freeze(["queued", "started", "progress", "heartbeat", "data", "log", "error", "retrying", "completed", "failed", "cancelled"]);

// The events that end a job (and the statuses of an ended job: they share their names).
export const TERMINAL_TYPES = new Set(["completed", "failed", "cancelled"]);

// Events the gateway makes for one connection: they carry no id and do not move the cursor.
export const CONNECTION_TYPES = new Set(["reset", "stalled"]);

// How the page streams events: "sse" (EventSource, `GET /events`, the default) or "ws" (one
// WebSocket, `/events/ws`). Chosen with `?transport=ws` (or `sse`) in the page's address and
// remembered in this browser, so a reload or a bookmark without it keeps the choice.

const TRANSPORT_STORAGE = "jobwire.transport";
export const TRANSPORTS = Object.freeze(["sse", "ws"]);

export function chosenTransport(search = window.location.search) {
  const asked = new URLSearchParams(search).get("transport");
  if (TRANSPORTS.includes(asked)) {
    try {
      localStorage.setItem(TRANSPORT_STORAGE, asked);
    } catch {
      // Storage refused: the choice lasts for this page only.
    }
    return asked;
  }
  let saved = null;
  try {
    saved = localStorage.getItem(TRANSPORT_STORAGE);
  } catch {
    // Storage refused: the default.
  }
  return TRANSPORTS.includes(saved) ? saved : "sse";
}

// The page's own origin as a WebSocket address: `ws:` beside `http:`, `wss:` beside `https:`.
export function socketAddress(path, base = window.location.href) {
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

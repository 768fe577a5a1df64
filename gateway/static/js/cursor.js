// Stream ids and multi-job cursors, as the gateway writes them.
//
// A stream id is `<ms>-<seq>`: two integers, compared as integers ("9-0" comes before "10-0").
// A cursor names one stream id per job: `<job>:<ms>-<seq>` entries joined by ",".

const STREAM_ID = /^(\d+)-(\d+)$/;

export function parseStreamId(text) {
  const match = STREAM_ID.exec(text);
  if (match === null) {
    throw new Error(`not a stream id: ${text}`);
  }
  return [BigInt(match[1]), BigInt(match[2])];
}

// Negative when `a` comes before `b`, zero when equal, positive after; null comes first.
export function compareStreamIds(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  const [msA, seqA] = parseStreamId(a);
  const [msB, seqB] = parseStreamId(b);
  if (msA !== msB) return msA < msB ? -1 : 1;
  if (seqA !== seqB) return seqA < seqB ? -1 : 1;
  return 0;
}

export function parseCursor(text) {
  const cursor = new Map();
  if (!text) return cursor;
  for (const entry of text.split(",")) {
    const at = entry.lastIndexOf(":");
    if (at > 0) cursor.set(entry.slice(0, at), entry.slice(at + 1));
  }
  return cursor;
}

// `positions` is an iterable of [job id, stream id or null]; jobs with no position are left out.
export function formatCursor(positions) {
  const entries = [];
  for (const [jobId, position] of positions) {
    if (position !== null) entries.push(`${jobId}:${position}`);
  }
  return entries.join(",");
}

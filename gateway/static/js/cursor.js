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
// Called for every event a page receives: ids whose parts are short enough to be exact as
// numbers (every id Redis writes today) are compared without BigInt.
export function compareStreamIds(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  const quick = compareShortIds(a, b);
  if (quick !== null) return quick;
  const [msA, seqA] = parseStreamId(a);
  const [msB, seqB] = parseStreamId(b);
  if (msA !== msB) return msA < msB ? -1 : 1;
  if (seqA !== seqB) return seqA < seqB ? -1 : 1;
  return 0;
}

const SHORT_ID = /^(\d{1,15})-(\d{1,15})$/;

function compareShortIds(a, b) {
  const matchA = SHORT_ID.exec(a);
  const matchB = matchA && SHORT_ID.exec(b);
  if (matchB === null) return null;
  return Number(matchA[1]) - Number(matchB[1]) || Number(matchA[2]) - Number(matchB[2]);
}

// The stream id a cursor gives for one job, or null; what `parseCursor(text).get(jobId)`
// answers, without building the map for every job of a cursor (each event carries one).
export function positionIn(text, jobId) {
  if (!text) return null;
  const label = `${jobId}:`;
  for (let at = text.indexOf(label); at >= 0; at = text.indexOf(label, at + 1)) {
    // A job id can end another's, or begin one with a colon in it: only a whole entry counts.
    if (at > 0 && text[at - 1] !== ",") continue;
    const end = text.indexOf(",", at);
    const position = text.slice(at + label.length, end < 0 ? undefined : end);
    if (!position.includes(":")) return position;
  }
  return null;
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

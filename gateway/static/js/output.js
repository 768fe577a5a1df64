// A job's partial output (its `data` events) as the page keeps it: every token appended at
// once, whatever the page draws; past KEPT_OUTPUT_CHARS the oldest text is dropped (at least
// the last KEPT_OUTPUT_CHARS stay, at most one block more), so a job that writes without end
// cannot grow the page's memory without end.
//
// Positions count UTF-16 code units (what JavaScript's string lengths count) from the start of
// the attempt's output, dropped text included: `end` is everything ever appended, `start` the
// first position still kept.

export const KEPT_OUTPUT_CHARS = 4 * 1024 * 1024;
// Tokens are joined into blocks of about this size: a few hundred strings for megabytes of
// text, instead of one per token.
const BLOCK_CHARS = 16 * 1024;

export class Output {
  constructor(limit = KEPT_OUTPUT_CHARS) {
    this.limit = limit;
    this.blocks = []; // joined tokens, oldest first
    this.recent = []; // tokens not yet joined into a block
    this.recentChars = 0;
    this.start = 0;
    this.end = 0;
  }

  get length() {
    return this.end - this.start;
  }

  get dropped() {
    return this.start > 0;
  }

  append(text) {
    if (text.length === 0) return;
    this.recent.push(text);
    this.recentChars += text.length;
    this.end += text.length;
    if (this.recentChars >= BLOCK_CHARS) {
      this.blocks.push(this.recent.join(""));
      this.recent = [];
      this.recentChars = 0;
    }
    if (this.length > this.limit) this.dropOldest();
  }

  // The text kept from position `from` (the start of what is kept, if that is later) to the end.
  text(from = this.start) {
    let wanted = this.end - Math.max(from, this.start);
    if (wanted <= 0) return "";
    const pieces = [];
    for (let index = this.recent.length - 1; index >= 0 && wanted > 0; index -= 1) {
      wanted -= this.recent[index].length;
      pieces.push(this.recent[index]);
    }
    for (let index = this.blocks.length - 1; index >= 0 && wanted > 0; index -= 1) {
      wanted -= this.blocks[index].length;
      pieces.push(this.blocks[index]);
    }
    const text = pieces.reverse().join("");
    return wanted < 0 ? text.slice(-wanted) : text;
  }

  // Whole blocks only: cheap, and what is kept stays within one block of the limit.
  dropOldest() {
    while (this.blocks.length > 0 && this.length - this.blocks[0].length >= this.limit) {
      this.start += this.blocks.shift().length;
    }
  }
}

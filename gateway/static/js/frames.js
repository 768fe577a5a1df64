// Drawing at most once per animation frame. An event changes the model at once and marks its
// job; the marked jobs' cards are drawn together in the next frame, however many events came
// in between. A hidden tab runs no frames: the model keeps up meanwhile (bounded: output.js),
// nothing is drawn, and the first frame once the tab is visible again draws the latest state.

export class FrameBatch {
  constructor(draw) {
    this.draw = draw;
    this.marked = new Set();
    this.requested = false;
  }

  mark(item) {
    this.marked.add(item);
    if (this.requested) return;
    this.requested = true;
    requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.requested = false;
    const items = [...this.marked];
    this.marked.clear();
    for (const item of items) this.draw(item);
  }
}

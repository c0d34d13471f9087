// A list that renders only the rows in view (fixed row height), so that a
// connection with a million frames, or thousands arriving each second, costs the
// page the same few dozen elements. It can follow the end as items arrive (like
// `tail -f`); while items stream in, the rows are drawn at most ten times a second
// (faster is unreadable, and drawing is most of what a flood costs the page).
import { h } from "./dom.js";

/** Milliseconds between draws caused by appended items (scrolling draws at once). */
const APPEND_DRAW_INTERVAL = 100;

export class VirtualList {
  /**
   * @param {HTMLElement} parent where the list goes
   * @param {object} options rowHeight (px), render(item, index) -> element,
   *   nearEnd() called when the view reaches the last rows (to load a next page),
   *   nearStart() when it reaches the first ones (to load the page before)
   */
  constructor(parent, { rowHeight, render, nearEnd, nearStart }) {
    this.rowHeight = rowHeight;
    this.render = render;
    this.nearEnd = nearEnd || (() => {});
    this.nearStart = nearStart || (() => {});
    this.items = [];
    this.follow = true;
    this.selected = -1;
    this.spacer = h("div", { class: "vlist-spacer" });
    this.rows = h("div", { class: "vlist-rows" });
    this.viewport = h("div", { class: "vlist", tabindex: "0" }, this.spacer, this.rows);
    parent.append(this.viewport);
    this.pending = false;
    this.lastDraw = 0;
    this.later = null;
    this.viewport.addEventListener("scroll", () => this.schedule());
    new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  setItems(items) {
    this.items = items;
    this.selected = -1;
    this.schedule();
  }

  append(items) {
    if (items.length === 0) return;
    for (const item of items) this.items.push(item);
    this.scheduleSoon();
  }

  /** A draw within APPEND_DRAW_INTERVAL of the last one. */
  scheduleSoon() {
    if (this.pending || this.later) return;
    const wait = this.lastDraw + APPEND_DRAW_INTERVAL - performance.now();
    if (wait <= 0) return this.schedule();
    this.later = setTimeout(() => {
      this.later = null;
      this.schedule();
    }, wait);
  }

  /** Puts `items` before the first one; the rows in view stay where they are. */
  prepend(items) {
    if (items.length === 0) return;
    this.items = items.concat(this.items);
    if (this.selected >= 0) this.selected += items.length;
    this.spacer.style.height = `${this.items.length * this.rowHeight}px`;
    if (!this.follow) this.viewport.scrollTop += items.length * this.rowHeight;
    this.schedule();
  }

  /** Forgets the last `n` items (to keep memory bounded while going back). */
  dropBack(n) {
    if (n <= 0) return;
    this.items.length = Math.max(0, this.items.length - n);
    if (this.selected >= this.items.length) this.selected = -1;
    this.schedule();
  }

  /** Forgets the first `n` items (to keep memory bounded). */
  dropFront(n) {
    if (n <= 0) return;
    this.items.splice(0, n);
    this.selected = Math.max(-1, this.selected - n);
    if (!this.follow) this.viewport.scrollTop -= n * this.rowHeight;
    this.scheduleSoon();
  }

  /** Scrolls so that item `i` is in view, and marks it. */
  show(i) {
    this.selected = i;
    const top = i * this.rowHeight;
    const view = this.viewport;
    if (top < view.scrollTop || top + this.rowHeight > view.scrollTop + view.clientHeight) {
      view.scrollTop = Math.max(0, top - view.clientHeight / 2);
    }
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    this.lastDraw = performance.now();
    const view = this.viewport;
    const total = this.items.length * this.rowHeight;
    this.spacer.style.height = `${total}px`;
    if (this.follow) view.scrollTop = total;
    const first = Math.max(0, Math.floor(view.scrollTop / this.rowHeight) - 2);
    const count = Math.ceil(view.clientHeight / this.rowHeight) + 5;
    const last = Math.min(this.items.length, first + count);
    this.rows.style.transform = `translateY(${first * this.rowHeight}px)`;
    const nodes = [];
    for (let i = first; i < last; i++) {
      const row = this.render(this.items[i], i);
      row.classList.add("vlist-row");
      if (i === this.selected) row.classList.add("selected");
      row.style.height = `${this.rowHeight}px`;
      nodes.push(row);
    }
    this.rows.replaceChildren(...nodes);
    if (last >= this.items.length - 5) this.nearEnd();
    if (this.items.length && first <= 5) this.nearStart();
  }
}

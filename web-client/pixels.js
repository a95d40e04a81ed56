// A scene's phones (pixels) as the operator's and observer's pages know them: read page by
// page from `GET /api/scenes/{id}/pixels` (at most MAX_PAGES pages, so a huge crowd cannot
// stall the page), then kept up to date by the live stream's `pixel` events.
//
// A change pushed while a read is on its way is kept and applied again on top of what the
// read returns: the read may have been answered before that change, and a change is never
// lost to a slow read. (Applying a change twice is harmless: it sets the same fields.)

import { api } from './api.js';

export const PER_PAGE = 200;
/** Pages read at most: 10 000 phones. */
export const MAX_PAGES = 50;

/**
 * Reads a scene's pixels, every page up to the cap. `status` ('located', ...) filters on the
 * server. Resolves to {items, total}: `total` is the server's count, which may be more than
 * the items read.
 */
export async function loadPixels(sceneId, { status } = {}) {
  const items = [];
  let total = 0;
  for (let page = 1; page <= MAX_PAGES; page++) {
    const q = new URLSearchParams({ page, per_page: PER_PAGE });
    if (status) q.set('status', status);
    const reply = await api('GET', `/api/scenes/${sceneId}/pixels?${q}`);
    items.push(...reply.items);
    total = reply.total;
    if (items.length >= total || reply.items.length === 0) break;
  }
  return { items, total };
}

/** The pixels of one scene by id, read once and then changed by pushed events. */
export class PixelStore {
  /**
   * @param {string} sceneId
   * @param {object} [o]
   * @param {string} [o.status]  read only pixels with this status
   * @param {(p: object) => boolean} [o.keep]  which pixels the store holds (a kicked phone
   *   leaves the operator's preview, but stays in the observer's list as kicked)
   */
  constructor(sceneId, { status, keep = () => true } = {}) {
    Object.assign(this, { sceneId, status, keep });
    /** pixel_id → {pixel_id, status, x, y, method, ...} */
    this.byId = new Map();
    /** The server's count at the last read. */
    this.total = 0;
    /** Changes pushed while a read is on its way (null: no read on its way). */
    this.pending = null;
    this.reads = 0;
  }

  /** Reads every pixel again (at the start, after a reconnect, on `resync`). */
  async reload() {
    const read = ++this.reads;
    this.pending = [];
    try {
      const { items, total } = await loadPixels(this.sceneId, { status: this.status });
      if (read !== this.reads) return false; // a later read is on its way: it wins
      this.byId = new Map();
      for (const p of items) if (this.keep(p)) this.byId.set(p.pixel_id, p);
      this.total = total;
      const missed = this.pending;
      this.pending = null;
      for (const change of missed) this.apply(change);
      return true;
    } finally {
      if (read === this.reads) this.pending = null;
    }
  }

  /** A `pixel` event: {pixel_id, status, x, y, method, confidence}. */
  apply(change) {
    this.pending?.push(change);
    const merged = { ...this.byId.get(change.pixel_id), ...change };
    if (this.keep(merged)) {
      // a new phone beyond the cap is not held: the page's memory stays bounded
      if (this.byId.has(change.pixel_id) || this.byId.size < PER_PAGE * MAX_PAGES) this.byId.set(change.pixel_id, merged);
    } else {
      this.byId.delete(change.pixel_id);
    }
  }

  get size() {
    return this.byId.size;
  }

  values() {
    return this.byId.values();
  }

  get(id) {
    return this.byId.get(id);
  }
}

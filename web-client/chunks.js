// Colour chunks (docs/protocol.md, "Colour chunks"): parsing, and the timeline a phone keeps
// of them. No DOM: runs and is tested under Node as well as in the browser.

/** Parses one binary chunk (an ArrayBuffer) into {version, start, end, entries: [{at, rgb}]}. */
export function parseChunk(buffer) {
  const view = new DataView(buffer);
  if (view.byteLength < 17 || view.getUint8(0) !== 1) throw new Error('not a colour chunk');
  const version = view.getUint32(1, true);
  // two 32-bit halves rather than getBigInt64, which Safari lacks before 15
  const start = view.getUint32(5, true) + view.getInt32(9, true) * 2 ** 32;
  const length = view.getUint32(13, true);
  const entries = [];
  let at = start;
  let i = 17;
  while (i < view.byteLength) {
    let dt = 0;
    let shift = 0;
    for (;;) {
      const b = view.getUint8(i++);
      dt += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) break;
    }
    at += dt;
    if (i + 3 > view.byteLength) throw new Error('truncated chunk');
    entries.push({ at, rgb: [view.getUint8(i), view.getUint8(i + 1), view.getUint8(i + 2)] });
    i += 3;
  }
  return { version, start, end: start + length, entries };
}

/**
 * What a phone holds of the show: chunks by version, newest rules. `colorAt(t)` is the colour
 * for server instant `t` (ms), or null where no chunk covers it (show the idle colour).
 */
export class Timeline {
  constructor() {
    this.chunks = [];
    this.newest = -1;
  }

  add(chunk) {
    if (chunk.version < this.newest) return false;
    if (chunk.version > this.newest) {
      // a newer show version: what older versions said from this chunk's start on is void
      this.chunks = this.chunks
        .filter((c) => c.start < chunk.start)
        .map((c) => (c.end > chunk.start ? { ...c, end: chunk.start } : c));
      this.newest = chunk.version;
    }
    this.chunks.push(chunk);
    return true;
  }

  /** The chunk that speaks for instant t: the latest added that covers it. */
  chunkAt(t) {
    for (let i = this.chunks.length - 1; i >= 0; i--) {
      const c = this.chunks[i];
      if (c.start <= t && t < c.end) return c;
    }
    return null;
  }

  colorAt(t) {
    const c = this.chunkAt(t);
    if (!c) return null;
    let rgb = null;
    for (const e of c.entries) {
      if (e.at > t) break;
      rgb = e.rgb;
    }
    return rgb;
  }

  /** How far ahead of `t` the timeline is covered without a gap, ms. */
  coveredAhead(t) {
    let until = t;
    for (;;) {
      const c = this.chunkAt(until);
      if (!c) return until - t;
      until = c.end;
    }
  }

  /** Forgets chunks that ended before `t`. */
  prune(t) {
    this.chunks = this.chunks.filter((c) => c.end >= t);
  }
}

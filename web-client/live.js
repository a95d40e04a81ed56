// A scene as it happens, pushed by the server (`GET /api/scenes/{id}/live`, server-sent
// events) to the operator's and observer's pages instead of their polling.
//
// EventSource cannot send the Authorization header, so the stream is read with fetch() and
// a ReadableStream reader, and the text/event-stream format is parsed here (SseParser: no
// DOM, so it runs under Node too). When the stream drops, it is opened again after 1 s,
// doubling to 15 s, with jitter (a thousand pages must not come back in the same instant);
// every time it opens, `onOpen` is called so that the page reads again what it may have
// missed meanwhile (the server only pushes changes).
//
// A hidden page (document.hidden) holds what it is told and applies it the moment it is
// shown again: a background tab does no work for what nobody sees (the polling before
// skipped hidden tabs the same way), and what a page shows changes only while it is seen.
// Held changes are merged (the latest presence, show and scene; the latest of each phone),
// so holding costs little; too many phones' changes become one `resync`.

import { apiFetch, ApiError } from './api.js';

export const RETRY_FIRST_MS = 1000;
export const RETRY_MAX_MS = 15000;
/** The server sends a comment every 15 s; this long without a byte, the connection is dead
 * (a Wi-Fi that went away leaves a socket that never errors). */
export const SILENCE_MS = 45000;
/** Phones' changes held by a hidden page before it gives up and reads everything again. */
const MAX_HELD = 2000;

/**
 * The text/event-stream format (the HTML standard's "event stream interpretation"): lines
 * end in CR LF, LF or CR; `field: value`; a blank line dispatches the event; lines that start
 * with a colon are comments (the server's keep-alives). Feed it decoded text as it comes.
 */
export class SseParser {
  /** @param {(name: string, data: string, id: string) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.skipLf = false; // the last chunk ended in CR: a LF that starts the next one is its pair
    this.name = '';
    this.data = [];
    this.lastId = '';
  }

  push(text) {
    let s = this.buf + text;
    let start = 0;
    if (this.skipLf && s[0] === '\n') start = 1;
    this.skipLf = false;
    for (;;) {
      const lf = s.indexOf('\n', start);
      const cr = s.indexOf('\r', start);
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (end === -1) break;
      this.line(s.slice(start, end));
      if (s[end] === '\r') {
        if (end + 1 === s.length) {
          this.skipLf = true;
          start = end + 1;
          break;
        }
        start = s[end + 1] === '\n' ? end + 2 : end + 1;
      } else {
        start = end + 1;
      }
    }
    this.buf = s.slice(start);
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onEvent(this.name || 'message', this.data.join('\n'), this.lastId);
      this.name = '';
      this.data = [];
      return;
    }
    if (line[0] === ':') return; // a comment: keep-alive
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') this.name = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
    // `retry` and unknown fields: ignored (the reconnect delay is ours)
  }
}

/** How long to wait before attempt `n` (0: the first retry): 1 s doubling to 15 s, the
 * upper half of it random ("equal jitter": never sooner than half, spread over the rest). */
export function retryDelay(n, random = Math.random) {
  const cap = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(n, 10));
  return cap / 2 + random() * (cap / 2);
}

export class LiveStream {
  /**
   * @param {string} sceneId
   * @param {object} o
   * @param {(name: string, data: object) => void} o.onEvent  presence, show, pixel, scene,
   *   ended, resync
   * @param {(o: {reconnected: boolean}) => void} [o.onOpen]  the stream is (again) open:
   *   read what may have been missed
   * @param {(err: Error, retryMs: number) => void} [o.onDown]  it dropped; retrying
   * @param {(err: ApiError) => void} [o.onFatal]  it cannot be opened (401, 403, 404): given up
   */
  constructor(sceneId, { onEvent, onOpen = () => {}, onDown = () => {}, onFatal = () => {} }) {
    Object.assign(this, { sceneId, onEvent, onOpen, onDown, onFatal });
    /** Not connecting (stopped by the page, or the scene ended). */
    this.stopped = true;
    /** Stopped by the page: nothing more is delivered, held or not. */
    this.discarded = false;
    this.controller = null;
    this.retryTimer = null;
    this.silenceTimer = null;
    this.failures = 0;
    this.opens = 0;
    /** Whether the stream is open now. */
    this.connected = false;
    this.held = new Map();
    this.onVisibility = () => {
      if (!document.hidden) this.flush();
    };
  }

  start() {
    if (!this.stopped || this.discarded) return;
    this.stopped = false;
    document.addEventListener('visibilitychange', this.onVisibility);
    this.connect();
  }

  /** The page is done with this scene: no more connecting, nothing more delivered. */
  stop() {
    this.discarded = true;
    this.halt();
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.held.clear();
  }

  /** No more connecting; what a hidden page holds is still delivered when it is shown. */
  halt() {
    this.stopped = true;
    this.connected = false;
    clearTimeout(this.retryTimer);
    clearTimeout(this.silenceTimer);
    this.controller?.abort();
    this.controller = null;
  }

  async connect() {
    const controller = new AbortController();
    this.controller = controller;
    const mine = () => !this.stopped && this.controller === controller;
    let ended = false;
    try {
      const res = await apiFetch(`/api/scenes/${this.sceneId}/live`, {
        headers: { accept: 'text/event-stream' },
        cache: 'no-store',
        signal: controller.signal,
      });
      if (!mine()) return;
      if (!res.body?.getReader) throw new ApiError(0, 'unsupported', 'this browser cannot read a live stream');
      this.connected = true;
      this.onOpen({ reconnected: this.opens++ > 0 });
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser((name, data) => {
        this.failures = 0; // a stream that delivers is a healthy one: the next drop starts at 1 s
        let value;
        try {
          value = JSON.parse(data);
        } catch {
          // not what the server sends: whatever it was, read everything again
          name = 'resync';
          value = {};
        }
        if (name === 'ended') ended = true;
        this.deliver(name, value);
      });
      this.armSilence(controller);
      for (;;) {
        const { done, value } = await reader.read();
        if (!mine()) return;
        if (done) break;
        this.armSilence(controller);
        parser.push(decoder.decode(value, { stream: true }));
        if (ended) break;
      }
      if (ended) {
        this.halt(); // the scene is over: nothing more will come
        return;
      }
      throw new ApiError(0, 'stream_closed', 'the live stream closed');
    } catch (err) {
      clearTimeout(this.silenceTimer);
      this.connected = false;
      if (!mine()) return;
      // not allowed, no such scene, or a browser that cannot read a stream: trying again
      // would not change that
      if (err instanceof ApiError && ([401, 403, 404].includes(err.status) || err.code === 'unsupported')) {
        this.halt();
        this.onFatal(err);
        return;
      }
      const wait = retryDelay(this.failures++);
      const why = err instanceof ApiError ? err : new ApiError(0, 'network', 'the live stream was cut');
      this.onDown(why, wait);
      this.retryTimer = setTimeout(() => mine() && this.connect(), wait);
    }
  }

  armSilence(controller) {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => controller.abort(), SILENCE_MS);
  }

  deliver(name, data) {
    if (this.discarded) return;
    if (typeof document !== 'undefined' && document.hidden) {
      this.hold(name, data);
      return;
    }
    this.flush();
    this.onEvent(name, data);
  }

  hold(name, data) {
    const key = name === 'pixel' ? 'pixel:' + data.pixel_id : name;
    this.held.delete(key); // the latest goes last
    this.held.set(key, { name, data });
    if (this.held.size > MAX_HELD) {
      for (const k of [...this.held.keys()]) if (k.startsWith('pixel:')) this.held.delete(k);
      this.held.set('resync', { name: 'resync', data: {} });
    }
  }

  flush() {
    if (!this.held.size) return;
    const held = [...this.held.values()];
    this.held.clear();
    for (const { name, data } of held) {
      if (this.discarded) return;
      this.onEvent(name, data);
    }
  }
}

/** How long a page's first read waits for its stream to open. */
const FIRST_OPEN_WAIT_MS = 3000;
/** The key of the stream's own error in the page's messages (cleared when it is back). */
const LIVE_ERROR = 'live';

/**
 * A page's stream of a scene, started: its drops and failures said in the page's messages
 * (errors.js), the drop's error cleared when it is back, `reread()` after every reconnect.
 * Returns {live, opened}: `opened` resolves once the stream is open (so that what the page
 * reads next cannot miss a change: the server watches the scene before it answers), or
 * failed its first try, or after FIRST_OPEN_WAIT_MS (a stream that does not answer must not
 * keep the page empty).
 */
export function watchScene(sceneId, { messages, onEvent, reread }) {
  let first;
  const opened = new Promise((resolve) => (first = resolve));
  setTimeout(first, FIRST_OPEN_WAIT_MS);
  const live = new LiveStream(sceneId, {
    onEvent,
    onOpen: ({ reconnected }) => {
      first();
      messages.clear(LIVE_ERROR);
      if (reconnected) reread();
    },
    onDown: (err, wait) => {
      first();
      messages.error(err, `Live updates (trying again in ${Math.ceil(wait / 1000)} s)`, LIVE_ERROR);
    },
    onFatal: (err) => {
      first();
      messages.error(err, 'Live updates');
    },
  });
  live.start();
  return { live, opened };
}

// Clock sync with the C3S server (docs/protocol.md, "Clock sync").
//
// Keeps a window of four-timestamp samples, trusts the least delayed ones (the NTP clock
// filter), fits the drift of this clock against the server's, re-syncs in bursts periodically
// and whenever the page becomes visible again, and reports its estimate to the server.
// No DOM needed: the transport, the clock and the timers are passed in, so it runs (and is
// tested) under Node as well as in the browser.

/** One exchange: t0 and t3 on this clock (ms), t1 and t2 on the server's (µs). */
export function sample(t0, t1us, t2us, t3) {
  const t1 = t1us / 1000;
  const t2 = t2us / 1000;
  return {
    at: t3,
    offset: ((t1 - t0) + (t2 - t3)) / 2,
    delay: (t3 - t0) - (t2 - t1),
  };
}

/** Least-squares slope of offset over time (ms per ms); 0 with fewer than two points. */
export function slope(points) {
  if (points.length < 2) return 0;
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.at, 0) / n;
  const my = points.reduce((s, p) => s + p.offset, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.at - mx) * (p.offset - my);
    den += (p.at - mx) * (p.at - mx);
  }
  return den > 0 ? num / den : 0;
}

/** How much a free-running clock may drift before a fit says otherwise (50 ppm). */
const DRIFT_BOUND = 50e-6;

export class ClockSync {
  /**
   * @param {object} o
   * @param {(msg: object) => void} o.send   sends a protocol message
   * @param {() => number} [o.now]           this clock, ms
   * @param {(fn: Function, ms: number) => any} [o.setTimer]
   * @param {(id: any) => void} [o.clearTimer]
   * @param {EventTarget} [o.visibility]     fires `visibilitychange` (the document)
   */
  constructor({
    send,
    now = () => performance.timeOrigin + performance.now(),
    setTimer = (fn, ms) => setTimeout(fn, ms),
    clearTimer = (id) => clearTimeout(id),
    visibility = typeof document !== 'undefined' ? document : null,
    window = 32,
    burst = 8,
    burstSpacingMs = 60,
    resyncMs = 15000,
    onUpdate = () => {},
  }) {
    Object.assign(this, { send, now, setTimer, clearTimer, visibility, window, burst, burstSpacingMs, resyncMs, onUpdate });
    this.samples = [];
    this.pending = new Map();
    this.timers = new Set();
    this.best = null;
    this.drift = 0;
    this.onVisible = () => {
      if (this.visibility && this.visibility.visibilityState === 'hidden') return;
      // some platforms stop this clock while the device sleeps: samples from before may be
      // wrong by the whole sleep, and the least delayed of them would win
      this.forget();
      this.syncBurst();
    };
  }

  /** Drops every sample, after a reconnect (perhaps to another node) or a sleep; the last
   * estimate stands only until the first new sample replaces it. */
  forget() {
    this.samples = [];
    this.pending.clear();
    this.drift = 0;
  }

  start() {
    this.forget();
    this.visibility?.addEventListener?.('visibilitychange', this.onVisible);
    this.syncBurst();
  }

  stop() {
    this.visibility?.removeEventListener?.('visibilitychange', this.onVisible);
    for (const id of this.timers) this.clearTimer(id);
    this.timers.clear();
  }

  later(fn, ms) {
    const id = this.setTimer(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
  }

  /** A burst of exchanges now, and the next burst after `resyncMs`. */
  syncBurst() {
    for (const id of this.timers) this.clearTimer(id);
    this.timers.clear();
    for (let i = 0; i < this.burst; i++) this.later(() => this.syncOnce(), i * this.burstSpacingMs);
    this.later(() => this.report(), this.burst * this.burstSpacingMs + 500);
    this.later(() => this.syncBurst(), this.resyncMs);
  }

  syncOnce() {
    const t0 = this.now();
    // unanswered requests (a lost reply) do not pile up
    if (this.pending.size > 2 * this.burst) this.pending.clear();
    this.pending.set(t0, true);
    this.send({ type: 'sync', t0 });
  }

  /** Feed a `sync` reply from the server. */
  handleReply(msg) {
    const t3 = this.now();
    if (!this.pending.delete(msg.t0)) return; // not ours, or answered twice
    const s = sample(msg.t0, msg.t1, msg.t2, t3);
    if (!(s.delay >= 0)) return;
    this.samples.push(s);
    if (this.samples.length > this.window) this.samples.shift();
    this.refit();
  }

  refit() {
    const minDelay = Math.min(...this.samples.map((s) => s.delay));
    // the clock filter: only samples whose delay is near the best say much about the offset
    const good = this.samples.filter((s) => s.delay <= minDelay * 1.5 + 0.5);
    this.best = good.reduce((a, b) => (b.delay < a.delay ? b : a));
    const span = good.length ? good[good.length - 1].at - good[0].at : 0;
    // trust a drift fit only over a long enough stretch, and only within physical bounds
    this.drift = span > 20000 ? Math.max(-500e-6, Math.min(500e-6, slope(good))) : 0;
  }

  /** Server clock − this clock at local time `t`, ms. */
  offsetAt(t = this.now()) {
    if (!this.best) return null;
    return this.best.offset + this.drift * (t - this.best.at);
  }

  /** The bound on the error of `offsetAt(t)`, ms. */
  errorAt(t = this.now()) {
    if (!this.best) return Infinity;
    const age = Math.abs(t - this.best.at);
    return this.best.delay / 2 + age * (this.drift ? DRIFT_BOUND / 5 : DRIFT_BOUND);
  }

  /** Server time now, ms. */
  serverNow() {
    const t = this.now();
    return t + (this.offsetAt(t) ?? 0);
  }

  /** This clock's reading at server instant `serverMs`. */
  toLocal(serverMs) {
    const t = this.now();
    return serverMs - (this.offsetAt(t) ?? 0);
  }

  report() {
    const offset = this.offsetAt();
    if (offset === null) return;
    const error = this.errorAt();
    this.send({ type: 'sync_report', offset_ms: offset, error_ms: error });
    this.onUpdate({ offset, error, drift: this.drift, samples: this.samples.length });
  }
}

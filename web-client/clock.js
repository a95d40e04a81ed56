// Clock sync with the C3S server (docs/protocol.md, "Clock sync"; the design and its
// measurements are in docs/clock-sync.md).
//
// Every exchange bounds the server's clock from both sides: the request arrived after it left
// (θ ≤ t1 − t0) and the reply left before it arrived (θ ≥ t2 − t3), θ being server − this
// clock. The estimate takes each leg's tightest bound over a window separately (a fast way up
// and a fast way down need not be the same exchange), along one common line whose slope is this
// clock's drift against the server's. Samples are spread over time, fast at first and then one
// every few seconds; a sample that contradicts the window (the clock jumped: sleep, NTP) starts
// the window afresh. No DOM needed: the transport, the clock and the timers are passed in, so it
// runs (and is tested) under Node as well as in the browser.

/** One exchange: t0 and t3 on this clock (ms), t1 and t2 on the server's (µs). `up` and `down`
 * are the two bounds on θ it gives: θ ≤ up and θ ≥ down. */
export function sample(t0, t1us, t2us, t3) {
  const t1 = t1us / 1000;
  const t2 = t2us / 1000;
  return {
    t0,
    t3,
    up: t1 - t0,
    down: t2 - t3,
    offset: ((t1 - t0) + (t2 - t3)) / 2,
    delay: (t3 - t0) - (t2 - t1),
  };
}

/**
 * The line θ(t) = mid + slope·(t − ref) that the samples bound most tightly: `hi` is the
 * intercept of the upper bound (the least of every up − slope·t0), `lo` of the lower bound (the
 * greatest of every down − slope·t3), and the slope minimises the summed distance of all the
 * bounds from their two lines (convex in the slope, so a ternary search finds it). With
 * `maxSlope` 0 the slope is `prior` and this is each leg's minimum on its own.
 */
export function fit(samples, { prior = 0, maxSlope = 0 } = {}) {
  const ref = samples[samples.length - 1].t3;
  const hiAt = (s) => {
    let m = Infinity;
    for (const x of samples) m = Math.min(m, x.up - s * (x.t0 - ref));
    return m;
  };
  const loAt = (s) => {
    let m = -Infinity;
    for (const x of samples) m = Math.max(m, x.down - s * (x.t3 - ref));
    return m;
  };
  // Σ(up − line) + Σ(line − down), dropping the terms that do not depend on the slope
  let sumT0 = 0;
  let sumT3 = 0;
  for (const x of samples) {
    sumT0 += x.t0 - ref;
    sumT3 += x.t3 - ref;
  }
  const n = samples.length;
  const cost = (s) => -s * sumT0 - n * hiAt(s) + n * loAt(s) + s * sumT3;
  let a = prior - maxSlope;
  let b = prior + maxSlope;
  for (let i = 0; i < 60 && b - a > 1e-9; i++) {
    const m1 = a + (b - a) / 3;
    const m2 = b - (b - a) / 3;
    if (cost(m1) <= cost(m2)) b = m2;
    else a = m1;
  }
  const slope = (a + b) / 2;
  const hi = hiAt(slope);
  const lo = loAt(slope);
  return { ref, slope, hi, lo, mid: (hi + lo) / 2 };
}

/**
 * How far a slope fitted to these samples may be off by chance: the standard error of the
 * least-squares slope through the midpoints of their tightest bounds in groups of four (∞ with
 * fewer than four groups).
 */
export function slopeNoise(samples, group = 4) {
  const points = [];
  for (let i = 0; i + group <= samples.length; i += group) {
    let up = Infinity;
    let down = -Infinity;
    let t = 0;
    for (const x of samples.slice(i, i + group)) {
      up = Math.min(up, x.up);
      down = Math.max(down, x.down);
      t += x.t3 / group;
    }
    points.push({ t, y: (up + down) / 2 });
  }
  const n = points.length;
  if (n < 4) return { slope: 0, noise: Infinity };
  const mt = points.reduce((a, p) => a + p.t, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let stt = 0;
  let sty = 0;
  for (const p of points) {
    stt += (p.t - mt) ** 2;
    sty += (p.t - mt) * (p.y - my);
  }
  const slope = sty / stt;
  const residual = points.reduce((a, p) => a + (p.y - my - slope * (p.t - mt)) ** 2, 0) / (n - 2);
  return { slope, noise: Math.sqrt(residual / stt), groups: n };
}

/** How far a free-running clock may drift unmeasured (ppm as a fraction), and how far a fitted
 * drift may still be off. */
const DRIFT_BOUND = 100e-6;
const FITTED_DRIFT_BOUND = 10e-6;
/** The largest drift believed: a phone clock runs 10–100 ppm off; more is a bad fit. */
const MAX_DRIFT = 1000e-6;

export class ClockSync {
  /**
   * @param {object} o
   * @param {(msg: object) => void} o.send   sends a protocol message
   * @param {() => number} [o.now]           this clock, ms
   * @param {(fn: Function, ms: number) => any} [o.setTimer]
   * @param {(id: any) => void} [o.clearTimer]
   * @param {EventTarget} [o.visibility]     fires `visibilitychange` (the document)
   * @param {(state: object) => void} [o.onUpdate] called with each report
   */
  constructor({
    send,
    now = () => performance.timeOrigin + performance.now(),
    setTimer = (fn, ms) => setTimeout(fn, ms),
    clearTimer = (id) => clearTimeout(id),
    visibility = typeof document !== 'undefined' ? document : null,
    // the window: the newest samples, at most this many and this old
    window = 256,
    windowMs = 10 * 60 * 1000,
    // the spacing of samples: `firstMs` at first, growing by `growth` each time up to `steadyMs`;
    // `settledMs` once the window holds `settledAfter` samples
    firstMs = 100,
    growth = 1.15,
    steadyMs = 500,
    settledAfter = 48,
    settledMs = 1200,
    // the drift is fitted once the samples span this long, and believed when it stands out of
    // the noise; before, the last fit (or 0) holds; over `trustSpanMs` a fit always holds
    driftSpanMs = 10000,
    trustSpanMs = 120000,
    // a reply this late is taken as lost
    replyTimeoutMs = 5000,
    // how often the estimate is reported to the server (and at once after the first second)
    reportMs = 10000,
    onUpdate = () => {},
  }) {
    Object.assign(this, {
      send, now, setTimer, clearTimer, visibility, window, windowMs, firstMs, growth, steadyMs,
      settledAfter, settledMs, driftSpanMs, trustSpanMs, replyTimeoutMs, reportMs, onUpdate,
    });
    this.samples = [];
    this.pending = new Set(); // t0 of the requests not answered yet
    this.timer = null;
    this.reportTimer = null;
    this.model = null;
    this.drift = 0;
    this.driftFitted = false;
    this.spacing = firstMs;
    this.ramping = true;
    this.suspects = []; // samples past the window's band, held back (judge)
    this.suspectWay = null;
    this.steps = 0; // how many times the clock was found to have jumped
    this.onVisible = () => {
      if (this.visibility && this.visibility.visibilityState === 'hidden') return;
      // back from the background (perhaps a sleep that stopped this clock): sample fast again;
      // a jump shows as samples outside the window's band, and the window starts afresh
      this.rampUp();
    };
  }

  /** Drops every sample, after a reconnect (perhaps to another node); the last estimate stands
   * until the first new sample replaces it, and the drift fitted is kept as the prior. */
  forget() {
    this.samples = [];
    this.pending.clear();
    this.suspects = [];
  }

  start() {
    this.stop();
    this.forget();
    this.visibility?.addEventListener?.('visibilitychange', this.onVisible);
    this.rampUp();
    this.reportTimer = this.setTimer(() => this.reportNow(), this.firstMs * 10);
  }

  stop() {
    this.visibility?.removeEventListener?.('visibilitychange', this.onVisible);
    if (this.timer !== null) this.clearTimer(this.timer);
    if (this.reportTimer !== null) this.clearTimer(this.reportTimer);
    this.timer = null;
    this.reportTimer = null;
  }

  /** Samples fast from now on, slowing down again as they come in. */
  rampUp() {
    this.spacing = this.firstMs;
    this.ramping = true;
    if (this.timer !== null) this.clearTimer(this.timer);
    this.tick();
  }

  tick() {
    this.syncOnce();
    const settled = this.samples.length >= this.settledAfter;
    const next = settled && !this.ramping ? this.settledMs : this.spacing;
    this.spacing = Math.min(this.steadyMs, this.spacing * this.growth);
    if (this.spacing >= this.steadyMs) this.ramping = false;
    this.timer = this.setTimer(() => this.tick(), next);
  }

  syncOnce() {
    const t0 = this.now();
    // a lost reply is forgotten after a while; the map never grows
    for (const sentAt of this.pending) {
      if (t0 - sentAt > this.replyTimeoutMs) this.pending.delete(sentAt);
    }
    this.pending.add(t0);
    this.send({ type: 'sync', t0 });
  }

  /** Feed a `sync` reply from the server. */
  handleReply(msg) {
    const t3 = this.now();
    // the echo of t0 may have come back a rounding off (a JSON number through another parser)
    let t0 = msg.t0;
    if (!this.pending.has(t0)) t0 = [...this.pending].find((k) => Math.abs(k - msg.t0) < 1e-3);
    if (t0 === undefined || !this.pending.delete(t0)) return; // not ours, answered twice, or given up on
    const s = sample(t0, msg.t1, msg.t2, t3);
    if (!(s.delay >= 0) || !Number.isFinite(s.offset)) return;
    const way = this.judge(s);
    switch (way) {
      case 'contradicts':
        // its bounds and the window's cannot both hold: the clock jumped
        this.steps += 1;
        this.samples = [s];
        this.suspects = [];
        this.rampUp();
        break;
      case 'lower':
      case 'higher': {
        // past one of the window's bounds: a new fastest exchange, or the start of a shift (a
        // small jump, a new path); three in a row the same way are a shift, and only they count
        if (this.suspects.length && this.suspectWay !== way) this.admit();
        this.suspectWay = way;
        this.suspects.push(s);
        if (this.suspects.length < 3) return;
        this.steps += 1;
        this.samples = this.suspects;
        this.suspects = [];
        break;
      }
      default:
        this.admit();
        this.samples.push(s);
    }
    const oldest = t3 - this.windowMs;
    while (this.samples.length > this.window || this.samples[0].t3 < oldest) this.samples.shift();
    this.refit();
  }

  /** Samples held back as suspects join the window after all. */
  admit() {
    this.samples.push(...this.suspects);
    this.suspects = [];
  }

  /**
   * Where a new sample stands against the window's band: `in` it; past its upper bound
   * (`lower`: θ seems to have fallen) or its lower one (`higher`); or `contradicts` it, when
   * even the sample's own band misses the window's. The band is widened by how far the drift
   * may have carried it since the newest sample.
   */
  judge(s) {
    if (!this.model || this.samples.length < 8) return 'in';
    const { slope, hi, lo, ref } = this.model;
    const last = this.samples[this.samples.length - 1].t3;
    const tolerance = 0.5 + Math.abs(s.t3 - last) * (this.driftFitted ? FITTED_DRIFT_BOUND : DRIFT_BOUND);
    const upperNow = hi + slope * (s.t0 - ref);
    const lowerNow = lo + slope * (s.t3 - ref);
    if (s.up < lowerNow - tolerance || s.down > upperNow + tolerance) return 'contradicts';
    if (s.up < upperNow - tolerance) return 'lower';
    if (s.down > lowerNow + tolerance) return 'higher';
    return 'in';
  }

  refit() {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const span = last.t3 - first.t3;
    if (span >= this.driftSpanMs) {
      const { slope, noise, groups } = slopeNoise(this.samples);
      if (span >= this.trustSpanMs || (groups >= 12 && Math.abs(slope - this.drift) > 5 * noise)) {
        // the tightest line, within what the evidence allows of the slope (too few groups to
        // say: anywhere believable around the last fit)
        const known = Number.isFinite(noise);
        this.model = fit(this.samples, {
          prior: known ? slope : this.drift,
          maxSlope: known ? Math.min(MAX_DRIFT, Math.max(4 * noise, 1e-6)) : MAX_DRIFT,
        });
        this.drift = this.model.slope;
        this.driftFitted = true;
        return;
      }
    }
    this.model = fit(this.samples, { prior: this.drift, maxSlope: 0 });
  }

  /** Server clock − this clock at local time `t`, ms. */
  offsetAt(t = this.now()) {
    if (!this.model) return null;
    return this.model.mid + this.model.slope * (t - this.model.ref);
  }

  /** The bound on the error of `offsetAt(t)`, ms: half the narrowest band the window allows,
   * widened by how far the drift may be off since the newest sample. */
  errorAt(t = this.now()) {
    if (!this.model) return Infinity;
    const half = Math.max(0, (this.model.hi - this.model.lo) / 2);
    const age = Math.abs(t - this.model.ref);
    return half + age * (this.driftFitted ? FITTED_DRIFT_BOUND : DRIFT_BOUND);
  }

  /** Server time now, ms. */
  serverNow() {
    return this.serverAt(this.now());
  }

  /** The server's time at this clock's reading `t` (ms), e.g. a requestAnimationFrame time
   * plus `performance.timeOrigin`. */
  serverAt(t) {
    return t + (this.offsetAt(t) ?? 0);
  }

  /** This clock's reading at server instant `serverMs`. */
  toLocal(serverMs) {
    const t = this.now();
    return serverMs - (this.offsetAt(t) ?? 0);
  }

  reportNow() {
    this.reportTimer = this.setTimer(() => this.reportNow(), this.reportMs);
    this.report();
  }

  report() {
    const offset = this.offsetAt();
    if (offset === null) return;
    const error = this.errorAt();
    this.send({ type: 'sync_report', offset_ms: offset, error_ms: error });
    this.onUpdate({ offset, error, drift: this.drift, samples: this.samples.length, steps: this.steps });
  }
}

// Finding each beacon's chirp in a phone's recording (docs/sound.md, "The detector"). No DOM:
// the phone runs it in a Web Worker (worker.js), the tests and the bench under Node.
//
// The recording is folded modulo the period, aligned to the session's start, so the repeats
// add up coherently; the folded period is correlated with each beacon's code by FFT (one
// forward transform, then per code the product with the code's spectrum over the band only,
// transformed back at a quarter of the rate: the band is 8 kHz wide, so 12 kHz of complex
// samples hold the correlation's envelope). The strongest beacon, searched over the whole
// period, anchors a window of ±`maxSpreadMs` in which the others are looked for; in each, the
// strongest peak that stands out of its own neighbourhood is a path of that beacon, and the
// earliest peak shortly before it and at least half as strong is the direct one (echoes come
// later). The peak's time is refined at the full rate and between samples.

import { SOUND, chirp, LONGEST_CHIRP_MS } from './codes.js';

/** The detector's settings. */
export const DETECT = Object.freeze({
  /** A beacon is reported when its peak stands this far (dB, amplitude) above both the
   * correlation's noise over the period and its neighbourhood's. Measured: in noise alone the
   * best peak of a whole-period search through six codes stood at 7.9 dB median, 10.1 dB at
   * most over 150 recordings; a crest of the plateau a louder beacon's chirp leaves in
   * another code stands at most 3.6 dB over the plateau beside it. */
  minSnrDb: 14,
  /** The true delays of one phone's beacons differ by less than this (a 100 m × 60 m venue
   * spreads them by ~0.35 s, clock errors add milliseconds). */
  maxSpreadMs: 500,
  /** An echo arrives at most this long after the direct path. */
  directBeforeMs: 100,
  /** ...and the direct path is at least this share of the loudest echo's peak. */
  directShare: 0.5,
  /** The folded stretch starts this long before the session, so that an arrival a little
   * early on the phone's clock is not cut off. */
  foldLeadMs: 100,
  /** The neighbourhood each side of a peak whose median is its local floor, ms... */
  localFloorMs: 6,
  /** ...leaving out its own main lobe (its envelope is down 20 dB 0.5 ms away). */
  localGapMs: 0.5,
  /** How far below and above the code band the correlation is kept. */
  bandMarginHz: 1000,
  /** Candidate peaks looked at, loudest first, per search. */
  candidates: 24,
});

// ---------------------------------------------------------------------------------------------
// FFT: iterative radix-2, in place, on Float64Arrays. Plans (bit reversal and twiddles) are
// kept per size: a phone detects with the same few sizes session after session.

const plans = new Map();

function planFor(n) {
  let p = plans.get(n);
  if (p) return p;
  if (n < 2 || (n & (n - 1)) !== 0) throw new RangeError(`FFT size ${n} is not a power of two`);
  const bits = Math.log2(n);
  const rev = new Uint32Array(n);
  for (let i = 0; i < n; i++) rev[i] = (rev[i >> 1] >> 1) | ((i & 1) << (bits - 1));
  const cos = new Float64Array(n / 2);
  const sin = new Float64Array(n / 2);
  for (let i = 0; i < n / 2; i++) {
    cos[i] = Math.cos((2 * Math.PI * i) / n);
    sin[i] = Math.sin((2 * Math.PI * i) / n);
  }
  p = { rev, cos, sin };
  plans.set(n, p);
  return p;
}

/**
 * The DFT of (re, im) in place, X[k] = Σ x[n]·e^∓2πikn/N; `inverse` flips the sign and does
 * not divide by N. Radix-2 decimation in time taken two stages at a time (one pass over the
 * arrays instead of two: memory, not arithmetic, is what a JS FFT waits on), with one radix-2
 * stage first when log2 N is odd.
 */
export function fft(re, im, inverse = false) {
  const n = re.length;
  const { rev, cos, sin } = planFor(n);
  for (let i = 0; i < n; i++) {
    const j = rev[i];
    if (j > i) {
      let t = re[i]; re[i] = re[j]; re[j] = t;
      t = im[i]; im[i] = im[j]; im[j] = t;
    }
  }
  const s = inverse ? 1 : -1;
  let m = 1;
  if (Math.log2(n) % 2 === 1) {
    for (let a = 0; a < n; a += 2) {
      const r = re[a], i = im[a];
      re[a] = r + re[a + 1]; im[a] = i + im[a + 1];
      re[a + 1] = r - re[a + 1]; im[a + 1] = i - im[a + 1];
    }
    m = 2;
  }
  // blocks of 4m from four transformed blocks of m: stage 2m's twiddle w₂ₘᵏ, stage 4m's w₄ₘᵏ
  for (; m < n; m *= 4) {
    const size = 4 * m;
    const step = n / size;
    if (m <= 16) {
      // short blocks: each twiddle once, for every block
      for (let k = 0; k < m; k++) {
        const a = 2 * k * step;
        const b = k * step;
        for (let i = k; i < n; i += size) radix4(re, im, i, m, cos[a], s * sin[a], cos[b], s * sin[b], s);
      }
    } else {
      for (let block = 0; block < n; block += size) {
        for (let k = 0, b = 0; k < m; k++, b += step) radix4(re, im, block + k, m, cos[2 * b], s * sin[2 * b], cos[b], s * sin[b], s);
      }
    }
  }
}

/** Two radix-2 stages on x[i0], x[i0+m], x[i0+2m], x[i0+3m]. */
function radix4(re, im, i0, m, w1r, w1i, w2r, w2i, s) {
  const i1 = i0 + m;
  const i2 = i1 + m;
  const i3 = i2 + m;
  let xr = re[i1] * w1r - im[i1] * w1i;
  let xi = re[i1] * w1i + im[i1] * w1r;
  const b0r = re[i0] + xr, b0i = im[i0] + xi, b1r = re[i0] - xr, b1i = im[i0] - xi;
  xr = re[i3] * w1r - im[i3] * w1i;
  xi = re[i3] * w1i + im[i3] * w1r;
  const b2r = re[i2] + xr, b2i = im[i2] + xi, b3r = re[i2] - xr, b3i = im[i2] - xi;
  const u2r = b2r * w2r - b2i * w2i, u2i = b2r * w2i + b2i * w2r;
  // w₄ₘ^(k+m) = w₄ₘᵏ·(∓i)
  const vr = b3r * w2r - b3i * w2i, vi = b3r * w2i + b3i * w2r;
  const u3r = -s * vi, u3i = s * vr;
  re[i0] = b0r + u2r; im[i0] = b0i + u2i; re[i2] = b0r - u2r; im[i2] = b0i - u2i;
  re[i1] = b1r + u3r; im[i1] = b1i + u3i; re[i3] = b1r - u3r; im[i3] = b1i - u3i;
}

const untangles = new Map();

/** cos and −sin of πk/h for the bins kept: the twiddles that untangle a packed real FFT. */
function untangleTwiddles(n, k0, count) {
  const key = `${n}/${k0}/${count}`;
  let t = untangles.get(key);
  if (!t) {
    t = { cos: new Float64Array(count), sin: new Float64Array(count) };
    for (let j = 0; j < count; j++) {
      t.cos[j] = Math.cos((2 * Math.PI * (k0 + j)) / n);
      t.sin[j] = -Math.sin((2 * Math.PI * (k0 + j)) / n);
    }
    untangles.set(key, t);
  }
  return t;
}

/**
 * Bins k0..k0+count−1 of the DFT of the real `x` zero-padded to `n`: one complex FFT of n/2
 * (even samples as real parts, odd as imaginary), untangled only where asked. `work` (two
 * Float64Arrays of n/2) and `out` (two of `count`) may be passed to reuse.
 */
export function realSpectrum(x, n, k0 = 0, count = n / 2 + 1, work = null, out = null) {
  const h = n / 2;
  const zr = work?.re ?? new Float64Array(h);
  const zi = work?.im ?? new Float64Array(h);
  zr.fill(0);
  zi.fill(0);
  const len = Math.min(x.length, n);
  for (let i = 0; i < len; i++) {
    if (i & 1) zi[i >> 1] = x[i];
    else zr[i >> 1] = x[i];
  }
  fft(zr, zi);
  const re = out?.re ?? new Float64Array(count);
  const im = out?.im ?? new Float64Array(count);
  const tw = untangleTwiddles(n, k0, count);
  for (let j = 0; j < count; j++) {
    const a = (k0 + j) % h;
    const c = (h - a) % h;
    const er = (zr[a] + zr[c]) / 2;
    const ei = (zi[a] - zi[c]) / 2;
    const or = (zi[a] + zi[c]) / 2;
    const oi = -(zr[a] - zr[c]) / 2;
    const wr = tw.cos[j];
    const wi = tw.sin[j];
    re[j] = er + wr * or - wi * oi;
    im[j] = ei + wr * oi + wi * or;
  }
  return { re, im };
}

const nextPow2 = (n) => 2 ** Math.ceil(Math.log2(n));

// ---------------------------------------------------------------------------------------------
// Geometry of one detection: the folded period, the FFT size, the band kept.

/** Sample rates a device may claim: a measured rate (samples per second of the server's
 * clock) renders its codes at the nominal one it is within 0.5 % of, so that the codes'
 * spectra are computed once, not once per measurement (60 ppm stretch no correlation notices). */
const NOMINAL_RATES = [16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000];

function nominalRate(sampleRate) {
  const near = NOMINAL_RATES.find((r) => Math.abs(sampleRate / r - 1) < 0.005);
  return near ?? Math.round(sampleRate);
}

/**
 * How a recording at `sampleRate` is transformed: `n` holds a period plus the longest code
 * (the correlation is circular over the period); `count` bins from `k0` hold the band with its
 * margins, and the correlation comes back from them at 1/`decimation` of the rate. The codes
 * are rendered at `codeRate`.
 */
export function layout(sampleRate, periodMs = SOUND.periodMs) {
  if (!(sampleRate > 2 * SOUND.highHz)) throw new RangeError(`sample rate ${sampleRate} Hz cannot hold the band`);
  const periodSamples = Math.round((periodMs * sampleRate) / 1000);
  const n = nextPow2(periodSamples + Math.ceil((LONGEST_CHIRP_MS * sampleRate) / 1000) + 1);
  const needHz = SOUND.highHz - SOUND.lowHz + 2 * DETECT.bandMarginHz;
  let decimation = 1;
  while (sampleRate / (decimation * 2) >= needHz && decimation < 16) decimation *= 2;
  const count = n / decimation;
  const k0 = Math.max(0, Math.min(Math.floor(((SOUND.lowHz - DETECT.bandMarginHz) * n) / sampleRate), n / 2 - count));
  return { sampleRate, codeRate: nominalRate(sampleRate), periodSamples, n, decimation, count, k0 };
}

const codeSpectra = new Map();

/** The conjugate of code `index`'s spectrum over the kept bins (cached: the same for every
 * recording at this rate). */
function codeSpectrum(index, geo) {
  const key = `${index}/${geo.codeRate}/${geo.n}/${geo.k0}/${geo.count}`;
  let s = codeSpectra.get(key);
  if (!s) {
    const { re, im } = realSpectrum(chirp(index, geo.codeRate), geo.n, geo.k0, geo.count);
    s = { re: Float32Array.from(re), im: Float32Array.from(im, (v) => -v) };
    codeSpectra.set(key, s);
  }
  return s;
}

/** Samples of padding either side of an analytic code: its Hilbert part rings a little past
 * the chirp's ends. */
const ANALYTIC_PAD = 64;
const analyticCodes = new Map();

/**
 * Code `index` as an analytic signal band-limited like the FFT correlation (re = the code,
 * im = its Hilbert transform), starting `ANALYTIC_PAD` samples before the chirp: correlating a
 * stretch with it gives the correlation's envelope at any one lag.
 */
function analyticCode(index, geo) {
  const key = `${index}/${geo.codeRate}/${geo.k0 / geo.n}/${geo.count / geo.n}`;
  let a = analyticCodes.get(key);
  if (a) return a;
  const code = chirp(index, geo.codeRate);
  const len = code.length + 2 * ANALYTIC_PAD;
  const m = nextPow2(2 * len);
  const re = new Float64Array(m);
  const im = new Float64Array(m);
  re.set(code, ANALYTIC_PAD);
  fft(re, im);
  const lo = Math.floor((geo.k0 / geo.n) * m);
  const hi = Math.ceil(((geo.k0 + geo.count) / geo.n) * m);
  for (let k = 0; k < m; k++) {
    const gain = k >= lo && k < hi && k > 0 && k < m / 2 ? 2 / m : 0;
    re[k] *= gain;
    im[k] *= gain;
  }
  fft(re, im, true);
  a = { re: Float64Array.from(re.subarray(0, len)), im: Float64Array.from(im.subarray(0, len)), len };
  analyticCodes.set(key, a);
  return a;
}

// ---------------------------------------------------------------------------------------------
// Folding.

const mod = (a, m) => ((a % m) + m) % m;

/**
 * Sums the recording's periods into one, phase 0 at the session's start. Exactly `repeats`
 * periods are added (from `foldLeadMs` before the start, or wherever the recording holds that
 * many), so every phase gets as much noise as signal. Folded sample j holds phase j + `frac`
 * samples. A measured, fractional rate makes a period a fractional number of samples: each
 * repeat is then added at the nearest whole sample and `frac` is their mean remainder (they
 * lie within a sample of each other, which costs the sum ~0.5 dB at 10 kHz; the fold's seam,
 * where the window starts, is off by under half a sample).
 */
export function fold(samples, sampleRate, { firstSampleMs, session }) {
  const periodMs = session.periodMs ?? SOUND.periodMs;
  const repeats = session.repeats ?? SOUND.repeats;
  const exact = (periodMs * sampleRate) / 1000;
  const P = Math.round(exact);
  const folded = new Float64Array(P);
  const n0 = ((firstSampleMs - session.startsAtMs) * sampleRate) / 1000;
  let from = Math.ceil(((session.startsAtMs - DETECT.foldLeadMs - firstSampleMs) * sampleRate) / 1000);
  from = Math.max(0, Math.min(from, samples.length - Math.round(repeats * exact)));
  // the phase (samples, fractional) of the window's first sample, and where it folds to
  const phase = mod(from + n0, exact);
  const first = Math.floor(phase);
  let remainders = 0;
  for (let r = 0; r < repeats; r++) {
    const start = from + Math.round(r * exact);
    const end = Math.min(samples.length, from + Math.round((r + 1) * exact));
    remainders += phase - first + (Math.round(r * exact) - r * exact);
    let j = mod(first, P);
    for (let i = start; i < end; i++) {
      folded[j] += samples[i];
      if (++j === P) j = 0;
    }
  }
  return { folded, frac: remainders / repeats, periodSamples: P };
}

// ---------------------------------------------------------------------------------------------
// Correlation and peaks.

/** The envelope of the circular correlation of the folded period with code `index`, sampled
 * every `decimation` lags (on the scale of `refine`'s amplitudes). */
function envelope(spectrum, index, geo, scratch, env) {
  const c = codeSpectrum(index, geo);
  const { re, im } = scratch;
  for (let j = 0; j < geo.count; j++) {
    const xr = spectrum.re[j];
    const xi = spectrum.im[j];
    re[j] = xr * c.re[j] - xi * c.im[j];
    im[j] = xr * c.im[j] + xi * c.re[j];
  }
  fft(re, im, true);
  const scale = 2 / geo.n;
  for (let m = 0; m < env.length; m++) env[m] = scale * Math.sqrt(re[m] * re[m] + im[m] * im[m]);
  return env;
}

/** The median of `values` (a copy is sorted). */
function median(values) {
  const s = Float32Array.from(values).sort();
  return s.length ? s[s.length >> 1] : 0;
}

/** A Rayleigh envelope's RMS from its median: median = RMS·√(ln 2). */
const RMS_PER_MEDIAN = 1 / Math.sqrt(Math.LN2);

/** The noise RMS of a whole envelope, from the median of every eighth value (~7000). */
function globalFloor(env) {
  const picks = new Float32Array(Math.ceil(env.length / 8));
  for (let i = 0, j = 0; i < env.length; i += 8) picks[j++] = env[i];
  return median(picks) * RMS_PER_MEDIAN;
}

/**
 * The RMS of the envelope beside decimated index `m`: the median of each side's neighbourhood
 * past the peak's main lobe, the louder side's. A true peak stands out of both sides; a crest
 * of the smear a louder beacon's chirp leaves in another code (a plateau ~30–50 ms wide, not a
 * peak) does not stand out of the side that lies on the plateau, even at the plateau's edge.
 */
function localFloor(env, m, geo) {
  const perMs = geo.sampleRate / 1000 / geo.decimation;
  const outer = Math.round(DETECT.localFloorMs * perMs);
  const inner = Math.max(1, Math.round(DETECT.localGapMs * perMs));
  const side = new Float32Array(outer - inner + 1);
  let loudest = 0;
  for (const dir of [-1, 1]) {
    for (let d = inner, j = 0; d <= outer; d++) side[j++] = env[mod(m + dir * d, env.length)];
    loudest = Math.max(loudest, median(side));
  }
  return loudest * RMS_PER_MEDIAN;
}

/**
 * The analytic correlation's envelope near full-rate lag `lag`, computed directly, its
 * maximum found between samples by a parabola through the three highest-around values.
 * @returns {{lag: number, amp: number}} lag in (fractional) samples of the folded period
 */
function refine(folded, index, geo, lag) {
  const a = analyticCode(index, geo);
  const P = folded.length;
  const reach = geo.decimation + 3;
  const lags = 2 * reach + 1;
  const seg = new Float64Array(a.len + lags);
  const start = lag - reach - ANALYTIC_PAD;
  for (let t = 0; t < seg.length; t++) seg[t] = folded[mod(start + t, P)];
  const env = new Float64Array(lags);
  let best = 0;
  for (let i = 0; i < lags; i++) {
    let sr = 0;
    let si = 0;
    for (let t = 0; t < a.len; t++) {
      const x = seg[i + t];
      sr += x * a.re[t];
      si += x * a.im[t];
    }
    env[i] = Math.hypot(sr, si);
    if (env[i] > env[best]) best = i;
  }
  let offset = 0;
  let amp = env[best];
  if (best > 0 && best < lags - 1) {
    const y0 = env[best - 1];
    const y1 = env[best];
    const y2 = env[best + 1];
    const denom = y0 - 2 * y1 + y2;
    if (denom < 0) {
      offset = (0.5 * (y0 - y2)) / denom;
      amp = y1 - 0.25 * (y0 - y2) * offset;
    }
  }
  return { lag: lag - reach + best + offset, amp };
}

/** Local maxima of `env` of at least `min` at decimated indexes `from`..`from+span`
 * (circular), loudest first. */
function peaksIn(env, from, span, min, limit) {
  const L = env.length;
  const found = [];
  const start = mod(from, L);
  for (let s = 0; s < span; s++) {
    let m = start + s;
    if (m >= L) m -= L;
    const v = env[m];
    if (v < min) continue;
    if (v >= env[m === 0 ? L - 1 : m - 1] && v > env[m === L - 1 ? 0 : m + 1]) found.push(m);
  }
  found.sort((p, q) => env[q] - env[p]);
  return found.slice(0, limit);
}

/** The most a decimated envelope sample can lie under its peak (the main lobe is ~3 decimated
 * samples wide), with a margin. */
const DECIMATION_LOSS = 1.4;

/**
 * One code's arrival in the decimated window `from`..`from+span`: the loudest peak that stands
 * out of both floors, then the earliest one at most `directBeforeMs` before it and at least
 * `directShare` of it that does too. Null when none stands out.
 */
function arrivalIn(corr, folded, geo, from, span) {
  const { env, index, floor } = corr;
  const perMs = geo.sampleRate / 1000;
  const minAmp = 10 ** (DETECT.minSnrDb / 20);
  const stands = (m) => {
    const under = Math.max(floor, localFloor(env, m, geo));
    // a decimated sample may lie up to ~2 dB under the peak between samples: refine only
    // what might stand out
    if (env[m] * DECIMATION_LOSS < minAmp * under) return null;
    const peak = refine(folded, index, geo, m * geo.decimation);
    const snr = peak.amp / under;
    return snr >= minAmp ? { ...peak, m, snr } : null;
  };
  let loudest = null;
  for (const m of peaksIn(env, from, span, minAmp * floor, DETECT.candidates)) {
    loudest = stands(m);
    if (loudest) break;
  }
  if (!loudest) return null;
  const before = Math.round((DETECT.directBeforeMs * perMs) / geo.decimation);
  const gap = Math.ceil((DETECT.localGapMs * perMs) / geo.decimation);
  // peaks a little under the share may be sampled low by the decimation: refined before judged
  const earlier = peaksIn(env, loudest.m - before, before - gap, 0.7 * DETECT.directShare * env[loudest.m], DETECT.candidates)
    .sort((p, q) => mod(p - loudest.m + before, env.length) - mod(q - loudest.m + before, env.length));
  for (const m of earlier) {
    const p = stands(m);
    if (p && p.amp >= DETECT.directShare * loudest.amp) return p;
  }
  return loudest;
}

/**
 * Computes what detections at `sampleRate` for `session` cache (FFT plans, the codes' spectra,
 * buffers), so the first detection takes no longer than the next: the phone can call it when
 * a session is announced.
 */
export function warm(sampleRate, session) {
  const geo = layout(sampleRate, session.periodMs ?? SOUND.periodMs);
  workspace(geo);
  planFor(geo.count);
  for (const index of session.beacons) {
    codeSpectrum(index, geo);
    analyticCode(index, geo);
  }
}

const workspaces = new Map();

/** Buffers for detections of one layout, reused: a phone detects session after session, and a
 * few megabytes allocated each time are what the garbage collector then spends its time on. */
function workspace(geo) {
  const key = `${geo.codeRate}/${geo.n}/${geo.periodSamples}/${geo.count}`;
  let ws = workspaces.get(key);
  if (!ws) {
    const envs = [];
    const valid = Math.ceil(geo.periodSamples / geo.decimation);
    ws = {
      ext: new Float64Array(Math.min(geo.n, geo.periodSamples + Math.ceil((LONGEST_CHIRP_MS * geo.sampleRate) / 1000) + 1)),
      half: { re: new Float64Array(geo.n / 2), im: new Float64Array(geo.n / 2) },
      spectrum: { re: new Float64Array(geo.count), im: new Float64Array(geo.count) },
      scratch: { re: new Float64Array(geo.count), im: new Float64Array(geo.count) },
      env: (i) => (envs[i] ??= new Float32Array(valid)),
    };
    workspaces.set(key, ws);
  }
  return ws;
}

/** Delays (ms, each in [0, period)) moved by whole periods to lie within half a period of
 * their circular mean. */
export function unwrap(delays, periodMs) {
  if (!delays.length) return [];
  let s = 0;
  let c = 0;
  for (const d of delays) {
    s += Math.sin((2 * Math.PI * d) / periodMs);
    c += Math.cos((2 * Math.PI * d) / periodMs);
  }
  const mean = mod((Math.atan2(s, c) / (2 * Math.PI)) * periodMs, periodMs);
  return delays.map((d) => mean + mod(d - mean + periodMs / 2, periodMs) - periodMs / 2);
}

/**
 * Each beacon's arrival delay in a phone's recording.
 *
 * @param {Float32Array} samples mono
 * @param {number} sampleRate Hz
 * @param {object} o
 * @param {number} o.firstSampleMs server time of samples[0], as the phone believes
 * @param {{startsAtMs: number, periodMs: number, slotMs: number, repeats: number, beacons: number[]}} o.session
 * @returns {{arrivals: {beacon: number, delayMs: number, snr: number}[], tookMs: number}}
 *   `delayMs`: arrival (server ms by the phone's clock) − the beacon's emission, repeats
 *   folded, so known up to a whole period, and all of them unwrapped to within half a period
 *   of their circular mean; only their differences are the phone's position. `snr`: dB of the
 *   direct path's correlation peak over its noise floor; beacons under `DETECT.minSnrDb` are
 *   left out.
 */
export function detect(samples, sampleRate, { firstSampleMs, session }) {
  const started = performance.now();
  const periodMs = session.periodMs ?? SOUND.periodMs;
  const slotMs = session.slotMs ?? SOUND.slotMs;
  const geo = layout(sampleRate, periodMs);
  const { folded, frac } = fold(samples, sampleRate, { firstSampleMs, session });

  const ws = workspace(geo);
  // a period and then its start again: the correlation's lags over one period are circular
  for (let i = 0; i < ws.ext.length; i++) ws.ext[i] = folded[i % geo.periodSamples];
  const spectrum = realSpectrum(ws.ext, geo.n, geo.k0, geo.count, ws.half, ws.spectrum);

  const beacons = [...new Set(session.beacons)];
  const corrs = beacons.map((index, i) => {
    const env = envelope(spectrum, index, geo, ws.scratch, ws.env(i));
    return { index, env, floor: globalFloor(env) };
  });

  const msOfLag = (lag) => ((lag + frac) * 1000) / sampleRate;
  const delayOf = (corr, lag) => mod(msOfLag(lag) - corr.index * slotMs, periodMs);

  // the anchor: the beacon that stands out most anywhere in the period
  let anchor = null;
  for (const corr of corrs) {
    const a = arrivalIn(corr, folded, geo, 0, corr.env.length);
    if (a && (!anchor || a.snr > anchor.arrival.snr)) anchor = { corr, arrival: a };
  }
  const found = [];
  if (anchor) {
    const anchorDelay = delayOf(anchor.corr, anchor.arrival.lag);
    const perDecimated = sampleRate / 1000 / geo.decimation;
    for (const corr of corrs) {
      let a = anchor.arrival;
      if (corr !== anchor.corr) {
        const centreMs = mod(anchorDelay + corr.index * slotMs, periodMs);
        const from = Math.round((centreMs - DETECT.maxSpreadMs) * perDecimated);
        a = arrivalIn(corr, folded, geo, from, Math.round(2 * DETECT.maxSpreadMs * perDecimated));
      }
      if (a) found.push({ beacon: corr.index, delayMs: delayOf(corr, a.lag), snr: 20 * Math.log10(a.snr) });
    }
  }
  const delays = unwrap(found.map((f) => f.delayMs), periodMs);
  const arrivals = found.map((f, i) => ({ ...f, delayMs: delays[i] })).sort((p, q) => p.beacon - q.beacon);
  return { arrivals, tookMs: performance.now() - started };
}

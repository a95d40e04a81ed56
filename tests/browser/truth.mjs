// The truth the clock-sync bench measures against: this machine's system clock, which is the
// C3S server's (server time is the system clock read once at its start, carried on by the
// monotonic clock, src/clock.rs) and timesync's server's (Date.now()).

/**
 * System clock − (performance.timeOrigin + performance.now()), ms, to a microsecond or so:
 * read at the instants Date.now() ticks over to the next millisecond (busy-waits ~20 ms).
 */
export function calibrate(ticks = 20) {
  let best = -Infinity;
  for (let k = 0; k < ticks; k++) {
    const d0 = Date.now();
    let d;
    let p;
    do {
      d = Date.now();
      p = performance.now();
    } while (d === d0);
    // the clock turned to `d` just before `p` was read: this is a lower bound, and the
    // closest of them is the truth
    best = Math.max(best, d - (performance.timeOrigin + p));
  }
  return best;
}

/** This process's monotonic clock on the Unix epoch's scale, ms. */
export const base = () => performance.timeOrigin + performance.now();

/** A deliberately wrong clock: `shiftMs` off and running `skew` fast (100e-6 = 100 ppm). */
export function wrongClock(shiftMs, skew, start = base()) {
  return () => {
    const b = base();
    return b + shiftMs + skew * (b - start);
  };
}

/** A seeded uniform random number in [0, 1) (mulberry32). */
export function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** The nearest-rank percentile `q` (0..1) of `values`. */
export function percentile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

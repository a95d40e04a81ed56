// The truth the clock measurements are made against (the clock-sync bench, the crowd test and
// bench): this machine's system clock, which is the C3S server's (server time is the system
// clock read once at its start, carried on by the monotonic clock, src/clock.rs) and timesync's
// server's (Date.now()).

/**
 * System clock − (performance.timeOrigin + `readNow()`), ms, to a microsecond or so (or to the
 * browser's coarsening of its clock): read at the instants Date.now() ticks over to the next
 * millisecond (busy-waits ~20 ms). Self-contained, so a page can run its source
 * (pageClockTruth in harness.mjs).
 */
export function systemClockOffset(readNow = () => performance.now(), ticks = 20) {
  let best = -Infinity;
  for (let k = 0; k < ticks; k++) {
    const d0 = Date.now();
    let d;
    let p;
    do {
      d = Date.now();
      p = readNow();
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

/** The nearest-rank percentile `q` (0..1) of `values`; null when there are none. */
export function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
}

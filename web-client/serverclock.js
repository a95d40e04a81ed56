// The server's clock as the operator's and observer's pages see it: for the operator's
// preview (which frame shows now) and Play button (is the show playing now), and for the
// observer's flash sessions (the countdown, and recording the camera from the instant the
// session says to film). Measured against `GET /api/clock`: a few round trips at the start
// and a couple every minute; of the samples of the last five minutes the one with the
// shortest round trip wins, its offset being the least blurred by the network. (The phones
// sync far more finely over their socket, clock.js; a few milliseconds are plenty here: a
// session is filmed with half a second to spare on each side.)

const BURST_AT_START = 4;
const BURST_EVERY_MINUTE = 2;
const MEASURE_EVERY_MS = 60000;
/** Older samples are dropped: both clocks drift, up to some 50 µs a second. */
const SAMPLE_MAX_AGE_MS = 5 * 60000;

const localNow = () => performance.timeOrigin + performance.now();

export class ServerClock {
  constructor() {
    this.samples = []; // [{at, offset, rtt}] in local ms
    /** Server clock − local clock, ms (0 until measured). */
    this.offset = 0;
    /** Half the winning round trip: the offset is within this, ms. */
    this.error = null;
    this.timer = null;
    this.running = false;
    this.onVisible = () => {
      if (document.hidden || !this.running) return;
      // some platforms stop the monotonic clock while the device sleeps: measure afresh
      this.samples = [];
      this.measure(BURST_AT_START);
    };
  }

  get measured() {
    return this.samples.length > 0;
  }

  now() {
    return localNow() + this.offset;
  }

  start() {
    if (this.running) return;
    this.running = true;
    document.addEventListener('visibilitychange', this.onVisible);
    this.measure(BURST_AT_START);
    this.timer = setInterval(() => this.measure(BURST_EVERY_MINUTE), MEASURE_EVERY_MS);
  }

  stop() {
    this.running = false;
    clearInterval(this.timer);
    document.removeEventListener('visibilitychange', this.onVisible);
  }

  async measure(n) {
    for (let i = 0; i < n && this.running; i++) {
      try {
        const t0 = localNow();
        const res = await fetch('/api/clock', { cache: 'no-store', signal: AbortSignal.timeout(5000) });
        const t1 = localNow();
        if (!res.ok) continue;
        const { server_time_us: us } = await res.json();
        if (typeof us === 'number') this.add({ at: t1, offset: us / 1000 - (t0 + t1) / 2, rtt: t1 - t0 });
      } catch {
        // a lost round trip: the next one, or the next minute's, will do
      }
    }
  }

  add(sample) {
    this.samples.push(sample);
    this.samples = this.samples.filter((s) => sample.at - s.at <= SAMPLE_MAX_AGE_MS);
    const best = this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offset = best.offset;
    this.error = best.rtt / 2;
  }
}

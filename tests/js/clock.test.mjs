// Tests of web-client/clock.js against a simulated network whose truth is known:
// run with `node --test tests/js/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClockSync, sample } from '../../web-client/clock.js';

/** A little discrete-event world: true time T in ms, a server clock, a skewed phone clock. */
function world({ offset = 1234.5, skew = 0, up = () => 10, down = () => 10 } = {}) {
  let T = 0;
  const events = [];
  const at = (t, fn) => { events.push({ t, fn }); events.sort((a, b) => a.t - b.t); };
  const phoneNow = () => T * (1 + skew) + offset * -1; // server − phone = offset at T = 0
  const w = {
    get T() { return T; },
    phoneNow,
    trueOffset: () => T - phoneNow(),
    setTimer: (fn, ms) => { const e = { t: T + ms / (1 + skew), fn }; at(e.t, fn); return e; },
    clearTimer: (e) => { const i = events.findIndex((x) => x.fn === e.fn && x.t === e.t); if (i >= 0) events.splice(i, 1); },
    sent: [],
    clock: null,
    send: (msg) => {
      w.sent.push(msg);
      if (msg.type !== 'sync') return;
      const t1 = T + up();
      const t2 = t1 + 0.05;
      at(t1, () => {});
      at(t2 + down(), () => w.clock.handleReply({ type: 'sync', t0: msg.t0, t1: t1 * 1000, t2: t2 * 1000 }));
    },
    run: (until) => {
      while (events.length && events[0].t <= until) { const e = events.shift(); T = e.t; e.fn(); }
      T = until;
    },
  };
  return w;
}

function clockIn(w, opts = {}) {
  w.clock = new ClockSync({ send: w.send, now: w.phoneNow, setTimer: w.setTimer, clearTimer: w.clearTimer, visibility: null, ...opts });
  return w.clock;
}

test('one exchange: offset and delay', () => {
  const s = sample(100, 1_300_000, 1_300_500, 210);
  assert.equal(s.offset, ((1300 - 100) + (1300.5 - 210)) / 2);
  assert.equal(s.delay, 110 - 0.5);
});

test('symmetric jittery network: the estimate is within its bound and well under 2 ms', () => {
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const w = world({ up: () => 5 + rand() * 40, down: () => 5 + rand() * 40 });
  const c = clockIn(w);
  c.start();
  w.run(2000);
  const err = Math.abs(c.offsetAt() - w.trueOffset());
  assert.ok(err <= c.errorAt(), `error ${err} above bound ${c.errorAt()}`);
  assert.ok(err < 2, `error ${err} ms`);
  const report = w.sent.find((m) => m.type === 'sync_report');
  assert.ok(report && Number.isFinite(report.offset_ms) && report.error_ms > 0);
});

test('asymmetric legs bias the estimate, but never past the bound', () => {
  const w = world({ up: () => 80, down: () => 10 });
  const c = clockIn(w);
  c.start();
  w.run(2000);
  const err = c.offsetAt() - w.trueOffset();
  assert.ok(Math.abs(Math.abs(err) - 35) < 0.1, `bias ${err} is half the asymmetry`);
  assert.ok(Math.abs(err) <= c.errorAt());
});

test('drift is tracked across re-syncs', () => {
  const w = world({ skew: 200e-6 }); // a phone clock 200 ppm fast
  const c = clockIn(w, { resyncMs: 10000 });
  c.start();
  w.run(120000);
  const predicted = c.offsetAt(w.phoneNow() + 5000 * (1 + 200e-6));
  const truth = (w.T + 5000) - (w.phoneNow() + 5000 * (1 + 200e-6));
  assert.ok(Math.abs(c.drift + 200e-6) < 20e-6, `drift ${c.drift}`);
  assert.ok(Math.abs(predicted - truth) < 0.5, `5 s ahead: off by ${predicted - truth} ms`);
  assert.ok(w.sent.filter((m) => m.type === 'sync').length >= 8 * 12, 'it re-synced periodically');
});

test('becoming visible re-syncs at once; stop() ends all timers', () => {
  const w = world();
  const target = new EventTarget();
  target.visibilityState = 'visible';
  const c = clockIn(w, { visibility: target, resyncMs: 60000 });
  c.start();
  w.run(3000);
  const before = w.sent.filter((m) => m.type === 'sync').length;
  target.dispatchEvent(new Event('visibilitychange'));
  w.run(4000);
  assert.equal(w.sent.filter((m) => m.type === 'sync').length, before + 8);
  c.stop();
  const after = w.sent.length;
  w.run(200000);
  assert.equal(w.sent.length, after);
});

test('server instants map to local ones', () => {
  const w = world({ offset: 500 });
  const c = clockIn(w);
  c.start();
  w.run(1000);
  assert.ok(Math.abs(c.toLocal(w.T + 100) - (w.phoneNow() + 100)) < 0.5);
  assert.ok(Math.abs(c.serverNow() - w.T) < 0.5);
});

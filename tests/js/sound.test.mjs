// Tests of locating phones by sound (web-client/sound/): the codes, the detector and the beacon
// page's scheduling, on synthetic recordings whose truth is known (benches/sound/synth.mjs).
// Run with `node --test tests/js/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SOUND, CODES, chirp, chirpLength, emissionsMs, recordingWindowMs, makeSession } from '../../web-client/sound/codes.js';
import { detect, fft, realSpectrum, unwrap, DETECT } from '../../web-client/sound/detect.js';
import { plan, MIN_LEAD_MS } from '../../web-client/sound/beacon-plan.js';
import { crowdNoise, loopedWav, paths, random, gaussian, recording } from '../../benches/sound/synth.mjs';
import { solveLine } from './sound-standin-solver.mjs';

const FS = 48000;
/** The bench's scene: 100 m × 60 m, beacons 2 m outside its corners and long sides' middles. */
const BEACONS = [[-2, -2], [102, -2], [102, 62], [-2, 62], [50, -2], [50, 62]].map(([x, y], index) => ({ index, x, y }));
const SESSION = makeSession({ startsAtMs: 5_000_000, beacons: BEACONS.map((b) => b.index) });
const FIRST_MS = recordingWindowMs(SESSION).fromMs;

const beds = new Map();
/** Unit-power crowd noise shared by the tests (fresh noise per recording is slow to make). */
function bed(sampleRate) {
  if (!beds.has(sampleRate)) beds.set(sampleRate, crowdNoise(18 * sampleRate, sampleRate, random(99)));
  return beds.get(sampleRate);
}

/** A phone somewhere in the scene, with its latency and the beacons' clock errors. */
function phoneAt(seed, beacons = BEACONS) {
  const r = random(seed);
  return {
    phone: { x: 100 * r(), y: 60 * r() },
    micLatencyMs: 5 + 55 * r(),
    beaconClockErrMs: beacons.map(() => 0.5 * gaussian(r)),
    seed,
  };
}

/** Each beacon's true delay, ms. */
function truth(t, beacons = BEACONS) {
  return new Map(paths({ ...t, beacons, reverb: false }).map((p) => [p.index, p.delayMs]));
}

/** The worst |detected − true| delay, ms, and how many beacons were found. */
function worstError(arrivals, expected) {
  let worst = 0;
  for (const a of arrivals) worst = Math.max(worst, Math.abs(a.delayMs - expected.get(a.beacon)));
  return worst;
}

/** The envelope of the full correlation of a with b (analytic, via FFT), and its largest value. */
function correlationPeak(a, b, skipAroundZero = 0) {
  const n = 2 ** Math.ceil(Math.log2(a.length + b.length));
  const A = realSpectrum(a, n);
  const B = realSpectrum(b, n);
  const re = new Float64Array(n);
  const im = new Float64Array(n);
  for (let k = 1; k < n / 2; k++) {
    re[k] = 2 * (A.re[k] * B.re[k] + A.im[k] * B.im[k]);
    im[k] = 2 * (A.im[k] * B.re[k] - A.re[k] * B.im[k]);
  }
  fft(re, im, true);
  let peak = 0;
  for (let i = 0; i < n; i++) {
    const lag = i < n / 2 ? i : i - n;
    if (Math.abs(lag) < skipAroundZero) continue;
    peak = Math.max(peak, Math.hypot(re[i], im[i]) / n);
  }
  return peak;
}

test('the FFT agrees with the DFT, and the packed real transform with the complex one', () => {
  const r = random(1);
  const n = 64;
  const re = Float64Array.from({ length: n }, r);
  const im = Float64Array.from({ length: n }, r);
  const x = { re: re.slice(), im: im.slice() };
  fft(re, im);
  for (let k = 0; k < n; k++) {
    let sr = 0;
    let si = 0;
    for (let j = 0; j < n; j++) {
      const a = (-2 * Math.PI * j * k) / n;
      sr += x.re[j] * Math.cos(a) - x.im[j] * Math.sin(a);
      si += x.re[j] * Math.sin(a) + x.im[j] * Math.cos(a);
    }
    assert.ok(Math.abs(sr - re[k]) < 1e-9 && Math.abs(si - im[k]) < 1e-9, `bin ${k}`);
  }
  fft(re, im, true);
  for (let j = 0; j < n; j++) assert.ok(Math.abs(re[j] / n - x.re[j]) < 1e-12);
  const real = Float64Array.from({ length: 100 }, r);
  const packed = realSpectrum(real, 256, 10, 50);
  const fr = new Float64Array(256);
  const fi = new Float64Array(256);
  fr.set(real);
  fft(fr, fi);
  for (let j = 0; j < 50; j++) assert.ok(Math.abs(packed.re[j] - fr[10 + j]) < 1e-9 && Math.abs(packed.im[j] - fi[10 + j]) < 1e-9);
});

test('the schedule: emission instants and the recording window', () => {
  const s = makeSession({ startsAtMs: 1000, beacons: [0, 3] });
  assert.equal(SOUND.periodMs, 4800);
  assert.deepEqual(emissionsMs(s, 3), [1000 + 1800, 1000 + 1800 + 4800, 1000 + 1800 + 9600]);
  assert.deepEqual(emissionsMs({ ...s, repeats: 1 }, 0), [1000]);
  assert.deepEqual(recordingWindowMs(s), { fromMs: 800, untilMs: 1000 + 3 * 4800 + 700 });
  // the slowest arrival the venue allows, with the longest code and its echoes, ends inside its slot
  assert.ok(350 + Math.max(...CODES.map((c) => c.durationMs)) + 80 < SOUND.slotMs);
});

test('eight distinct codes: amplitude 1, tapered ends, sharp peaks and low cross-correlation', (t) => {
  const codes = CODES.map(({ index }) => chirp(index, FS));
  const own = codes.map((c) => correlationPeak(c, c));
  let worstCross = 0;
  let worstSidelobe = 0;
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    const peak = Math.max(...c.map(Math.abs));
    assert.ok(peak > 0.999 && peak <= 1, `code ${i} peak ${peak}`);
    assert.equal(c.length, chirpLength(i, FS));
    assert.ok(Math.abs(c[0]) < 1e-3 && Math.abs(c[c.length - 1]) < 0.01, `code ${i} starts or ends with a click`);
    worstSidelobe = Math.max(worstSidelobe, correlationPeak(c, c, FS / 1000) / own[i]);
    for (let j = 0; j < codes.length; j++) {
      if (j !== i) worstCross = Math.max(worstCross, correlationPeak(c, codes[j]) / Math.sqrt(own[i] * own[j]));
    }
  }
  const crossDb = -20 * Math.log10(worstCross);
  const sidelobeDb = -20 * Math.log10(worstSidelobe);
  t.diagnostic(`peak over worst cross-correlation ${crossDb.toFixed(1)} dB; over worst own sidelobe past 1 ms ${sidelobeDb.toFixed(1)} dB`);
  assert.ok(crossDb > 20, `codes correlate at −${crossDb} dB`);
  assert.ok(sidelobeDb > 28, `own sidelobes at −${sidelobeDb} dB`);
});

test('clean recordings: every beacon within 0.05 ms, at 48 and 44.1 kHz', (t) => {
  for (const sampleRate of [48000, 44100]) {
    const times = [];
    for (let seed = 1; seed <= 4; seed++) {
      const p = phoneAt(seed);
      const x = recording({ sampleRate, beacons: BEACONS, session: SESSION, firstSampleMs: FIRST_MS, reverb: false, ...p });
      const { arrivals, tookMs } = detect(x, sampleRate, { firstSampleMs: FIRST_MS, session: SESSION });
      times.push(tookMs);
      assert.deepEqual(arrivals.map((a) => a.beacon), [0, 1, 2, 3, 4, 5], `${sampleRate} Hz, phone ${seed}`);
      const worst = worstError(arrivals, truth(p));
      assert.ok(worst < 0.05, `${sampleRate} Hz, phone ${seed}: off by ${worst} ms`);
    }
    t.diagnostic(`${sampleRate} Hz: detection ${times.map((v) => v.toFixed(0)).join(', ')} ms (the first fills the caches)`);
  }
});

test('0 dB SNR in crowd noise with echoes: every beacon within 0.3 ms, at 48 and 44.1 kHz', (t) => {
  for (const sampleRate of [48000, 44100]) {
    let worstAll = 0;
    let found = 0;
    const phones = 8;
    for (let seed = 11; seed < 11 + phones; seed++) {
      const p = phoneAt(seed);
      const x = recording({ sampleRate, beacons: BEACONS, session: SESSION, firstSampleMs: FIRST_MS, reverb: true, snrDb: 0, noiseBed: bed(sampleRate), ...p });
      const { arrivals } = detect(x, sampleRate, { firstSampleMs: FIRST_MS, session: SESSION });
      found += arrivals.length;
      worstAll = Math.max(worstAll, worstError(arrivals, truth(p)));
      assert.ok(arrivals.every((a) => a.snr >= DETECT.minSnrDb));
    }
    t.diagnostic(`${sampleRate} Hz: ${found} of ${6 * phones} arrivals, worst error ${(worstAll * 1000).toFixed(1)} µs`);
    assert.ok(worstAll < 0.3, `off by ${worstAll} ms`);
    assert.ok(found >= 6 * phones - 2, `only ${found} of ${6 * phones} arrivals found`);
  }
});

test('a microphone 80 ppm off its nominal rate, told its measured rate: within 0.05 ms', () => {
  for (const ppm of [80, -80]) {
    const sampleRate = 48000 * (1 + ppm * 1e-6);
    const p = phoneAt(51);
    const firstSampleMs = FIRST_MS + 0.37;
    const x = recording({ sampleRate, beacons: BEACONS, session: SESSION, firstSampleMs, reverb: true, snrDb: 0, noiseBed: bed(48000), ...p });
    const { arrivals } = detect(x, sampleRate, { firstSampleMs, session: SESSION });
    assert.equal(arrivals.length, 6);
    const worst = worstError(arrivals, truth(p));
    assert.ok(worst < 0.05, `${ppm} ppm: off by ${worst} ms`);
  }
});

/** Adds code `index` at `amp` with its first sample at (fractional) sample `at`. */
function place(out, index, at, amp, sampleRate = FS) {
  const whole = Math.floor(at);
  const c = chirp(index, sampleRate, (at - whole) / sampleRate);
  for (let i = 0; i < c.length; i++) if (whole + i < out.length) out[whole + i] += amp * c[i];
}

/** A recording built by hand: each of `events` ({index, delayMs, amp}) at every repeat. */
function handMade(events, { snrDb = Infinity, seed = 5, sampleRate = FS } = {}) {
  const w = recordingWindowMs(SESSION);
  const out = new Float32Array(Math.round(((w.untilMs - w.fromMs) * sampleRate) / 1000));
  if (Number.isFinite(snrDb)) {
    const noise = bed(sampleRate);
    const from = Math.floor(random(seed)() * (noise.length - out.length));
    const rms = Math.sqrt(0.45 / 10 ** (snrDb / 10));
    for (let i = 0; i < out.length; i++) out[i] = rms * noise[from + i];
  }
  for (const e of events) {
    for (const ms of emissionsMs(SESSION, e.index)) place(out, e.index, ((ms + e.delayMs - w.fromMs) * sampleRate) / 1000, e.amp, sampleRate);
  }
  return out;
}

test('the direct path, not an echo that arrives louder', () => {
  // beacon 2: the direct path at 0.6, an echo 30 ms later at 1.0 (the direct path partly
  // blocked); beacon 4: its echo 60 ms later at 0.4, well under the direct one
  const events = [
    { index: 0, delayMs: 140.25, amp: 1 },
    { index: 2, delayMs: 100.4, amp: 0.6 },
    { index: 2, delayMs: 130.4, amp: 1.0 },
    { index: 4, delayMs: 210.7, amp: 0.5 },
    { index: 4, delayMs: 270.7, amp: 0.2 },
  ];
  const session = { ...SESSION, beacons: [0, 2, 4] };
  for (const snrDb of [Infinity, 0]) {
    const { arrivals } = detect(handMade(events, { snrDb }), FS, { firstSampleMs: FIRST_MS, session });
    const by = new Map(arrivals.map((a) => [a.beacon, a.delayMs]));
    assert.ok(Math.abs(by.get(2) - 100.4) < 0.01, `SNR ${snrDb}: beacon 2 at ${by.get(2)} ms, its direct path at 100.4`);
    assert.ok(Math.abs(by.get(4) - 210.7) < 0.01, `SNR ${snrDb}: beacon 4 at ${by.get(4)} ms`);
    assert.ok(Math.abs(by.get(0) - 140.25) < 0.01);
  }
  // an echo more than twice as loud as the direct path is taken for it: the documented limit
  const { arrivals } = detect(handMade([{ index: 2, delayMs: 100, amp: 0.3 }, { index: 2, delayMs: 130, amp: 1 }]), FS, {
    firstSampleMs: FIRST_MS, session: { ...SESSION, beacons: [2] },
  });
  assert.ok(Math.abs(arrivals[0].delayMs - 130) < 0.01);
});

test('a looped one-period capture started at an unknown phase: the delays\' differences are right', (t) => {
  const P = Math.round((SOUND.periodMs * FS) / 1000);
  for (const [seed, snrDb] of [[21, Infinity], [22, 10], [23, 0]]) {
    const p = phoneAt(seed);
    const { samples } = loopedWav({ sampleRate: FS, beacons: BEACONS, reverb: true, snrDb, noiseBed: bed(FS), ...p });
    // the fake microphone loops the file; the page starts capturing at a phase nobody knows
    const phase = Math.floor(random(seed + 1000)() * P);
    const w = recordingWindowMs(SESSION);
    const capture = new Float32Array(Math.round(((w.untilMs - w.fromMs) * FS) / 1000));
    for (let i = 0; i < capture.length; i++) capture[i] = samples[(phase + i) % P];
    const { arrivals } = detect(capture, FS, { firstSampleMs: FIRST_MS, session: SESSION });
    assert.equal(arrivals.length, 6, `SNR ${snrDb}`);
    const spread = Math.max(...arrivals.map((a) => a.delayMs)) - Math.min(...arrivals.map((a) => a.delayMs));
    assert.ok(spread < 500, `delays spread over ${spread} ms`);
    const expected = truth(p);
    const ref = arrivals[0];
    let worst = 0;
    for (const a of arrivals) {
      const d = (a.delayMs - ref.delayMs) - (expected.get(a.beacon) - expected.get(ref.beacon));
      worst = Math.max(worst, Math.abs(d));
    }
    t.diagnostic(`SNR ${snrDb} dB, phase ${phase}: differences off by at most ${(worst * 1000).toFixed(1)} µs`);
    assert.ok(worst < (Number.isFinite(snrDb) ? 0.3 : 0.05), `differences off by ${worst} ms`);
  }
});

test('a beacon that did not play is left out, even beside a loud one', () => {
  // the phone 3 m from beacon 5 (the loudest, smearing into every other code); beacons 4, 6
  // and 7 are in the session but silent
  const beacons = BEACONS.filter((b) => b.index !== 4);
  const session = { ...SESSION, beacons: [0, 1, 2, 3, 4, 5, 6, 7] };
  for (const snrDb of [Infinity, 20, 0]) {
    const p = { ...phoneAt(31, beacons), phone: { x: 50, y: 59 } };
    const x = recording({ sampleRate: FS, beacons, session, firstSampleMs: FIRST_MS, reverb: true, snrDb, noiseBed: bed(FS), ...p });
    const { arrivals } = detect(x, FS, { firstSampleMs: FIRST_MS, session });
    const heard = arrivals.map((a) => a.beacon);
    for (const silent of [4, 6, 7]) assert.ok(!heard.includes(silent), `SNR ${snrDb}: silent beacon ${silent} reported (${JSON.stringify(arrivals)})`);
    assert.ok(heard.includes(5) && heard.includes(0), `SNR ${snrDb}: heard ${heard}`);
    assert.ok(worstError(arrivals, truth(p, beacons)) < 0.3);
  }
  // one beacon alone, loud and clean: the smear of its chirp through the seven other codes is
  // no arrival of theirs
  for (const index of [0, 3, 6]) {
    for (const snrDb of [Infinity, 20]) {
      const x = recording({ sampleRate: FS, beacons: [{ index, x: 0, y: 0 }], phone: { x: 4, y: 3 }, session, firstSampleMs: FIRST_MS, reverb: true, snrDb, noiseBed: bed(FS), seed: index });
      const { arrivals } = detect(x, FS, { firstSampleMs: FIRST_MS, session });
      assert.deepEqual(arrivals.map((a) => a.beacon), [index], `beacon ${index} alone at SNR ${snrDb}: ${JSON.stringify(arrivals)}`);
    }
  }
  // searched over the whole period (as every code is, for the anchor), a silent code meets
  // the loud beacon's smear: it must not stand out there either
  for (const [loud, silent] of [[0, 2], [1, 3], [4, 0]]) {
    for (const snrDb of [Infinity, 20]) {
      const x = recording({ sampleRate: FS, beacons: [{ index: loud, x: 0, y: 0 }], phone: { x: 4, y: 3 }, session, firstSampleMs: FIRST_MS, reverb: true, snrDb, noiseBed: bed(FS), seed: loud });
      const { arrivals } = detect(x, FS, { firstSampleMs: FIRST_MS, session: { ...SESSION, beacons: [silent] } });
      assert.deepEqual(arrivals, [], `code ${silent} found in beacon ${loud}'s chirps at SNR ${snrDb}`);
    }
  }
  // nothing at all: nothing reported
  const quiet = handMade([], { snrDb: 0 });
  assert.deepEqual(detect(quiet, FS, { firstSampleMs: FIRST_MS, session: SESSION }).arrivals, []);
});

test('delays across the period\'s end are unwrapped round their circular mean', () => {
  assert.deepEqual(unwrap([10, 4790, 200], 4800), [10, -10, 200]);
  assert.deepEqual(unwrap([4700, 50], 4800), [4700, 4850]);
  assert.deepEqual(unwrap([], 4800), []);
});

test('delays through the stand-in solver place a phone (the bench\'s helper works)', () => {
  const p = phoneAt(41);
  const x = recording({ sampleRate: FS, beacons: BEACONS, session: SESSION, firstSampleMs: FIRST_MS, reverb: true, snrDb: 0, noiseBed: bed(FS), ...p, beaconClockErrMs: [] });
  const { arrivals } = detect(x, FS, { firstSampleMs: FIRST_MS, session: SESSION });
  const answer = solveLine({ id: 1, beacons: BEACONS, speed_m_s: 343, arrivals: arrivals.map((a) => ({ beacon: a.beacon, delay_ms: a.delayMs })) });
  assert.ok(answer.placed);
  assert.ok(Math.hypot(answer.x - p.phone.x, answer.y - p.phone.y) < 0.05, JSON.stringify({ answer, truth: p.phone }));
  assert.equal(solveLine({ id: 2, beacons: BEACONS, speed_m_s: 343, arrivals: arrivals.slice(0, 2).map((a) => ({ beacon: a.beacon, delay_ms: a.delayMs })) }).placed, false);
});

/** When audio started at `contextTime` is heard, on the server's clock, by the model in
 * beacon-plan.js: performanceTime + (T − contextTime)·1000 + latency, then local, then server. */
function heardAtServer(o, contextTime, latencyMs) {
  const perf = o.audioNow.performanceTime + (contextTime - o.audioNow.contextTime) * 1000 + latencyMs;
  return perf + o.performanceTimeOrigin + o.serverMinusLocalMs;
}

test('the beacon page: each chirp leaves the speaker on time, for the latencies given', () => {
  const origin = 1_700_000_000_000.25;
  const base = {
    index: 3,
    serverMinusLocalMs: -1234.5,
    performanceTimeOrigin: origin,
    localNowMs: origin + 20_000,
    // the output timestamp read 5 ms ago: context time 12.5 s was leaving the speaker then
    audioNow: { contextTime: 12.5, performanceTime: 19_995 },
    outputLatencyS: 0.04,
    baseLatencyS: 0.01,
  };
  const serverNow = base.localNowMs + base.serverMinusLocalMs;
  const session = makeSession({ startsAtMs: serverNow + 1000, beacons: [0, 3] });
  const at = emissionsMs(session, 3);

  // the timestamp is the speaker's (the specification, Chromium, Gecko): no latency on top
  const a = plan({ ...base, session });
  assert.deepEqual(a.map((e) => e.serverMs), at);
  for (const e of a) assert.ok(Math.abs(heardAtServer(base, e.contextTime, 0) - e.serverMs) < 1e-6);
  // first emission 1000 + 1800 ms ahead of now; now is 5 ms past the stamp
  assert.ok(Math.abs(a[0].contextTime - (12.5 + 0.005 + 2.8)) < 1e-9, `${a[0].contextTime}`);

  // a render-position timestamp: outputLatency on top, so each start is 40 ms earlier
  const b = plan({ ...base, session, timestampAtSpeaker: false });
  for (let i = 0; i < b.length; i++) {
    assert.ok(Math.abs(a[i].contextTime - b[i].contextTime - 0.04) < 1e-9);
    assert.ok(Math.abs(heardAtServer(base, b[i].contextTime, 40) - b[i].serverMs) < 1e-6);
  }
  // no outputLatency reported (0 or missing): baseLatency stands in
  for (const outputLatencyS of [0, undefined]) {
    const c = plan({ ...base, session, outputLatencyS, timestampAtSpeaker: false });
    assert.ok(Math.abs(a[0].contextTime - c[0].contextTime - 0.01) < 1e-9);
  }
  // a device's measured extra delay
  const d = plan({ ...base, session, extraLatencyMs: 7 });
  assert.ok(Math.abs(a[0].contextTime - d[0].contextTime - 0.007) < 1e-9);
});

test('the beacon page skips emissions past or too close, and plans only within its horizon', () => {
  const origin = 1_000_000;
  const base = { index: 1, serverMinusLocalMs: 500, performanceTimeOrigin: origin, localNowMs: origin + 60_000, audioNow: { contextTime: 30, performanceTime: 60_000 }, outputLatencyS: 0.02, baseLatencyS: 0.005 };
  const serverNow = base.localNowMs + base.serverMinusLocalMs;
  // beacon 1's first emission 600 ms after the start: the start 590 ms ago, so 10 ms ahead
  const session = makeSession({ startsAtMs: serverNow - 590, beacons: [1] });
  const got = plan({ ...base, session });
  assert.deepEqual(got.map((e) => e.serverMs), emissionsMs(session, 1).slice(1));
  // 60 ms ahead of the speaker, but the audio thread already renders 20 ms ahead of it: too close
  const close = makeSession({ startsAtMs: serverNow - 600 + 60, beacons: [1] });
  assert.equal(plan({ ...base, session: close }).length, 2);
  assert.equal(plan({ ...base, session: close, outputLatencyS: 0.005, baseLatencyS: 0 }).length, 3);
  assert.ok(60 > MIN_LEAD_MS);
  // a session long over; a horizon of 5 s
  assert.deepEqual(plan({ ...base, session: makeSession({ startsAtMs: serverNow - 60_000, beacons: [1] }) }), []);
  assert.equal(plan({ ...base, session: makeSession({ startsAtMs: serverNow + 1000, beacons: [1] }), horizonMs: 5000 }).length, 1);
  // the context not running yet: its timestamp is zero
  assert.deepEqual(plan({ ...base, session, audioNow: { contextTime: 0, performanceTime: 0 } }), []);
});

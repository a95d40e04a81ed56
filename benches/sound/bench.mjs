// The sound-location bench (docs/sound.md, "Measured"): a 100 m × 60 m scene with 4 or 6
// beacons, SOUND_PHONES (1000) phones at random known places, each hearing its own synthetic
// recording (synth.mjs: microphone latency U[5, 60] ms, each beacon's clock off by N(0, 0.5 ms),
// echoes, crowd noise at 10, 0 and −10 dB SNR); web-client/sound/detect.js finds the arrivals
// (on one core per worker thread, timed there), and the server's solver places the phones:
// `c3s-ctl sound-solve` (C3S_CTL to use another: a path to an executable, or to a .mjs run by
// this Node), spawned once per configuration, every phone streamed through it. Each
// configuration prints a human line; the last line is JSON. Besides the errors it reports the
// detector's own delay errors against the truth, and the error the solver makes from the
// true delays (beacon clock errors alone): the floor no detector can go under.
//
// The SNR is the nearest beacon's chirp power over the noise's, over the whole band by default;
// the crowd noise has only ~9 % of its power in the chirps' 2–10 kHz, so SOUND_SNR_IN_BAND=1
// (counting only that part) is ~10 dB harder at the same figure.
//
// Options (environment): SOUND_PHONES (1000), SOUND_WORKERS (the cores), SOUND_CONFIGS (all:
// e.g. "6:0,4:10"), SOUND_SNR_IN_BAND (0), C3S_CTL (target/release/c3s-ctl).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSession } from '../../web-client/sound/codes.js';
import { detect } from '../../web-client/sound/detect.js';
import { crowdNoise, gaussian, paths, random, recording } from './synth.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const SAMPLE_RATE = 48000;
const SPEED_M_S = 343;
const SCENE = { widthM: 100, heightM: 60 };
/** Beacons 2 m outside the scene's edge: the four corners, then the middles of the long sides. */
const BEACONS = [[-2, -2], [102, -2], [102, 62], [-2, 62], [50, -2], [50, 62]].map(([x, y], index) => ({ index, x, y }));
const CLOCK_SIGMA_MS = 0.5;
const MIC_LATENCY_MS = [5, 60];
/** A stretch of crowd noise per worker, each phone's noise a random part of it (generating
 * 15 s of fresh noise per phone would cost more than detecting). */
const NOISE_BED_S = 40;
const SESSION_START_MS = 1_000_000;
/** Phones handed to a worker at a time. */
const CHUNK = 10;
const SNR_IN_BAND = process.env.SOUND_SNR_IN_BAND === '1';

/** One phone of a configuration: where it is and what its session's clocks do; the same phone
 * (place, latency, clock errors) at every SNR of a beacon count. */
function trial(beaconCount, id) {
  const r = random(1_000_003 * beaconCount + id);
  return {
    id,
    phone: { x: SCENE.widthM * r(), y: SCENE.heightM * r() },
    micLatencyMs: MIC_LATENCY_MS[0] + (MIC_LATENCY_MS[1] - MIC_LATENCY_MS[0]) * r(),
    beaconClockErrMs: Array.from({ length: beaconCount }, () => CLOCK_SIGMA_MS * gaussian(r)),
    seed: Math.floor(r() * 2 ** 31),
  };
}

function sessionFor(beacons) {
  return makeSession({ startsAtMs: SESSION_START_MS, beacons: beacons.map((b) => b.index) });
}

// ---------------------------------------------------------------------------------------------
// Worker: synthesise and detect, one phone at a time.

if (!isMainThread) {
  const bed = crowdNoise(NOISE_BED_S * SAMPLE_RATE, SAMPLE_RATE, random(7919 + workerData.worker));
  parentPort.on('message', ({ beacons, snrDb, ids }) => {
    const session = sessionFor(beacons);
    const firstSampleMs = session.startsAtMs - 200;
    const out = ids.map((id) => {
      const t = trial(beacons.length, id);
      const samples = recording({
        sampleRate: SAMPLE_RATE, beacons, session, firstSampleMs, snrDb, snrInBand: SNR_IN_BAND, reverb: true,
        speedOfSound: SPEED_M_S, noiseBed: bed, ...t,
      });
      const { arrivals, tookMs } = detect(samples, SAMPLE_RATE, { firstSampleMs, session });
      return { id, arrivals, tookMs };
    });
    parentPort.postMessage(out);
  });
}

// ---------------------------------------------------------------------------------------------
// Main: drive the workers and the solver.

function percentile(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

const round = (v, digits = 3) => (v === null ? null : Number(v.toFixed(digits)));

/** `c3s-ctl sound-solve`, or the C3S_CTL stand-in: `solve(line)` resolves with its answer. */
function startSolver() {
  const ctl = process.env.C3S_CTL ?? path.join(ROOT, 'target/release/c3s-ctl');
  if (!existsSync(ctl)) throw new Error(`${ctl} not found: cargo build --release --bin c3s-ctl, or set C3S_CTL`);
  const script = /\.[cm]?js$/.test(ctl);
  const proc = spawn(script ? process.execPath : ctl, script ? [ctl, 'sound-solve'] : ['sound-solve'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting = new Map();
  let failed = null;
  const fail = (err) => {
    failed = err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  createInterface({ input: proc.stdout }).on('line', (line) => {
    if (!line.trim()) return;
    const msg = JSON.parse(line);
    waiting.get(msg.id)?.resolve(msg);
    waiting.delete(msg.id);
  });
  proc.on('exit', (code) => fail(new Error(`the solver exited (${code}) with ${waiting.size} phones unanswered`)));
  proc.on('error', fail);
  return {
    solve(msg) {
      if (failed) return Promise.reject(failed);
      return new Promise((resolve, reject) => {
        waiting.set(msg.id, { resolve, reject });
        proc.stdin.write(`${JSON.stringify(msg)}\n`);
      });
    },
    async close() {
      proc.stdin.end();
      if (proc.exitCode === null) await new Promise((r) => proc.once('exit', r));
    },
  };
}

function lineFor(id, beacons, arrivals) {
  return {
    id,
    beacons: beacons.map(({ index, x, y }) => ({ index, x, y })),
    speed_m_s: SPEED_M_S,
    arrivals: arrivals.map((a) => ({ beacon: a.beacon, delay_ms: a.delayMs })),
  };
}

/** Every phone through the solver; their errors against the truth. */
async function solveAll(beacons, perPhone) {
  const solver = startSolver();
  try {
    const answers = await Promise.all(perPhone.map(({ id, arrivals }) => solver.solve(lineFor(id, beacons, arrivals))));
    const errors = [];
    let refused = 0;
    for (const a of answers) {
      if (!a.placed) {
        refused += 1;
        continue;
      }
      const { phone } = trial(beacons.length, a.id);
      errors.push(Math.hypot(a.x - phone.x, a.y - phone.y));
    }
    return { errors, refused };
  } finally {
    await solver.close();
  }
}

/** Runs the detector on every phone of a configuration, across the workers. */
function detectAll(workers, beacons, snrDb, phones) {
  return new Promise((resolve, reject) => {
    const results = [];
    let next = 0;
    let busy = 0;
    const feed = (w) => {
      if (next >= phones) {
        if (busy === 0) resolve(results.sort((a, b) => a.id - b.id));
        return;
      }
      const ids = [];
      for (; ids.length < CHUNK && next < phones; next++) ids.push(next);
      busy += 1;
      w.once('message', (out) => {
        busy -= 1;
        results.push(...out);
        feed(w);
      });
      w.postMessage({ beacons, snrDb, ids });
    };
    for (const w of workers) {
      w.once('error', reject);
      feed(w);
    }
  });
}

/** The detector's delay errors (ms) against the truth, and the arrivals it missed. */
function delayErrors(beacons, perPhone) {
  const errors = [];
  let missed = 0;
  for (const { id, arrivals } of perPhone) {
    const t = trial(beacons.length, id);
    const truth = new Map(paths({ ...t, beacons, speedOfSound: SPEED_M_S, reverb: false }).map((p) => [p.index, p.delayMs]));
    missed += beacons.length - arrivals.length;
    for (const a of arrivals) errors.push(Math.abs(a.delayMs - truth.get(a.beacon)));
  }
  return { errors, missed };
}

async function main() {
  const phones = Number(process.env.SOUND_PHONES ?? 1000);
  const count = Number(process.env.SOUND_WORKERS ?? Math.min(8, availableParallelism()));
  const wanted = process.env.SOUND_CONFIGS?.split(',').map((c) => c.split(':').map(Number));
  const configs = [];
  for (const n of [6, 4]) {
    for (const snrDb of [10, 0, -10]) {
      if (!wanted || wanted.some(([b, s]) => b === n && s === snrDb)) configs.push({ beacons: BEACONS.slice(0, n), snrDb });
    }
  }
  const started = performance.now();
  const workers = Array.from({ length: count }, (_, worker) => new Worker(fileURLToPath(import.meta.url), { workerData: { worker } }));
  const floors = new Map();
  const rows = [];
  try {
    for (const { beacons, snrDb } of configs) {
      const n = beacons.length;
      if (!floors.has(n)) {
        // the truth itself through the solver: what the beacons' clock errors alone cost
        const truthful = Array.from({ length: phones }, (_, id) => {
          const t = trial(n, id);
          const ps = paths({ ...t, beacons, speedOfSound: SPEED_M_S, reverb: false });
          return { id, arrivals: ps.map((p) => ({ beacon: p.index, delayMs: p.delayMs })) };
        });
        const { errors } = await solveAll(beacons, truthful);
        floors.set(n, percentile(errors, 0.5));
      }
      const t0 = performance.now();
      const perPhone = await detectAll(workers, beacons, snrDb, phones);
      const { errors, refused } = await solveAll(beacons, perPhone);
      const delays = delayErrors(beacons, perPhone);
      const took = perPhone.map((p) => p.tookMs);
      const row = {
        beacons: n,
        snr_db: snrDb,
        phones,
        median_err_m: round(percentile(errors, 0.5)),
        p95_err_m: round(percentile(errors, 0.95)),
        max_err_m: round(errors.length ? Math.max(...errors) : null),
        placed: errors.length,
        refused,
        detect_ms_per_phone_p50: round(percentile(took, 0.5), 1),
        detect_ms_per_phone_p95: round(percentile(took, 0.95), 1),
        delay_err_ms_p50: round(percentile(delays.errors, 0.5), 4),
        delay_err_ms_p95: round(percentile(delays.errors, 0.95), 4),
        delay_err_over_1ms: delays.errors.filter((e) => e > 1).length,
        arrivals_missed: delays.missed,
        clock_floor_median_err_m: round(floors.get(n)),
      };
      rows.push(row);
      console.log(
        `${n} beacons, SNR ${snrDb} dB${SNR_IN_BAND ? ' in band' : ''}, ${phones} phones: error median ${row.median_err_m} m, p95 ${row.p95_err_m} m, `
        + `max ${row.max_err_m} m; placed ${row.placed}, refused ${refused}; detect p50 ${row.detect_ms_per_phone_p50} ms, `
        + `p95 ${row.detect_ms_per_phone_p95} ms; delay error p95 ${row.delay_err_ms_p95} ms, ${row.delay_err_over_1ms} over 1 ms, `
        + `${delays.missed} arrivals missed; clock errors alone: median ${row.clock_floor_median_err_m} m `
        + `(${((performance.now() - t0) / 1000).toFixed(0)} s)`,
      );
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const goal = rows.find((r) => r.beacons === 6 && r.snr_db === 0);
  const goals = goal && {
    median_le_0_3_m_at_6_beacons_0_db: goal.median_err_m <= 0.3,
    p95_le_1_m_at_6_beacons_0_db: goal.p95_err_m <= 1,
    detect_le_200_ms: rows.every((r) => r.detect_ms_per_phone_p95 <= 200),
  };
  console.log(JSON.stringify({
    bench: 'sound', sample_rate: SAMPLE_RATE, snr_over: SNR_IN_BAND ? '2-10 kHz' : 'whole band', workers: count,
    run_s: round((performance.now() - started) / 1000, 1), configs: rows, goals,
  }));
}

if (isMainThread) await main();

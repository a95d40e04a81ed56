#!/usr/bin/env node
// A quick stand-in for the server's `c3s-ctl sound-solve` (the Rust solver is the real one),
// kept only to test the sound bench and the detector end to end before that binary exists:
// C3S_CTL=tests/js/sound-standin-solver.mjs node benches/sound/bench.mjs. Same protocol: JSON
// lines in, one per phone, `{"id", "beacons": [{"index", "x", "y"}], "speed_m_s", "arrivals":
// [{"beacon", "delay_ms"}]}`, one JSON line out per phone, `{"id", "placed": true, "x", "y",
// "residual_ms"}` or `{"id", "placed": false, "reason"}`.
//
// Time differences of arrival with the common offset eliminated: for a trial place, the
// offset is the mean of (delay − distance / c), and the cost the sum of squares left. A 2 m
// grid over the beacons' box finds the basin, Gauss–Newton the minimum; with five arrivals or
// more, one that leaves a large residual is dropped and the rest solved again.
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const GRID_M = 2;
const MARGIN_M = 10;
/** A solution whose RMS residual is over this is refused: the arrivals do not agree. */
const MAX_RESIDUAL_MS = 2;
/** Over this, one arrival is suspected and each is left out in turn. */
const SUSPECT_RESIDUAL_MS = 0.6;

function cost(points, x, y, cMs) {
  let mean = 0;
  const r = points.map((p) => {
    const v = p.delay - Math.hypot(x - p.x, y - p.y) / cMs;
    mean += v;
    return v;
  });
  mean /= points.length;
  let s = 0;
  for (const v of r) s += (v - mean) ** 2;
  return s;
}

/** Gauss–Newton on (x, y, offset) from (x, y). */
function refine(points, x, y, cMs) {
  let offset = 0;
  for (const p of points) offset += p.delay - Math.hypot(x - p.x, y - p.y) / cMs;
  offset /= points.length;
  for (let it = 0; it < 30; it++) {
    // normal equations of the 3-unknown linearised problem
    const A = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
    const b = [0, 0, 0];
    for (const p of points) {
      const d = Math.max(1e-6, Math.hypot(x - p.x, y - p.y));
      const res = p.delay - d / cMs - offset;
      const j = [(x - p.x) / (d * cMs), (y - p.y) / (d * cMs), 1];
      for (let r = 0; r < 3; r++) {
        b[r] += j[r] * res;
        for (let c = 0; c < 3; c++) A[r][c] += j[r] * j[c];
      }
    }
    for (let r = 0; r < 3; r++) A[r][r] *= 1 + 1e-9;
    const step = solve3(A, b);
    if (!step) break;
    x += step[0];
    y += step[1];
    offset += step[2];
    if (Math.hypot(step[0], step[1]) < 1e-6) break;
  }
  return { x, y, rms: Math.sqrt(cost(points, x, y, cMs) / points.length) };
}

function solve3(A, b) {
  const m = A.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < 3; c++) {
    let p = c;
    for (let r = c + 1; r < 3; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    if (Math.abs(m[p][c]) < 1e-15) return null;
    [m[c], m[p]] = [m[p], m[c]];
    for (let r = 0; r < 3; r++) {
      if (r === c) continue;
      const f = m[r][c] / m[c][c];
      for (let k = c; k < 4; k++) m[r][k] -= f * m[c][k];
    }
  }
  return [m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]];
}

function place(points, box, cMs) {
  const starts = [];
  for (let x = box.x0; x <= box.x1; x += GRID_M) {
    for (let y = box.y0; y <= box.y1; y += GRID_M) starts.push({ x, y, c: cost(points, x, y, cMs) });
  }
  starts.sort((a, b) => a.c - b.c);
  let best = null;
  for (const s of starts.slice(0, 3)) {
    const r = refine(points, s.x, s.y, cMs);
    if (!best || r.rms < best.rms) best = r;
  }
  return best;
}

/** One phone's line in, its answer out. */
export function solveLine(msg) {
  const byIndex = new Map(msg.beacons.map((b) => [b.index, b]));
  const points = msg.arrivals
    .filter((a) => byIndex.has(a.beacon) && Number.isFinite(a.delay_ms))
    .map((a) => ({ ...byIndex.get(a.beacon), delay: a.delay_ms }));
  if (points.length < 3) return { id: msg.id, placed: false, reason: `${points.length} beacons heard, 3 needed` };
  const cMs = msg.speed_m_s / 1000;
  const xs = msg.beacons.map((b) => b.x);
  const ys = msg.beacons.map((b) => b.y);
  const box = {
    x0: Math.min(...xs) - MARGIN_M, x1: Math.max(...xs) + MARGIN_M,
    y0: Math.min(...ys) - MARGIN_M, y1: Math.max(...ys) + MARGIN_M,
  };
  let best = place(points, box, cMs);
  if (best.rms > SUSPECT_RESIDUAL_MS && points.length >= 5) {
    for (let i = 0; i < points.length; i++) {
      const r = place(points.filter((_, k) => k !== i), box, cMs);
      if (r.rms < best.rms) best = r;
    }
  }
  if (!(best.rms <= MAX_RESIDUAL_MS)) return { id: msg.id, placed: false, reason: `residual ${best.rms.toFixed(2)} ms` };
  return { id: msg.id, placed: true, x: best.x, y: best.y, residual_ms: best.rms };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] !== 'sound-solve') {
    console.error('usage: sound-standin-solver.mjs sound-solve < lines');
    process.exit(2);
  }
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim()) process.stdout.write(`${JSON.stringify(solveLine(JSON.parse(line)))}\n`);
  }
}

// Clips of phones flashing their codes, drawn here frame by frame and encoded with the real
// FFmpeg, for the browser tests of the observer page: what a camera on a tripod would film of
// a few phones held up in the stands. Each phone is a small rectangle that is lit or dark as
// its slots say, by its own clock (a few ms off) and on its own 60 Hz refresh, seen through a
// 1/60 s exposure; behind them a textured, noisy background. (src/testkit/flashclip.rs draws
// the server's harder clips: shake, rolling shutter, blur, lights.)

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';

/** A small deterministic random number generator (mulberry32), so a failing clip can be
 * drawn again exactly. */
export function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const REFRESH_S = 1 / 60;
const LIT = 235;
const DARK = 18;

/**
 * Draws and encodes a clip; resolves to its bytes (H.264 in MP4).
 * @param {object} o
 * @param {number} o.width, o.height  the frame, pixels
 * @param {number} o.fps
 * @param {number} o.symbolS          a slot's length, s
 * @param {number} o.sessionStartS    clip time of the first slot
 * @param {number} o.seconds          the clip's length
 * @param {{x: number, y: number, w: number, h: number, slots: string, clockErrorS?: number, refreshPhaseS?: number}[]} o.phones
 *        each phone's screen centre and size in video pixels and what it shows ('1' lit)
 * @param {number} [o.seed]
 */
export async function flashClip({ width, height, fps, symbolS, sessionStartS, seconds, phones, seed = 1 }) {
  const rnd = random(seed);
  // the background: blotches of every size and shade on grey, as the stands look
  const background = new Float32Array(width * height).fill(60);
  for (let i = 0; i < (width * height) / 150; i++) {
    const bw = 2 + Math.floor(rnd() * 14);
    const bh = 2 + Math.floor(rnd() * 14);
    const x0 = Math.floor(rnd() * (width - bw));
    const y0 = Math.floor(rnd() * (height - bh));
    const shade = rnd() * 40 - 20;
    for (let y = y0; y < y0 + bh; y++) for (let x = x0; x < x0 + bw; x++) background[y * width + x] += shade;
  }
  // the phone's screen at clip time t: the slot whose start (its clock's, on its refresh
  // nearest the instant) has passed
  const lit = (p, t) => {
    const err = p.clockErrorS ?? 0;
    const phase = p.refreshPhaseS ?? 0;
    const shown = (instant) => Math.round((instant - phase) / REFRESH_S) * REFRESH_S + phase;
    const k = Math.floor((t - sessionStartS - err) / symbolS);
    for (const slot of [k + 1, k, k - 1]) {
      if (slot < 0) continue;
      if (shown(sessionStartS + err + slot * symbolS) <= t) return p.slots[slot] === '1';
    }
    return false;
  };
  const file = path.join(tmpdir(), `c3s-browser-clip-${randomUUID()}.mp4`);
  const ffmpeg = spawn('ffmpeg', ['-nostdin', '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'gray', '-s', `${width}x${height}`, '-r', String(fps), '-i', 'pipe:0',
    '-c:v', 'libx264', '-crf', '23', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', file], { stdio: ['pipe', 'inherit', 'inherit'] });
  const exited = once(ffmpeg, 'exit');
  const steps = 8; // the exposure, sampled
  const frames = Math.round(seconds * fps);
  try {
    for (let f = 0; f < frames; f++) {
      const t = f / fps;
      const frame = Float32Array.from(background);
      for (const p of phones) {
        let on = 0;
        for (let s = 0; s < steps; s++) on += lit(p, t + (REFRESH_S * (s + 0.5)) / steps) ? 1 : 0;
        const value = DARK + (on / steps) * (LIT - DARK);
        const x0 = Math.round(p.x - p.w / 2);
        const y0 = Math.round(p.y - p.h / 2);
        for (let y = y0; y < y0 + p.h; y++) for (let x = x0; x < x0 + p.w; x++) frame[y * width + x] = value;
      }
      const bytes = Buffer.alloc(width * height);
      for (let i = 0; i < bytes.length; i++) {
        const noise = (rnd() + rnd() + rnd() - 1.5) * 4;
        bytes[i] = Math.max(0, Math.min(255, Math.round(frame[i] + noise)));
      }
      if (!ffmpeg.stdin.write(bytes)) await once(ffmpeg.stdin, 'drain');
    }
    ffmpeg.stdin.end();
    const [code] = await exited;
    if (code !== 0) throw new Error(`ffmpeg could not encode the clip (exit ${code})`);
    return await readFile(file);
  } finally {
    await rm(file, { force: true });
  }
}

/** A y4m clip (what Chromium's fake camera plays, looped) of FFmpeg's test pattern. */
export async function testPatternY4m(file, { width = 640, height = 360, fps = 25, seconds = 2 } = {}) {
  const ffmpeg = spawn('ffmpeg', ['-nostdin', '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}`, '-t', String(seconds), '-pix_fmt', 'yuv420p', file],
  { stdio: ['ignore', 'inherit', 'inherit'] });
  const [code] = await once(ffmpeg, 'exit');
  if (code !== 0) throw new Error(`ffmpeg could not make the y4m (exit ${code})`);
}

// Synthetic phone recordings of a sound-location session whose truth is known: the bench
// (bench.mjs), the unit tests (tests/js/sound.test.mjs) and the browser test's fake microphone
// (`loopedWav`) all hear the same world. Each beacon's chirp reaches the phone after
// distance / c, plus that beacon's clock error, plus the phone's microphone latency,
// attenuated as 1 / distance (relative to 1 m), followed by a few echoes, in crowd noise scaled
// to a given SNR. No I/O except `loopedWav`'s optional file.
import { writeFileSync } from 'node:fs';
import { SOUND, CODES, chirpAt, emissionsMs, recordingWindowMs } from '../../web-client/sound/codes.js';
import { realSpectrum } from '../../web-client/sound/detect.js';

/** A seeded uniform [0, 1) generator (mulberry32), the one the flash tests draw with. */
export { random } from '../../tests/browser/flashclip.mjs';
import { random } from '../../tests/browser/flashclip.mjs';

/** A standard normal draw from `rng` (Box–Muller). */
export function gaussian(rng) {
  const u = 1 - rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

/**
 * Crowd noise of unit power: half pink noise (−3 dB an octave, Kellet's filter), half babble
 * (eight "talkers", each white noise through a resonance that moves every syllable, 120–250 ms,
 * under a syllable-shaped envelope). Most of its power is low: only ~9 % (−10 dB) falls in
 * the chirps' 2–10 kHz band, so an SNR over the whole band flatters the detector by ~10 dB
 * against one measured in the band (`snrInBand`).
 */
export function crowdNoise(length, sampleRate, rng) {
  const pink = new Float32Array(length);
  let b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0;
  for (let i = 0; i < length; i++) {
    const w = gaussian(rng);
    b0 = 0.99886 * b0 + w * 0.0555179;
    b1 = 0.99332 * b1 + w * 0.0750759;
    b2 = 0.969 * b2 + w * 0.153852;
    b3 = 0.8665 * b3 + w * 0.3104856;
    b4 = 0.55 * b4 + w * 0.5329522;
    b5 = -0.7616 * b5 - w * 0.016898;
    pink[i] = b0 + b1 + b2 + b3 + b4 + b5 + b6 + w * 0.5362;
    b6 = w * 0.115926;
  }
  const babble = new Float32Array(length);
  for (let talker = 0; talker < 8; talker++) {
    let y1 = 0;
    let y2 = 0;
    let next = 0;
    let syllable = 1;
    let a1 = 0;
    let a2 = 0;
    let start = 0;
    let loud = 1;
    for (let i = 0; i < length; i++) {
      if (i >= next) {
        // a new syllable: its length, its resonance (300–3000 Hz, Q ~ 4), its loudness
        start = i;
        syllable = Math.round((0.12 + 0.13 * rng()) * sampleRate);
        next = i + syllable;
        const f = 300 * 10 ** rng();
        const r = Math.exp((-Math.PI * f) / (4 * sampleRate));
        a1 = 2 * r * Math.cos((2 * Math.PI * f) / sampleRate);
        a2 = -r * r;
        loud = 0.3 + rng();
      }
      const y = a1 * y1 + a2 * y2 + gaussian(rng);
      y2 = y1;
      y1 = y;
      const env = Math.sin((Math.PI * (i - start)) / syllable);
      babble[i] += loud * env * env * y;
    }
  }
  normalise(pink);
  normalise(babble);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.SQRT1_2 * (pink[i] + babble[i]);
  return normalise(out);
}

function normalise(x) {
  let p = 0;
  for (let i = 0; i < x.length; i++) p += x[i] * x[i];
  const k = p > 0 ? 1 / Math.sqrt(p / x.length) : 0;
  for (let i = 0; i < x.length; i++) x[i] *= k;
  return x;
}

/** Code `index`'s mean power over its chirp (the taper takes a little off ½). */
const codePower = CODES.map(({ index, durationMs }) => {
  const n = 20000;
  let p = 0;
  for (let i = 0; i < n; i++) p += chirpAt(index, ((i + 0.5) / n) * (durationMs / 1000)) ** 2;
  return p / n;
});

/**
 * Each beacon's path to the phone: its direct delay (ms: distance / c, plus its clock error
 * and the microphone's latency) and gain (1 / distance, 1 m = 1), and its echoes.
 */
export function paths({ phone, beacons, micLatencyMs = 0, beaconClockErrMs = [], reverb = true, speedOfSound = 343, rng = random(1) }) {
  return beacons.map((b, i) => {
    const distanceM = Math.hypot(b.x - phone.x, b.y - phone.y);
    const echoes = [];
    if (reverb) {
      const count = 3 + Math.floor(rng() * 3);
      for (let k = 0; k < count; k++) echoes.push({ afterMs: 20 + 60 * rng(), gain: 10 ** (-(6 + 14 * rng()) / 20) });
    }
    return {
      index: b.index,
      distanceM,
      delayMs: (distanceM / speedOfSound) * 1000 + (beaconClockErrMs[i] ?? 0) + micLatencyMs,
      gain: 1 / Math.max(1, distanceM),
      echoes,
    };
  });
}

/** Adds code `index` at `amp`, its first sample at fractional sample `at` of `out` (wrapping
 * round the end when `circular`), through a cache of renderings by fraction of a sample. */
function addChirp(out, index, at, amp, circular, cache) {
  const whole = Math.ceil(at - 1e-9);
  const frac = whole - at;
  const key = `${index}:${Math.round(frac * 1e6)}`;
  let wave = cache.get(key);
  if (!wave) {
    const fs = cache.sampleRate;
    const n = Math.ceil((CODES[index].durationMs / 1000) * fs) + 1;
    wave = new Float32Array(n);
    for (let i = 0; i < n; i++) wave[i] = chirpAt(index, (i + frac) / fs);
    cache.set(key, wave);
  }
  const L = out.length;
  for (let i = 0; i < wave.length; i++) {
    let j = whole + i;
    if (circular) j = ((j % L) + L) % L;
    else if (j < 0 || j >= L) continue;
    out[j] += amp * wave[i];
  }
}

const bandShares = new WeakMap();

/** The share of `noise`'s power within the chirps' band (from its first 2¹⁷ samples). */
export function bandShare(noise, sampleRate) {
  let share = bandShares.get(noise);
  if (share === undefined) {
    const n = 2 ** Math.min(17, Math.floor(Math.log2(noise.length)));
    const { re, im } = realSpectrum(noise.subarray(0, n), n);
    let all = 0;
    let band = 0;
    for (let k = 1; k < n / 2; k++) {
      const p = re[k] ** 2 + im[k] ** 2;
      const f = (k * sampleRate) / n;
      all += p;
      if (f >= SOUND.lowHz && f <= SOUND.highHz) band += p;
    }
    share = band / all;
    bandShares.set(noise, share);
  }
  return share;
}

/** Noise of `length` samples at `o.snrDb` under the nearest of the paths `ps`: a stretch of
 * `o.noiseBed` (unit power) from a random place, or fresh crowd noise. */
function noiseFor(length, sampleRate, ps, o, rng) {
  const { snrDb, snrInBand = false, noiseBed: bed } = o;
  let x;
  let share = 1;
  if (bed && bed.length >= length) {
    const from = Math.floor(rng() * (bed.length - length + 1));
    x = Float32Array.from(bed.subarray(from, from + length));
    if (snrInBand) share = bandShare(bed, sampleRate);
  } else {
    x = crowdNoise(length, sampleRate, rng);
    if (snrInBand) share = bandShare(x, sampleRate);
  }
  const rms = noiseRms(ps, snrDb) / Math.sqrt(share);
  for (let i = 0; i < length; i++) x[i] *= rms;
  return x;
}

/** The noise RMS that puts the nearest beacon's direct chirp `snrDb` above it. */
function noiseRms(ps, snrDb) {
  const nearest = ps.reduce((a, p) => (p.distanceM < a.distanceM ? p : a));
  const power = nearest.gain ** 2 * codePower[nearest.index];
  return Math.sqrt(power / 10 ** (snrDb / 10));
}

/**
 * A phone's recording of `session`: every emission of every beacon, through its paths, in
 * noise.
 * @param {object} o
 * @param {number} o.sampleRate
 * @param {{x: number, y: number}} o.phone metres
 * @param {{index: number, x: number, y: number}[]} o.beacons metres
 * @param {object} o.session `{startsAtMs, periodMs, slotMs, repeats, beacons}`
 * @param {number} [o.firstSampleMs] the server instant of sample 0 (default: the recording
 *   window's start)
 * @param {number} [o.lengthMs] default: up to the recording window's end
 * @param {number} [o.micLatencyMs] added to every arrival
 * @param {number[]} [o.beaconClockErrMs] per beacon (in `beacons`' order): how late it emits
 * @param {number} [o.snrDb] nearest beacon's chirp power over the noise power (Infinity: none)
 * @param {boolean} [o.snrInBand] count only the noise within the chirps' band (default: all)
 * @param {boolean} [o.reverb] 3–5 echoes per beacon, +20..+80 ms, −6..−20 dB
 * @param {number} [o.seed]
 * @param {number} [o.speedOfSound] m/s
 * @param {Float32Array} [o.noiseBed] unit-power noise to take a stretch of (faster than fresh)
 * @returns {Float32Array}
 */
export function recording(o) {
  const { sampleRate, session, snrDb = Infinity, seed = 1 } = o;
  const rng = random(seed);
  const window = recordingWindowMs(session);
  const firstSampleMs = o.firstSampleMs ?? window.fromMs;
  const lengthMs = o.lengthMs ?? window.untilMs - firstSampleMs;
  const length = Math.round((lengthMs * sampleRate) / 1000);
  const ps = paths({ ...o, rng });
  const out = Number.isFinite(snrDb) ? noiseFor(length, sampleRate, ps, o, rng) : new Float32Array(length);
  const cache = Object.assign(new Map(), { sampleRate });
  for (const p of ps) {
    for (const e of emissionsMs(session, p.index)) {
      for (const path of [{ afterMs: 0, gain: 1 }, ...p.echoes]) {
        const at = ((e + p.delayMs + path.afterMs - firstSampleMs) * sampleRate) / 1000;
        addChirp(out, p.index, at, p.gain * path.gain, false, cache);
      }
    }
  }
  return out;
}

/**
 * Exactly one period of a recording whose beacons emit every period for ever: what a looping
 * fake microphone (Chromium's --use-file-for-fake-audio-capture) plays to a phone page, which
 * then starts capturing at an unknown phase. Its noise loops too, so folding the repeats gains
 * nothing over it. Same options as `recording` (no `session`, `firstSampleMs`, `lengthMs`: phase
 * 0 is a period's start); `path` writes the WAV there.
 * @returns {{wav: Buffer, samples: Float32Array}} 16-bit PCM mono, peak at −1 dBFS
 */
export function loopedWav(o) {
  const { sampleRate, snrDb = Infinity, seed = 1, path } = o;
  const periodMs = o.periodMs ?? SOUND.periodMs;
  const slotMs = o.slotMs ?? SOUND.slotMs;
  const rng = random(seed);
  const length = Math.round((periodMs * sampleRate) / 1000);
  const ps = paths({ ...o, rng });
  const samples = Number.isFinite(snrDb) ? noiseFor(length, sampleRate, ps, o, rng) : new Float32Array(length);
  const cache = Object.assign(new Map(), { sampleRate });
  for (const p of ps) {
    for (const path of [{ afterMs: 0, gain: 1 }, ...p.echoes]) {
      const at = ((p.index * slotMs + p.delayMs + path.afterMs) * sampleRate) / 1000;
      addChirp(samples, p.index, at, p.gain * path.gain, true, cache);
    }
  }
  const bytes = wav(samples, sampleRate);
  if (path) writeFileSync(path, bytes);
  return { wav: bytes, samples };
}

/** `samples` as a 16-bit PCM mono WAV, scaled so the loudest sample is at −1 dBFS. */
export function wav(samples, sampleRate) {
  let peak = 0;
  for (const v of samples) peak = Math.max(peak, Math.abs(v));
  const k = peak > 0 ? (0.891 * 32767) / peak : 0;
  const data = samples.length * 2;
  const b = Buffer.alloc(44 + data);
  b.write('RIFF', 0);
  b.writeUInt32LE(36 + data, 4);
  b.write('WAVE', 8);
  b.write('fmt ', 12);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(sampleRate, 24);
  b.writeUInt32LE(sampleRate * 2, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write('data', 36);
  b.writeUInt32LE(data, 40);
  for (let i = 0; i < samples.length; i++) b.writeInt16LE(Math.round(samples[i] * k), 44 + 2 * i);
  return b;
}

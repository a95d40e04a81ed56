// The sound-location schedule and the beacons' chirps (docs/sound.md). Shared by the beacon
// page (what to play, when), the phone (what to listen for, when) and the server, which holds
// the same constants: a session's emission instants are a pure function of the session.
//
// Each beacon index has its own waveform, so a phone can tell beacons apart by what it hears,
// not by when (a capture whose start is unknown modulo the period still names every beacon).
// The eight codes are linear chirps over the same band, four sweeping up and four down, the
// four of one direction differing in length (64, 88, 112 and 136 ms): two chirps of different
// sweep rates correlate only where their time-frequency lines cross, which smears what energy
// they share over 30–50 ms of lag (a plateau) instead of stacking it in one peak. Up against
// down keeps that plateau ~31 dB under a code's own peak; two of the same direction ΔT apart in
// length at about 1/√(bandwidth·ΔT): the worst pair of the eight stands 21.1 dB under
// (tests/js/sound.test.mjs). Chopping the band into hops (Costas-like) would be worse here: two
// codes sharing a sub-chirp correlate fully over it, at 1/(number of hops) of the peak (~−18 dB
// with eight hops), and as a sharp peak. Every code covers the whole band flatly, so each has
// the same sharp correlation peak (~1/8 kHz wide).

/** The schedule and the band. A beacon index always means the same slot, whatever the number
 * of beacons, because the period is `maxBeacons` slots long. */
export const SOUND = Object.freeze({
  /** One beacon's turn: its chirp, the venue's spread of arrivals (100 m × 60 m: ~0.35 s),
   * the reverberation (~80 ms) and the longest code (136 ms) fit without overlap. */
  slotMs: 600,
  /** A period holds every possible beacon's slot. */
  periodMs: 600 * 8,
  /** Periods per session: the phone adds them up, for SNR (3: +4.8 dB). */
  repeats: 3,
  lowHz: 2000,
  highHz: 10000,
  /** The codes' mean length; each code's own is `CODES[index].durationMs`. */
  chirpMs: 100,
  maxBeacons: 8,
  /** The phone records from this long before the session starts... */
  leadMs: 200,
  /** ...until this long after its last period ends. */
  tailMs: 700,
});

/** The fraction of each end of a chirp tapered by a raised cosine: no click, and (a chirp's
 * time being its frequency) band edges that roll off instead of ringing in the correlation. */
export const TAPER = 0.1;

const LENGTHS_MS = [64, 88, 112, 136];

/** Beacon index → its code: even indexes sweep up, odd ones down. */
export const CODES = Object.freeze(
  Array.from({ length: SOUND.maxBeacons }, (_, index) => Object.freeze({
    index,
    sweep: index % 2 === 0 ? 'up' : 'down',
    durationMs: LENGTHS_MS[index >> 1],
  })),
);

/** The longest code, ms: what a detector must allow for past an arrival. */
export const LONGEST_CHIRP_MS = Math.max(...LENGTHS_MS);

function codeOf(index) {
  const code = CODES[index];
  if (!code) throw new RangeError(`no chirp code ${index} (0..${SOUND.maxBeacons - 1})`);
  return code;
}

/** The taper's gain at fraction `u` (0..1) of the chirp. */
function taper(u) {
  const edge = Math.min(u, 1 - u) / TAPER;
  return edge >= 1 ? 1 : 0.5 - 0.5 * Math.cos(Math.PI * edge);
}

/**
 * Code `index` at `tS` seconds after its first sample (0 outside the chirp). A function of
 * continuous time, so a synthesiser can place a chirp at any fraction of a sample.
 */
export function chirpAt(index, tS) {
  const { sweep, durationMs } = codeOf(index);
  const T = durationMs / 1000;
  if (!(tS >= 0 && tS < T)) return 0;
  const rate = (SOUND.highHz - SOUND.lowHz) / T;
  const phase = sweep === 'up'
    ? SOUND.lowHz * tS + (rate * tS * tS) / 2
    : SOUND.highHz * tS - (rate * tS * tS) / 2;
  return taper(tS / T) * Math.sin(2 * Math.PI * phase);
}

/** Samples of code `index`'s chirp at `sampleRate`. */
export function chirpLength(index, sampleRate) {
  return Math.ceil((codeOf(index).durationMs / 1000) * sampleRate);
}

/**
 * Code `index` rendered at `sampleRate`: what the beacon plays, and what the phone correlates
 * with. Amplitude 1 (the sweep passes within a hair of a crest every few cycles, so the loudest
 * sample is 1 to ~1e-4). `startS` (0 ≤ startS < 1 / sampleRate) starts the chirp that far after
 * sample 0, for synthesising arrivals between samples.
 * @returns {Float32Array}
 */
export function chirp(index, sampleRate, startS = 0) {
  const n = chirpLength(index, sampleRate) + (startS > 0 ? 1 : 0);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = chirpAt(index, i / sampleRate - startS);
  return out;
}

/** A session's period and slot, defaulting to the fixed schedule. */
function timing(session) {
  return {
    periodMs: session.periodMs ?? SOUND.periodMs,
    slotMs: session.slotMs ?? SOUND.slotMs,
    repeats: session.repeats ?? SOUND.repeats,
  };
}

/**
 * The server instants (ms) at which beacon `index` emits in `session`: when the first sample
 * of its chirp leaves the speaker, once per period.
 * @param {{startsAtMs: number, periodMs?: number, slotMs?: number, repeats?: number}} session
 */
export function emissionsMs(session, index) {
  const { periodMs, slotMs, repeats } = timing(session);
  return Array.from({ length: repeats }, (_, r) => session.startsAtMs + r * periodMs + index * slotMs);
}

/** The stretch of server time (ms) a phone records for `session`: a little before the first
 * period, until the last period's arrivals and their echoes are surely in. */
export function recordingWindowMs(session) {
  const { periodMs, repeats } = timing(session);
  return {
    fromMs: session.startsAtMs - SOUND.leadMs,
    untilMs: session.startsAtMs + repeats * periodMs + SOUND.tailMs,
  };
}

/** A session object with the fixed schedule: `{startsAtMs, periodMs, slotMs, repeats, beacons}`. */
export function makeSession({ startsAtMs, beacons, repeats = SOUND.repeats }) {
  return { startsAtMs, periodMs: SOUND.periodMs, slotMs: SOUND.slotMs, repeats, beacons: [...beacons] };
}

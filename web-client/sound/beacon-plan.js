// When a beacon page starts its chirps (docs/sound.md, "The beacon page"). Pure: the page
// passes in what its AudioContext and clock sync say, and gets the AudioContext times at
// which to start() each chirp so that its first sample leaves the speaker at the server
// instant the schedule gives (codes.js, `emissionsMs`). Runs under Node for the tests.
//
// Three clocks meet here. The server's (what the schedule is in), this page's local clock
// (performance.timeOrigin + performance.now(), ms: what clock.js's offset relates to the
// server's), and the audio clock (AudioContext time, s). getOutputTimestamp() ties the last
// two: at `performanceTime`, the sample frame of `contextTime` is the one leaving the output.
// So audio started at context time T is heard at
//     performanceTime + (T − contextTime)·1000 + latencyMs
// where latencyMs is whatever the timestamp does not already cover. The specification makes
// the timestamp the output's own position, and so do Chromium (the frames rendered less the
// output delay the OS reports with each callback, stamped at that callback) and Gecko
// (currentTime − outputLatency, stamped now): there the term is 0, and adding outputLatency
// would start every chirp that much early (tens of ms: metres of error). For an engine whose
// timestamp is the render position instead, pass `timestampAtSpeaker: false`: the term is
// then outputLatency, or baseLatency where outputLatency is 0 or missing (Safari for years).
// Delay no API reports (a Bluetooth speaker, the speaker's own DSP) can be measured once per
// device and passed as `extraLatencyMs`; uncorrected, it is that beacon's clock error.

import { emissionsMs } from './codes.js';

/** An emission closer than this is skipped: the audio thread renders ahead, and a start()
 * in the past plays at once, late. */
export const MIN_LEAD_MS = 50;

/**
 * The start times of beacon `index`'s emissions still ahead.
 *
 * The audio clock drifts against performance.now() (tens of ppm: 0.5 ms over a 15 s session),
 * so the page should plan again from a fresh timestamp every few hundred ms with a horizon of
 * about a second, starting only the emissions (by `serverMs`) it has not started yet.
 *
 * @param {object} o
 * @param {{startsAtMs: number, periodMs?: number, slotMs?: number, repeats?: number}} o.session
 * @param {number} o.index this beacon's index
 * @param {number} o.serverMinusLocalMs the clock sync's offset (ClockSync.offsetAt())
 * @param {number} o.localNowMs the local clock now (performance.timeOrigin + performance.now())
 * @param {{contextTime: number, performanceTime: number}} o.audioNow getOutputTimestamp(),
 *   read just before: contextTime in s, performanceTime in ms on the performance.now() clock
 * @param {number} [o.outputLatencyS] AudioContext.outputLatency
 * @param {number} [o.baseLatencyS] AudioContext.baseLatency
 * @param {number} o.performanceTimeOrigin performance.timeOrigin
 * @param {boolean} [o.timestampAtSpeaker] whether getOutputTimestamp already places contextTime
 *   at the output (the specification, Chromium, Gecko): default true
 * @param {number} [o.extraLatencyMs] delay past what the browser reports, measured per device
 * @param {number} [o.horizonMs] plan only emissions this far ahead of now
 * @returns {{serverMs: number, contextTime: number}[]} in time order; [] while the context is
 *   not running yet (a zero timestamp)
 */
export function plan({
  session, index, serverMinusLocalMs, localNowMs, audioNow, outputLatencyS, baseLatencyS,
  performanceTimeOrigin, timestampAtSpeaker = true, extraLatencyMs = 0, horizonMs = Infinity,
}) {
  if (!(audioNow && audioNow.performanceTime > 0 && Number.isFinite(audioNow.contextTime))) return [];
  const deviceS = outputLatencyS > 0 ? outputLatencyS : baseLatencyS > 0 ? baseLatencyS : 0;
  const latencyMs = extraLatencyMs + (timestampAtSpeaker ? 0 : deviceS * 1000);
  // context time at a performance.now() reading, as the timestamp's pair extrapolates it
  const contextAt = (perfMs) => audioNow.contextTime + (perfMs - audioNow.performanceTime) / 1000;
  const perfNow = localNowMs - performanceTimeOrigin;
  // what the audio thread is rendering now runs ahead of the output by the device latency
  const renderingNow = contextAt(perfNow) + (timestampAtSpeaker ? deviceS : 0);
  const serverNow = localNowMs + serverMinusLocalMs;
  const out = [];
  for (const serverMs of emissionsMs(session, index)) {
    const ahead = serverMs - serverNow;
    if (ahead < MIN_LEAD_MS || ahead > horizonMs) continue;
    const perfAt = serverMs - serverMinusLocalMs - performanceTimeOrigin;
    const contextTime = contextAt(perfAt - latencyMs);
    if (contextTime - renderingNow < MIN_LEAD_MS / 1000) continue;
    out.push({ serverMs, contextTime });
  }
  return out;
}

// Listening in a sound session on the phone (docs/sound.md; docs/protocol.md, `listen` and
// `sound`): the microphone is recorded over the session's window with every processing the
// browser would do to a voice turned off, each sample is put on the server's clock through the
// page's clock sync, the beacons' chirps are found in a worker (detect.js), and what was heard
// goes back as `sound`. The microphone's own latency is not known and need not be: it is the
// same for every beacon, and the server solves for it.

import { makeSession, recordingWindowMs } from './codes.js';

/** How long after the window the page waits for the last block before it gives up on it. */
const LATE_BLOCK_MS = 1500;

let audio = null; // {ctx, stream, node} once the microphone is open
let worker = null;
let nextId = 1;

/** Opens the microphone (asks for it the first time); resolves to the audio graph. */
async function openMicrophone() {
  if (audio) {
    if (audio.ctx.state === 'suspended') await audio.ctx.resume();
    return audio;
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
  });
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  await ctx.audioWorklet.addModule(new URL('./tap-worklet.js', import.meta.url));
  const node = new AudioWorkletNode(ctx, 'c3s-tap', { numberOfInputs: 1, numberOfOutputs: 0 });
  ctx.createMediaStreamSource(stream).connect(node);
  if (ctx.state === 'suspended') await ctx.resume();
  audio = { ctx, stream, node };
  return audio;
}

/** Whether this page can listen at all (a secure page with a microphone API). */
export function canListen() {
  return Boolean(navigator.mediaDevices?.getUserMedia && window.AudioWorkletNode);
}

/** Asks for the microphone ahead of any session (a tap on the page's button): the first
 * session then starts recording at once instead of waiting for the user's answer. */
export async function prepare() {
  await openMicrophone();
}

function detectInWorker(job) {
  worker ??= new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const onMessage = (event) => {
      if (event.data.id !== id) return;
      worker.removeEventListener('message', onMessage);
      if (event.data.error) reject(new Error(event.data.error));
      else resolve(event.data);
    };
    worker.addEventListener('message', onMessage);
    worker.postMessage({ id, ...job }, job.samples ? [job.samples.buffer] : []);
  });
}

/**
 * Listens in the session `msg` (a `listen` message) and resolves to `{message}`, the `sound`
 * message to send, with what was heard and how long finding it took. `serverAt(localMs)` is the server's time at a local instant (clock.js), local being
 * `performance.timeOrigin + performance.now()`. `onState(text)` hears what it is doing.
 */
export async function listen(msg, serverAt, onState = () => {}) {
  const session = makeSession({
    startsAtMs: msg.starts_at_us / 1000,
    beacons: msg.slots,
    repeats: msg.repeats,
  });
  session.periodMs = msg.period_us / 1000;
  session.slotMs = msg.slot_us / 1000;
  const window = { fromMs: msg.record_from_us / 1000, untilMs: msg.record_until_us / 1000 };
  const planned = recordingWindowMs(session);
  window.fromMs = Math.min(window.fromMs, planned.fromMs);
  window.untilMs = Math.max(window.untilMs, planned.untilMs);
  const { ctx, node } = await openMicrophone();
  const rate = ctx.sampleRate;
  detectInWorker({ warm: { sampleRate: rate, session } }).catch(() => {});
  onState('listening');
  // the server time of context frame f: the output timestamp pairs the context's clock with
  // performance.now(); the microphone's latency on top is common to every beacon
  const serverOfFrame = (f) => {
    const ts = ctx.getOutputTimestamp?.() ?? {};
    const contextTime = ts.contextTime ?? ctx.currentTime;
    const perf = ts.performanceTime ?? performance.now();
    return serverAt(performance.timeOrigin + perf + (f / rate - contextTime) * 1000);
  };
  const blocks = [];
  let firstFrame = null;
  let firstSampleMs = null;
  await new Promise((resolve) => {
    let timer = null;
    const finish = () => {
      node.port.removeEventListener('message', onBlock);
      clearTimeout(timer);
      resolve();
    };
    // a listener of its own: a session that overlaps another records alongside it
    const onBlock = ({ data }) => {
      const startMs = serverOfFrame(data.frame);
      const endMs = startMs + (data.samples.length / rate) * 1000;
      if (endMs < window.fromMs) return;
      if (firstFrame === null) {
        firstFrame = data.frame;
        firstSampleMs = startMs;
      }
      blocks.push(data);
      if (endMs >= window.untilMs) finish();
    };
    node.port.addEventListener('message', onBlock);
    node.port.start();
    const left = window.untilMs - serverAt(performance.timeOrigin + performance.now());
    timer = setTimeout(finish, Math.max(0, left) + LATE_BLOCK_MS);
  });
  if (!blocks.length) throw new Error('the microphone gave no sound');
  const last = blocks[blocks.length - 1];
  const samples = new Float32Array(last.frame + last.samples.length - firstFrame);
  for (const b of blocks) samples.set(b.samples, b.frame - firstFrame);
  // (read before the worker takes the buffer: a transferred array has length 0)
  const count = samples.length;
  onState('detecting');
  const found = await detectInWorker({ samples, sampleRate: rate, firstSampleMs, session });
  return {
    message: {
      type: 'sound',
      session_id: msg.session_id,
      arrivals: found.arrivals.map((a) => ({ slot: a.beacon, delay_ms: a.delayMs })),
    },
    heard: found.arrivals,
    tookMs: found.tookMs,
    samples: count,
    sampleRate: rate,
  };
}

// The beacon page (docs/sound.md, "The beacon page"): opened on the device that feeds one
// beacon's loudspeaker, from the link the operator got when adding the beacon
// (`/beacon.html?beacon=ID&key=KEY`). It keeps its clock on the server's over a clock-only
// socket (`/ws/clock`, the phones' sync exchange), asks for its schedule every second, and
// starts its chirp on the AudioContext so that the first sample leaves the speaker at each
// instant the schedule names (beacon-plan.js).

import { ClockSync } from '/clock.js';
import { chirp } from '/sound/codes.js';
import { plan } from '/sound/beacon-plan.js';

const POLL_MS = 1000;
/** Plans are made afresh this often, each for this far ahead: the audio clock drifts. */
const PLAN_EVERY_MS = 250;
const PLAN_HORIZON_MS = 1000;
/** A chirp is only played on a clock this good (ms): a worse one misplaces every phone. */
const MAX_CLOCK_ERROR_MS = 5;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const beaconId = params.get('beacon') ?? '';
const key = params.get('key') ?? '';

/** Everything the page knows; `window.c3s` exposes it to tests. */
const state = {
  beaconId,
  slot: null,
  sessions: [],
  started: new Set(), // `${session}:${serverMs}` of the chirps started
  played: [], // [{session, serverMs, contextTime}]
  error: null,
  ctx: null,
  buffer: null,
};
window.c3s = state;

let socket = null;
const clock = new ClockSync({
  send: (msg) => socket?.readyState === WebSocket.OPEN && socket.send(JSON.stringify(msg)),
  onUpdate: ({ error }) => {
    state.syncErrorMs = error;
    $('clock-state').textContent = `synced to ±${error.toFixed(1)} ms`;
  },
});
state.clock = clock;

function say(text) {
  $('status').textContent = text;
}

function openClock() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/ws/clock`);
  socket.onopen = () => clock.start();
  socket.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === 'sync') clock.handleReply(msg);
  };
  socket.onclose = () => {
    clock.stop();
    setTimeout(openClock, 1000 + Math.random() * 2000);
  };
}

async function poll() {
  try {
    const url = `/api/beacons/${encodeURIComponent(beaconId)}/schedule?key=${encodeURIComponent(key)}`;
    const resp = await fetch(url, { cache: 'no-store' });
    const body = await resp.json();
    if (!resp.ok) {
      state.error = body.message ?? resp.statusText;
      say(resp.status === 404 ? 'This link names no beacon (it was removed, or the link is incomplete).' : state.error);
    } else {
      state.error = null;
      state.slot = body.slot;
      state.sessions = body.sessions;
      $('beacon-name').textContent = body.name;
      $('slot').textContent = String(body.slot);
      if (state.ctx) say(body.sessions.length ? 'A session is on: chirping.' : 'Ready. Waiting for a session.');
    }
  } catch (err) {
    state.error = String(err);
  }
  setTimeout(poll, POLL_MS);
}

function session(s) {
  return {
    startsAtMs: s.starts_at_us / 1000,
    periodMs: s.period_us / 1000,
    slotMs: s.slot_us / 1000,
    repeats: s.repeats,
  };
}

function schedule() {
  const ctx = state.ctx;
  if (ctx && state.slot !== null && state.syncErrorMs !== undefined && state.syncErrorMs <= MAX_CLOCK_ERROR_MS) {
    const ts = ctx.getOutputTimestamp();
    const localNowMs = performance.timeOrigin + performance.now();
    let next = null;
    for (const s of state.sessions) {
      const chirps = plan({
        session: session(s),
        index: state.slot,
        serverMinusLocalMs: clock.offsetAt(localNowMs) ?? 0,
        localNowMs,
        audioNow: ts,
        outputLatencyS: ctx.outputLatency,
        baseLatencyS: ctx.baseLatency,
        performanceTimeOrigin: performance.timeOrigin,
        horizonMs: PLAN_HORIZON_MS,
      });
      for (const c of chirps) {
        const id = `${s.session_id}:${c.serverMs}`;
        if (state.started.has(id)) continue;
        state.started.add(id);
        const source = new AudioBufferSourceNode(ctx, { buffer: state.buffer });
        source.connect(ctx.destination);
        source.start(c.contextTime);
        state.played.push({ session: s.session_id, ...c });
        $('played').textContent = String(state.played.length);
      }
      const ahead = s.starts_at_us / 1000 + (s.repeats - 1) * (s.period_us / 1000) + state.slot * (s.slot_us / 1000);
      if (ahead > clock.serverNow()) next = Math.min(next ?? Infinity, ahead);
    }
    $('next').textContent = next ? `in ${((next - clock.serverNow()) / 1000).toFixed(1)} s` : 'none scheduled';
  }
  setTimeout(schedule, PLAN_EVERY_MS);
}

async function start() {
  $('start').hidden = true;
  const ctx = new AudioContext({ latencyHint: 'interactive' });
  await ctx.resume();
  state.ctx = ctx;
  say('Ready. Waiting for the schedule…');
  const makeBuffer = () => {
    const samples = chirp(state.slot ?? 0, ctx.sampleRate);
    const buffer = new AudioBuffer({ length: samples.length, sampleRate: ctx.sampleRate });
    buffer.copyToChannel(samples, 0);
    return buffer;
  };
  const waitForSlot = () => {
    if (state.slot === null) return setTimeout(waitForSlot, 100);
    state.buffer = makeBuffer();
    $('test-chirp').hidden = false;
    schedule();
  };
  waitForSlot();
}

$('start').addEventListener('click', start);
$('test-chirp').addEventListener('click', () => {
  if (!state.ctx || !state.buffer) return;
  const source = new AudioBufferSourceNode(state.ctx, { buffer: state.buffer });
  source.connect(state.ctx.destination);
  source.start();
});

if (!beaconId || !key) {
  say('This page needs its link from the operator (beacon=…&key=…).');
  $('start').hidden = true;
} else {
  openClock();
  poll();
}

// The phone page: join a scene with one tap, then be a pixel. The protocol is docs/protocol.md.
//
// What the user sees is one of: the join button; a plain sentence about what is happening
// (joining, waiting to be located, waiting for the show, connection lost); the show itself, as
// full-screen colour; the phone's QR code when an observer asks for it; a flash when an observer
// identifies it; its flash code, slot by slot in lock-step with the crowd, while an observer
// films (docs/flash.md). Colours change on the screen refresh nearest their scheduled instant, by the
// clock synced with the server (clock.js).

import { ClockSync } from '/clock.js';
import { parseChunk, Timeline } from '/chunks.js';
import { drawQr } from '/qr.js';
import { sceneIdFromKey } from '/api.js';
import { canListen, listen } from '/sound/listen.js';

const PROTOCOL = 1;
const DEVICE_TOKEN_KEY = 'c3s.device_token';
/** Reconnect backoff: full jitter over an exponential ceiling, so thousands of phones that
 * lost the same Wi-Fi do not come back in one burst. */
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30000;
/** How long a QR code stays up unless the phone is located first. */
const QR_SHOW_MS = 120000;
/** A socket that says nothing for this long is dead even if the browser thinks it is open
 * (a phone that roamed to another access point): sync replies come every 15 s at least. */
const SILENCE_MS = 35000;
/** Opening a socket and hearing `welcome` takes no longer than this on a working network. */
const WELCOME_MS = 15000;
/** The least wait before coming back, by close code: the server asked for patience. */
const MIN_RETRY_MS = { 4005: 10000, 4029: 30000, 4008: 2000 };
/** After this many refusals of a scene that is not open, stop and offer a button. */
const MAX_NOT_OPEN = 20;

const $ = (id) => document.getElementById(id);
const screen = $('screen');
const panel = $('panel');
const statusLine = $('status');
const detail = $('detail');
const joinButton = $('join');
const seatForm = $('seat-form');
const gpsButton = $('gps');
const qrLayer = $('qr-layer');

const key = location.pathname.startsWith('/s/')
  ? location.pathname.slice(3)
  : new URLSearchParams(location.search).get('scene') ?? '';
const sceneId = sceneIdFromKey(decodeURIComponent(key));

/** Everything the page knows; `window.c3s` exposes it to tests and to curious people. */
const state = {
  sceneId,
  phase: 'idle', // idle | joining | in | lost | over
  scene: null,
  pixelId: null,
  position: null,
  socket: null,
  attempt: 0,
  retryTimer: null,
  identifyUntil: 0,
  qrUntil: 0,
  flash: null, // {session, startMs, symbolMs, slots} while a flash session is on or ahead
  flashLog: [], // [{session, slot, lit, at: server ms at the refresh that showed it, wall}]
  flashSkipped: new Set(), // sessions the user chose not to flash
  sound: null, // the last sound session: {sessionId, phase, error, report, refused}
  refusals: [], // [{method, reason, at: server ms}] the last locate_refused messages

  shown: null, // the colour on screen, 'r,g,b'
  changes: [], // [{at: server ms at the refresh that showed it, color}]
  // every refresh, for tests and the crowd bench: {local: this clock's ms at the refresh
  // (performance.timeOrigin + the requestAnimationFrame time), at: the server's, color}
  refreshes: [],
  frameMs: 1000 / 60,
};
window.c3s = state;

const timeline = new Timeline();
const clock = new ClockSync({
  send: (msg) => send(msg),
  onUpdate: ({ error }) => {
    state.syncErrorMs = error;
  },
});
state.clock = clock;

function say(text, more = '') {
  statusLine.textContent = text;
  detail.textContent = more;
}

function send(msg) {
  if (state.socket?.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(msg));
}

// ---- joining and staying joined -------------------------------------------------------------

function connect() {
  clearTimeout(state.retryTimer);
  state.phase = 'joining';
  say('Joining…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/ws/scenes/${sceneId}`);
  socket.binaryType = 'arraybuffer';
  state.socket = socket;
  state.lastHeard = performance.now();
  state.welcomeDeadline = performance.now() + WELCOME_MS;
  socket.onopen = () => {
    const token = localStorage.getItem(DEVICE_TOKEN_KEY);
    socket.send(JSON.stringify(token ? { type: 'hello', protocol: PROTOCOL, token } : { type: 'hello', protocol: PROTOCOL }));
  };
  socket.onmessage = (event) => {
    state.lastHeard = performance.now();
    if (typeof event.data === 'string') onMessage(JSON.parse(event.data));
    else {
      try {
        timeline.add(parseChunk(event.data));
      } catch (e) {
        console.warn('bad chunk', e);
      }
    }
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    clock.stop();
    onClosed(event.code, event.reason);
  };
}

/** Gives up on a socket that went quiet (checked every second) without waiting for the
 * browser to notice, which can take many minutes. */
setInterval(() => {
  const socket = state.socket;
  if (!socket) return;
  const now = performance.now();
  const waitingForWelcome = state.phase === 'joining' && now > state.welcomeDeadline;
  if (waitingForWelcome || now - state.lastHeard > SILENCE_MS) {
    state.socket = null;
    socket.onclose = null;
    socket.close();
    clock.stop();
    onClosed(4011, 'no answer from the server');
  }
}, 1000);

function onMessage(msg) {
  switch (msg.type) {
    case 'welcome':
      if (msg.token) localStorage.setItem(DEVICE_TOKEN_KEY, msg.token);
      state.welcomes = (state.welcomes ?? 0) + 1;
      state.phase = 'in';
      state.notOpen = 0;
      state.scene = msg.scene;
      state.pixelId = msg.pixel_id;
      state.position = msg.position;
      // a connection that lasts is a success: the next loss starts the backoff afresh
      state.stableTimer = setTimeout(() => (state.attempt = 0), 10000);
      $('scene-name').textContent = msg.scene.name;
      document.title = `${msg.scene.name} — C3S`;
      clock.start();
      describe();
      break;
    case 'queued':
      // a crowd is joining at once: the server takes us in turn; keep waiting
      state.welcomeDeadline = performance.now() + WELCOME_MS;
      state.queuedAhead = msg.ahead;
      say('Joining…', msg.ahead > 1 ? `${msg.ahead} phones are joining with you; it takes a moment.` : 'It takes a moment.');
      break;
    case 'scene':
      // the operator changed the scene (its name, idle colour, locating methods); two quick
      // changes may arrive out of order, and the later one holds
      if (Date.parse(msg.scene.updated_at) < Date.parse(state.scene?.updated_at ?? 0)) break;
      state.scene = msg.scene;
      $('scene-name').textContent = msg.scene.name;
      describe();
      break;
    case 'sync':
      clock.handleReply(msg);
      break;
    case 'located':
      state.position = { x: msg.x, y: msg.y };
      state.qrUntil = 0;
      describe();
      break;
    case 'locate_refused':
      state.refusals.push({ method: msg.method, reason: msg.reason, at: clock.serverNow() });
      if (state.refusals.length > 50) state.refusals.splice(0, 25);
      if (msg.method === 'sound') {
        const sound = state.sound;
        if (sound?.report && /^too many attempts/.test(msg.reason) && (sound.retries = (sound.retries ?? 0) + 1) <= 5) {
          setTimeout(() => send(sound.report.message), 2000 + Math.random() * 3000);
          break;
        }
        if (sound) sound.refused = msg.reason;
      }
      say(msg.method === 'seat' ? 'That seat could not be used.' : 'Your location could not be used.', msg.reason);
      break;
    case 'qr':
      showQr(msg);
      break;
    case 'identify':
      state.identifyUntil = msg.until_us / 1000;
      break;
    case 'flash':
      startFlash(msg);
      break;
    case 'listen':
      listenForBeacons(msg);
      break;
    default:
      break; // a newer server's message: ignore
  }
}

/** What a close means for the user, and whether to come back (docs/protocol.md, close codes). */
function onClosed(code, reason) {
  clearTimeout(state.stableTimer);
  const final = {
    4003: 'You were removed from this scene.',
    4009: 'This phone joined again in another tab or window; that one is the screen now.',
    4010: 'The show has ended. Thank you for being part of it!',
    4002: 'This page is out of date. Please reload it.',
  }[code];
  if (final) {
    state.phase = 'over';
    state.closeCode = code;
    panel.hidden = false;
    joinButton.hidden = true;
    seatForm.hidden = true;
    gpsButton.hidden = true;
    say(final);
    return;
  }
  state.lastClose = code;
  if (code === 4004 && (state.notOpen = (state.notOpen ?? 0) + 1) > MAX_NOT_OPEN) {
    state.phase = 'idle';
    panel.hidden = false;
    joinButton.textContent = 'Try again';
    joinButton.hidden = false;
    say('This scene is not open.', 'Try again when the show is about to start.');
    return;
  }
  state.phase = 'lost';
  state.attempt += 1;
  // full jitter over an exponential ceiling (3 s at first, so a stadium's worth of phones that
  // lost the same access point spread their joins), never sooner than the server asked
  const ceiling = Math.min(BACKOFF_MAX_MS, 3 * BACKOFF_BASE_MS * 2 ** (state.attempt - 1));
  const delay = Math.max(MIN_RETRY_MS[code] ?? 250, Math.random() * ceiling);
  state.retryAt = performance.now() + delay;
  const why = code === 4004 ? 'This scene is not open yet.' : 'Connection lost.';
  say(`${why} Trying again in ${Math.ceil(delay / 1000)} s…`, reason || '');
  state.retryTimer = setTimeout(connect, delay);
}

function describe() {
  if (state.phase !== 'in') return;
  const methods = state.scene.location_methods;
  seatForm.hidden = state.position !== null || !methods.includes('seat');
  gpsButton.hidden = state.position !== null || !methods.includes('gps') || !navigator.geolocation;
  if (!state.position) {
    const ways = state.scene.location_methods
      .map((m) => ({ qr: 'an observer photographs the crowd', flash: 'an observer films the crowd while your screen flashes', sound: 'this phone hears the venue\'s beacons', observer: 'an observer places you on the map', seat: 'you enter your seat below', gps: 'you share your location' })[m])
      .filter(Boolean);
    say('Waiting to be located.', ways.length ? `You will be placed when ${ways.join(', or ')}.` : '');
  } else {
    say('Located. Waiting for the show…', 'Keep this page open and the screen facing the stage.');
  }
}

// ---- locating ----------------------------------------------------------------------------------

/** A sound session: record the beacons' chirps, then report what was heard. A refusal
 * because the scene is busy is tried again a few times, a few seconds apart. */
async function listenForBeacons(msg) {
  if (!canListen() || state.sound?.sessionId === msg.session_id) return;
  const sound = { sessionId: msg.session_id, phase: 'starting', error: null, report: null };
  state.sound = sound;
  try {
    const heard = await listen(msg, (local) => clock.serverAt(local), (phase) => (sound.phase = phase));
    sound.report = heard;
    sound.phase = 'reported';
    send(heard.message);
  } catch (err) {
    sound.phase = 'failed';
    sound.error = String(err?.message ?? err);
  }
}

seatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(seatForm);
  send({ type: 'seat', section: f.get('section').trim(), row: f.get('row').trim(), seat: f.get('seat').trim() });
  say('Looking up your seat…');
});

gpsButton.addEventListener('click', () => {
  say('Finding your location…');
  navigator.geolocation.getCurrentPosition(
    (p) => send({ type: 'gps', lat: p.coords.latitude, lon: p.coords.longitude, accuracy_m: p.coords.accuracy }),
    (err) => say('Your location is not available.', err.message),
    { enableHighAccuracy: true, timeout: 20000, maximumAge: 0 },
  );
});

function showQr(msg) {
  state.qrUntil = Math.min(msg.expires_us / 1000, clock.serverNow() + QR_SHOW_MS);
  state.qr = msg;
  qrLayer.hidden = false;
  drawOwnQr();
}

function drawOwnQr() {
  const canvas = $('qr');
  const box = canvas.getBoundingClientRect();
  const side = Math.floor(Math.min(box.width, box.height) * (devicePixelRatio || 1));
  canvas.width = canvas.height = Math.max(side, 100);
  drawQr(canvas, state.qr.side, state.qr.modules, { quiet: 4 });
}

addEventListener('resize', () => {
  if (!qrLayer.hidden && state.qr) drawOwnQr();
});

$('qr-hide').addEventListener('click', () => {
  state.qrUntil = 0;
});

// ---- flashing a code for the observer's camera ------------------------------------------------

const flashNotice = $('flash-notice');

function startFlash(msg) {
  if (state.flashSkipped.has(msg.session_id) || !/^[01]+$/.test(msg.slots)) return;
  state.flash = {
    session: msg.session_id,
    startMs: msg.starts_at_us / 1000,
    symbolMs: msg.symbol_us / 1000,
    slots: msg.slots,
  };
  state.qrUntil = 0;
  flashNotice.hidden = false;
}

$('flash-skip').addEventListener('click', () => {
  if (state.flash) state.flashSkipped.add(state.flash.session);
  state.flash = null;
  flashNotice.hidden = true;
});

/** The flash code's colour for the refresh at server time `at`, or null when no slot shows
 * then. Logs each slot as it first appears. */
function flashColour(now, at) {
  const f = state.flash;
  if (!f) return null;
  const end = f.startMs + f.slots.length * f.symbolMs;
  if (at >= end) {
    state.flash = null;
    flashNotice.hidden = true;
    return null;
  }
  if (at < f.startMs) {
    // until it starts: a notice, so the user holds the screen up (and may opt out)
    const s = Math.ceil((f.startMs - now) / 1000);
    $('flash-countdown').textContent = s > 0 ? `in ${s} s` : 'now';
    return null;
  }
  flashNotice.hidden = true;
  const slot = Math.floor((at - f.startMs) / f.symbolMs);
  const lit = f.slots[slot] === '1';
  const last = state.flashLog[state.flashLog.length - 1];
  if (!last || last.session !== f.session || last.slot !== slot) {
    state.flashLog.push({ session: f.session, slot, lit, at: now, wall: frameWall });
    if (state.flashLog.length > 1000) state.flashLog.splice(0, 500);
  }
  return lit ? [255, 255, 255] : [0, 0, 0];
}

// ---- showing colours ---------------------------------------------------------------------------

function css(rgb) {
  return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
}

function idleRgb() {
  const hex = state.scene?.idle_color ?? '#000000';
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

let lastFrame = 0;
// this refresh's instant by the device's wall clock (for tests): the callback may run some ms
// after the refresh began, and `at` is the refresh's own instant
let frameWall = 0;
function frame(ts) {
  frameWall = Date.now() - (performance.now() - ts);
  // the refresh period, smoothed: a colour is drawn on the refresh nearest its instant
  if (lastFrame && ts - lastFrame < 100) state.frameMs += (ts - lastFrame - state.frameMs) * 0.05;
  lastFrame = ts;
  // this refresh's instant (the requestAnimationFrame time, the frame's start) by the server's
  // clock; the colour of the instant nearest it is the one of half a refresh later
  const local = performance.timeOrigin + ts;
  const now = clock.serverAt(local);
  const at = now + state.frameMs / 2;
  // the show goes on through a short drop: what the phone holds still plays while it reconnects
  const showing = state.phase === 'in' || state.phase === 'lost' || state.phase === 'joining';
  let rgb = showing ? timeline.colorAt(at) : null;
  const playing = rgb !== null;
  // two flashes a second at most (WCAG 2.3.1 allows three)
  if (now < state.identifyUntil) rgb = Math.floor(now / 250) % 2 ? [255, 255, 255] : [0, 0, 0];
  // a flash session's code comes before anything else, alone on the screen
  const code = flashColour(now, at);
  if (code) rgb = code;
  if (!rgb) rgb = idleRgb();
  const key = rgb.join(',');
  if (key !== state.shown) {
    screen.style.background = css(rgb);
    state.shown = key;
    // `at` by the synced clock; `wall` by this device's own wall clock, for tests
    state.changes.push({ at: now, wall: frameWall, color: key });
    if (state.changes.length > 500) state.changes.splice(0, 250);
  }
  state.refreshes.push({ local, at: now, color: key });
  if (state.refreshes.length > 2400) state.refreshes.splice(0, 1200);
  if (qrLayer.hidden === false && (now > state.qrUntil || code)) qrLayer.hidden = true;
  // the words step aside while the show plays (also through a short drop) and while the
  // code flashes
  if (showing) panel.hidden = playing || code !== null;
  if (timeline.chunks.length > 64) timeline.prune(now - 2000);
  requestAnimationFrame(frame);
}

// ---- keeping the screen on ---------------------------------------------------------------------

async function keepAwake() {
  try {
    if ('wakeLock' in navigator) {
      state.wakeLock = await navigator.wakeLock.request('screen');
      // the browser drops the lock now and then (battery saver); take it again if still here
      state.wakeLock.addEventListener('release', () => {
        if (document.visibilityState === 'visible' && state.phase !== 'over') setTimeout(keepAwake, 1000);
      });
      return;
    }
  } catch {
    // refused (battery saver, or the page is hidden): fall back
  }
  if (state.awakeVideo) return state.awakeVideo.play().catch(() => {});
  // Fallback where there is no Wake Lock: a tiny muted video that keeps playing keeps most
  // mobile browsers from dimming the screen.
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 2;
  const ctx = canvas.getContext('2d');
  setInterval(() => {
    ctx.fillStyle = `rgb(${Math.random() * 255},0,0)`;
    ctx.fillRect(0, 0, 2, 2);
  }, 1000);
  const video = document.createElement('video');
  Object.assign(video, { muted: true, playsInline: true, loop: true });
  video.setAttribute('playsinline', '');
  video.style.cssText = 'position:fixed;width:1px;height:1px;opacity:0.01;pointer-events:none';
  if (canvas.captureStream) video.srcObject = canvas.captureStream(1);
  document.body.append(video);
  state.awakeVideo = video;
  video.play().catch(() => {});
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible' || state.phase === 'idle' || state.phase === 'over') return;
  keepAwake();
  // back from the background: the clock re-syncs itself (clock.js); a socket dropped by the
  // network comes back soon rather than at the end of a long backoff, but never sooner than
  // the server asked (4005, 4029)
  const networkDrop = [1001, 1006, 4011].includes(state.lastClose);
  if (!state.socket && state.phase === 'lost' && networkDrop && state.retryAt - performance.now() > 3000) {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(connect, Math.random() * 3000);
  }
});

// ---- start -------------------------------------------------------------------------------------

if (!sceneId) {
  say('This link does not name a scene.', 'Scan the code on the big screen again.');
  joinButton.hidden = true;
} else {
  joinButton.addEventListener('click', () => {
    joinButton.hidden = true;
    state.notOpen = 0;
    keepAwake();
    document.documentElement.requestFullscreen?.().catch(() => {});
    connect();
  });
  requestAnimationFrame(frame);
}

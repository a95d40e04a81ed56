// The observer's flash sessions: starting one (its slots last two frames of the camera that
// films it), the countdown to it and through it, and filming it with this device's camera:
// the camera is turned on before, and the recording starts at the instant the session says
// to film from and stops when it says to stop, by the server's clock (the page's own clock
// may be anything), so the clip holds the whole session with half a second each side. The
// recording becomes the clip (clip.js); a clip filmed with another camera may be chosen
// instead. The last session's id is kept for each scene (localStorage), so a clip filmed
// with another camera can still be sent after the page was reloaded.

import { api, ApiError } from '../api.js';
import { $, state, messages, clock, selected, fmt, shortId } from './state.js';
import { setClip } from './clip.js';
import { stopCamera } from './photo.js';
import { updateUploadState } from './points.js';

const sessionKey = (sceneId) => `c3s.flash_session.${sceneId}`;
/** The frame rate assumed until a camera says its own. */
const DEFAULT_FPS = 30;
/** Slots of 200 ms to 33.3 ms (two frames each): what the server takes. */
const MIN_FPS = 10;
const MAX_FPS = 60;
/** The countdown is redrawn this often. */
const TICK_MS = 100;
/** The recording's bit rate, per pixel per frame, and its bounds: a flashing phone is a few
 * pixels, and a codec starved of bits smears exactly those (a browser's default, ~2.5 Mbit/s,
 * is far too little for 4K). */
const BITS_PER_PIXEL = 0.1;
const MIN_BITS_PER_S = 4e6;
const MAX_BITS_PER_S = 40e6;
/** What to record in, best first: H.264 in MP4 (what phones encode in hardware), then WebM. */
const RECORDING_TYPES = ['video/mp4;codecs=avc1', 'video/webm;codecs=vp9', 'video/webm;codecs=vp8', 'video/webm', 'video/mp4'];

const localNow = () => performance.timeOrigin + performance.now();

/** The flash camera: its stream while on; whether the user typed the frame rate (a camera's
 * own then does not overwrite it). */
const camera = { stream: null, fpsTyped: false };
/** The recording under way: {rec, chunks, session, startedAt, cancelled}. */
let recording = null;
/** The recording's start and stop, waiting; the session they are for. */
let timers = [];
let armed = null;
let ticker = null;

// ---------- the session ----------

/** The frame rate typed or read from the camera, checked. */
function fps() {
  const v = Number($('flash-fps').value);
  if ($('flash-fps').value.trim() === '' || !Number.isFinite(v) || v < MIN_FPS || v > MAX_FPS) {
    throw new Error(`the camera's frame rate must be ${MIN_FPS} to ${MAX_FPS} frames per second (most film at 30)`);
  }
  return v;
}

export async function startSession() {
  if (!state.scene) return;
  if (recording) throw new Error('the camera is still recording the last session; start the next one when it stops');
  const rate = fps();
  const id = state.scene.scene_id;
  const t0 = localNow();
  const info = await api('POST', `/api/scenes/${id}/flash-sessions`, {
    unlocated_only: $('flash-unlocated-only').checked,
    symbol_ms: 2000 / rate,
    start_in_ms: Number($('flash-start-in').value),
  });
  const t1 = localNow();
  // the countdown cannot wait for the clock's first round trips: the reply's own time will do
  // until they come (its round trip is long, so any of theirs wins over it)
  if (!clock.measured) clock.add({ at: t1, offset: info.server_time_us / 1000 - (t0 + t1) / 2, rtt: t1 - t0 });
  if (!selected(id)) return;
  localStorage.setItem(sessionKey(id), info.session_id);
  setSession(info);
  const n = info.phones;
  if (!n) {
    messages.say(`No ${info.unlocated_only ? 'unlocated ' : ''}phone is connected to this scene: nothing will flash.`);
    return;
  }
  if (camera.stream) {
    schedule(info);
    messages.say(`${n} phone(s) will flash. The camera records the session by itself: point it at the crowd and hold still.`);
  } else {
    messages.say(`${n} phone(s) will flash. Film the crowd from before they start until after they stop, then choose the clip below ` +
      '(or press “Record with this device’s camera” now).');
  }
}

function setSession(info) {
  state.flash = info;
  render();
  clearInterval(ticker);
  ticker = setInterval(render, TICK_MS);
  updateUploadState();
}

/** Sets an element's text only when it changes: the countdown is redrawn ten times a second,
 * and a screen reader would read the same line again each time it is replaced. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** The session line and the countdown, by the server's clock. */
function render() {
  const f = state.flash;
  const line = $('flash-session');
  const countdown = $('flash-countdown');
  countdown.classList.toggle('recording', Boolean(recording));
  if (!f) {
    setText(line, 'No flash session yet.');
    setText(countdown, '');
    clearInterval(ticker);
    return;
  }
  const who = f.unlocated_only ? 'unlocated phone(s)' : 'phone(s)';
  setText(line, `Flash session ${shortId(f.session_id)}: ${f.phones} ${who} ${clock.now() < f.ends_at_us / 1000 ? 'will flash' : 'flashed'}, ` +
    `slots of ${fmt(f.symbol_us / 1000)} ms (for a camera at ${fmt(2e6 / f.symbol_us)} fps).`);
  const now = clock.now();
  const [from, start, end, until] = [f.film_from_us, f.starts_at_us, f.ends_at_us, f.film_until_us].map((us) => us / 1000);
  const rec = recording ? 'Recording. ' : '';
  let text;
  if (now < from) text = `Flashing starts in ${Math.ceil((start - now) / 1000)} s.${armed === f ? ' The camera records from half a second before.' : ' Start filming now.'}`;
  else if (now < start) text = `${rec}Flashing starts in ${((start - now) / 1000).toFixed(1)} s: filming now.`;
  else if (now < end) text = `${rec}Flashing: ${((end - now) / 1000).toFixed(1)} s left. Hold still.`;
  else if (now < until) text = `${rec}Done flashing; keep filming a moment…`;
  else {
    const next = state.photo?.clip ? 'Mark the reference points on the clip’s still and upload it.' : 'Choose the clip you filmed below.';
    text = recording ? 'Session over; saving the recording…' : `Session over. ${next}`;
    if (!recording) clearInterval(ticker);
  }
  setText(countdown, text);
}

/** A scene opened: flashing offered or not, and the last session started for it brought back. */
export async function flashSceneOpened(scene) {
  flashAvailability(scene);
  if (!scene.location_methods.includes('flash')) return;
  clock.start();
  const id = localStorage.getItem(sessionKey(scene.scene_id));
  if (!id) return;
  try {
    const info = await api('GET', `/api/scenes/${scene.scene_id}/flash-sessions/${id}`);
    if (!selected(scene.scene_id)) return;
    if (clock.now() > info.expires_at_us / 1000) {
      localStorage.removeItem(sessionKey(scene.scene_id));
      return;
    }
    setSession(info);
  } catch (e) {
    // a session gone is simply not brought back; anything else is worth a line
    if (e instanceof ApiError && [403, 404, 410].includes(e.status)) localStorage.removeItem(sessionKey(scene.scene_id));
    else messages.error(e, 'The last flash session');
  }
}

/** Shows the flash controls when the scene locates by flashing (it may be changed while open). */
export function flashAvailability(scene) {
  const on = scene.location_methods.includes('flash');
  $('flash-off').hidden = on;
  $('flash-controls').hidden = !on;
  if (on) clock.start();
}

/** The scene is closed (another chosen, signed out): nothing of its session goes on. */
export function flashSceneClosed() {
  clearTimers();
  if (recording) recording.cancelled = true;
  stopFlashCamera();
  clearInterval(ticker);
  clock.stop();
  state.flash = null;
  render();
}

// ---------- the camera ----------

export async function startFlashCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('this browser cannot use the camera here (it needs HTTPS or localhost); film with another camera and choose the clip below');
  }
  if (typeof MediaRecorder === 'undefined') {
    throw new Error('this browser cannot record video; film with the camera app and choose the clip below');
  }
  stopCamera(); // the photo's: one camera at a time
  stopFlashCamera();
  const typed = camera.fpsTyped ? Number($('flash-fps').value) : NaN;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: {
      facingMode: { ideal: 'environment' },
      width: { ideal: 3840 },
      height: { ideal: 2160 },
      frameRate: { ideal: Number.isFinite(typed) ? typed : DEFAULT_FPS },
    },
  });
  const settings = stream.getVideoTracks()[0]?.getSettings?.() ?? {};
  if (!camera.fpsTyped && Number.isFinite(settings.frameRate) && settings.frameRate > 0) {
    $('flash-fps').value = String(Math.round(Math.min(MAX_FPS, Math.max(MIN_FPS, settings.frameRate)) * 1000) / 1000);
  }
  camera.stream = stream;
  const video = $('flash-video');
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  $('flash-record').disabled = true;
  $('flash-camera-stop').disabled = false;
  const size = `${video.videoWidth} × ${video.videoHeight}, ${fmt(Number($('flash-fps').value))} fps`;
  const f = state.flash;
  if (f && clock.now() < f.starts_at_us / 1000) {
    schedule(f);
    messages.say(`Camera on (${size}). It records the session by itself: point it at the crowd and hold still.`);
  } else {
    messages.say(`Camera on (${size}). Press “Start flashing”: the page records the session by itself.`);
  }
  render();
}

export function stopFlashCamera() {
  if (recording) {
    recording.cancelled = true;
    if (recording.rec.state !== 'inactive') recording.rec.stop();
  }
  clearTimers();
  if (camera.stream) for (const t of camera.stream.getTracks()) t.stop();
  camera.stream = null;
  const video = $('flash-video');
  video.srcObject = null;
  video.hidden = true;
  $('flash-record').disabled = false;
  $('flash-camera-stop').disabled = true;
}

/** The user typed a frame rate: it is theirs, the camera's no longer replaces it. */
export function onFpsInput() {
  camera.fpsTyped = true;
}

function clearTimers() {
  for (const t of timers) clearTimeout(t);
  timers = [];
  armed = null;
}

/** Records `session` when its filming begins (by the server's clock). */
function schedule(session) {
  clearTimers();
  armed = session;
  const wait = session.film_from_us / 1000 - clock.now();
  timers.push(setTimeout(() => messages.run(() => beginRecording(session), undefined, 'Recording'), Math.max(0, wait)));
}

function beginRecording(session) {
  if (!camera.stream || recording || state.flash !== session) return;
  const type = RECORDING_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) ?? '';
  const s = camera.stream.getVideoTracks()[0]?.getSettings?.() ?? {};
  const rate = (s.width || 1920) * (s.height || 1080) * (s.frameRate || DEFAULT_FPS) * BITS_PER_PIXEL;
  const options = { videoBitsPerSecond: Math.round(Math.min(MAX_BITS_PER_S, Math.max(MIN_BITS_PER_S, rate))) };
  if (type) options.mimeType = type;
  const rec = new MediaRecorder(camera.stream, options);
  const r = { rec, chunks: [], session, startedAt: null, askedAt: clock.now(), cancelled: false };
  rec.ondataavailable = (e) => {
    if (e.data?.size) r.chunks.push(e.data);
  };
  // the clip's time 0 is when the recorder really started, which is what the still's time is
  // measured from
  rec.onstart = () => {
    r.startedAt = clock.now();
  };
  rec.onerror = (e) => messages.error(e.error ?? new Error('the camera stopped recording'), 'Recording');
  rec.onstop = () => messages.run(() => finishRecording(r), undefined, 'The recording');
  recording = r;
  rec.start(1000);
  timers.push(setTimeout(() => {
    if (rec.state !== 'inactive') rec.stop();
  }, Math.max(0, session.film_until_us / 1000 - clock.now())));
  render();
}

async function finishRecording(r) {
  if (recording === r) recording = null;
  const blob = new Blob(r.chunks, { type: (r.rec.mimeType || 'video/webm').split(';')[0] });
  if (r.cancelled) {
    render();
    return;
  }
  // the camera is let go once the session is filmed: it drains a phone's battery
  stopFlashCamera();
  render();
  if (!blob.size) throw new Error('the camera recorded nothing; film with the camera app and choose the clip below');
  const started = r.startedAt ?? r.askedAt;
  const middle = (r.session.starts_at_us + r.session.ends_at_us) / 2000;
  const ext = blob.type.includes('mp4') ? 'mp4' : 'webm';
  await setClip(blob, `flash-${shortId(r.session.session_id)}.${ext}`, { stillAt: (middle - started) / 1000, recorded: true });
  updateUploadState();
  render();
}

/** A clip chosen as a file (filmed with another camera). */
export async function chooseClip(file) {
  // without a session the upload waits, and its hint says why (points.js)
  await setClip(file, file.name);
  updateUploadState();
  render();
}

/** What the page records, for tests. */
export function recordingState() {
  return { cameraOn: Boolean(camera.stream), recording: Boolean(recording) };
}

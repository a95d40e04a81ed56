// The operator page: log in, manage scenes, upload and order frames, build the show, drive
// playback, and watch a live preview of what every located phone shows now.
//
// The preview mirrors the server (src/framecache.rs, src/scheduler.rs, src/playback.rs):
// the show's grid is its largest frame's size capped at 512 × 512 cells, every frame is
// resampled onto that grid with image's Triangle filter (reimplemented below), a phone's
// colour is its cell's, and which frame shows at a server instant is computed from the
// timeline exactly as playback.rs does.

import { api, upload, accountToken, setAccountToken, ApiError } from './api.js';
import { drawQr } from './qr.js';
import { SceneMap } from './scenemap.js';

const $ = (id) => document.getElementById(id);

const state = {
  me: null, // {user, grants}
  scenes: [],
  scene: null, // the selected scene
  frames: [], // its frames in order
  show: null, // the last ShowState (or null: no show yet)
  pixels: [], // located positions [{x, y}]
  pixelsTotal: 0,
  presence: null,
  newFrameIds: new Set(),
  map: null,
};

// ---------------------------------------------------------------- messages

function showError(err) {
  const box = $('errors');
  let text;
  if (err instanceof ApiError) {
    text = `${err.message || 'request failed'} (${err.code}${err.status ? ', HTTP ' + err.status : ''})`;
  } else {
    text = String(err?.message ?? err);
  }
  box.textContent = '';
  const p = document.createElement('p');
  p.textContent = text;
  box.append(p);
  if (err instanceof ApiError && err.status === 401 && state.me) loggedOut('Your session ended; log in again.');
}

function say(text) {
  $('errors').textContent = '';
  $('status-line').textContent = text;
}

/** Runs an action, reporting its failure in the error region; resolves to its value or undefined. */
async function run(action, okText) {
  try {
    const value = await action();
    if (okText) say(typeof okText === 'function' ? okText(value) : okText);
    return value;
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// ---------------------------------------------------------------- helpers

/** The frame's image as a Blob. A small helper here: api.js's api() reads replies as JSON or
 *  text, and an <img src> cannot carry the bearer token. Cached: a frame's bytes never change. */
const blobs = new Map();
function frameBlob(sceneId, frameId) {
  if (!blobs.has(frameId)) {
    const p = (async () => {
      const headers = {};
      const token = accountToken();
      if (token) headers.authorization = 'Bearer ' + token;
      const res = await fetch(`/api/scenes/${sceneId}/frames/${frameId}/image`, { headers });
      if (!res.ok) {
        let body = {};
        try {
          body = await res.json();
        } catch {
          // not JSON
        }
        throw new ApiError(res.status, body.error ?? 'http_' + res.status, body.message ?? res.statusText);
      }
      return res.blob();
    })();
    p.catch(() => blobs.delete(frameId));
    blobs.set(frameId, p);
  }
  return blobs.get(frameId);
}

const objectUrls = new Map();
function frameUrl(sceneId, frameId) {
  if (!objectUrls.has(frameId)) {
    const p = frameBlob(sceneId, frameId).then((b) => URL.createObjectURL(b));
    p.catch(() => objectUrls.delete(frameId));
    objectUrls.set(frameId, p);
  }
  return objectUrls.get(frameId);
}

function thumb(sceneId, frameId, alt, className) {
  const img = document.createElement('img');
  img.alt = alt;
  if (className) img.className = className;
  img.decoding = 'async';
  frameUrl(sceneId, frameId).then((u) => (img.src = u), () => (img.alt = alt + ' (preview failed)'));
  return img;
}

const localNow = () => performance.timeOrigin + performance.now();

// Server time: every ShowState carries server_time_us; an offset is measured around each
// call that returns one, and the sample with the shortest round trip of the recent ones wins.
const clock = { samples: [], offset: 0, error: null };
function clockSample(t0, t1, serverUs) {
  if (typeof serverUs !== 'number') return;
  const rtt = t1 - t0;
  clock.samples.push({ offset: serverUs / 1000 - (t0 + t1) / 2, rtt });
  if (clock.samples.length > 12) clock.samples.shift();
  const best = clock.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
  clock.offset = best.offset;
  clock.error = best.rtt / 2;
}
const serverNow = () => localNow() + clock.offset;

/** api() that also measures the clock offset when the reply is a ShowState. */
async function showCall(method, path, body) {
  const t0 = localNow();
  const reply = await api(method, path, body);
  clockSample(t0, localNow(), reply?.server_time_us);
  return reply;
}

function fmtMs(ms) {
  if (ms == null) return '–';
  const s = ms / 1000;
  return s >= 60 ? `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}` : `${s.toFixed(2)} s`;
}

function guessType(file) {
  if (file.type) return file.type;
  const ext = file.name.split('.').pop().toLowerCase();
  return { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp' }[ext] ?? 'application/octet-stream';
}

// ---------------------------------------------------------------- playback maths (playback.rs)

function stateAt(tl, t) {
  return t >= tl.current.effective_ms ? tl.current : tl.previous;
}

function positionAt(pb, t) {
  if (pb.mode === 'stopped') return null;
  if (pb.mode === 'paused') return pb.base_ms;
  if (t < pb.anchor_ms) return null;
  return pb.base_ms + (t - pb.anchor_ms);
}

const totalMs = (show) => show.frames.reduce((s, f) => s + f.duration_ms, 0);

/** Index of the frame at `position` ms into the show, or null. */
function frameAt(show, position) {
  const total = totalMs(show);
  if (total <= 0 || position == null || position < 0) return null;
  let within;
  if (show.loop) within = ((position % total) + total) % total;
  else if (position >= total) return null;
  else within = position;
  let end = 0;
  for (let i = 0; i < show.frames.length; i++) {
    end += show.frames[i].duration_ms;
    if (within < end) return i;
  }
  return null;
}

/** What the show does at server instant t (ms): {mode, position, frame}. */
function showAt(showState, t) {
  t = Math.floor(t);
  const pb = stateAt(showState.timeline, t);
  const position = positionAt(pb, t);
  let frame = null;
  if (pb.mode === 'playing' || pb.mode === 'paused') frame = frameAt(showState.show, position);
  return { mode: pb.mode, position, frame, waiting: pb.mode === 'playing' && position == null };
}

// ---------------------------------------------------------------- grid and rasters (framecache.rs)

const MAX_GRID_CELLS = 512 * 512;
const f32 = Math.fround;

function gridFor(show) {
  let w = 1;
  let h = 1;
  let best = -1;
  for (const f of show.frames) {
    const fw = Math.max(1, f.width);
    const fh = Math.max(1, f.height);
    if (fw * fh >= best) {
      // max_by_key keeps the last of equal maxima
      best = fw * fh;
      w = fw;
      h = fh;
    }
  }
  const cells = w * h;
  if (cells <= MAX_GRID_CELLS) return { w, h };
  const scale = Math.sqrt(MAX_GRID_CELLS / cells);
  return { w: Math.max(1, Math.floor(w * scale)), h: Math.max(1, Math.floor(h * scale)) };
}

/** Grid::cell_of, in f32 like the server. */
function cellOf(grid, x, y, sceneW, sceneH) {
  const cx = Math.floor(Math.min(Math.max(f32(f32(f32(x) / f32(sceneW)) * grid.w), 0), grid.w - 1));
  const cy = Math.floor(Math.min(Math.max(f32(f32(f32(y) / f32(sceneH)) * grid.h), 0), grid.h - 1));
  return cy * grid.w + cx;
}

/** The weights of one output sample of image's resampler (imageops::sample, Triangle). */
function sampleWeights(inSize, outSize) {
  const ratio = f32(inSize / outSize);
  const sratio = ratio < 1 ? 1 : ratio;
  const support = f32(1 * sratio);
  const out = [];
  for (let o = 0; o < outSize; o++) {
    let input = f32(f32(o + 0.5) * ratio);
    let left = Math.floor(f32(input - support));
    left = Math.min(Math.max(left, 0), inSize - 1);
    let right = Math.ceil(f32(input + support));
    right = Math.min(Math.max(right, left + 1), inSize);
    input = f32(input - 0.5);
    const ws = new Float32Array(right - left);
    let sum = 0;
    for (let i = left; i < right; i++) {
      const x = Math.abs(f32(f32(i - input) / sratio));
      const w = x < 1 ? f32(1 - x) : 0;
      ws[i - left] = w;
      sum = f32(sum + w);
    }
    for (let i = 0; i < ws.length; i++) ws[i] = f32(ws[i] / sum);
    out.push({ left, ws });
  }
  return out;
}

/** imageops::resize(rgb, w, h, Triangle): vertical pass to f32, horizontal pass rounded. */
function resizeTriangle(src, sw, sh, dw, dh) {
  if (sw === dw && sh === dh) return src;
  const tmp = new Float32Array(sw * dh * 3);
  for (const [oy, { left, ws }] of sampleWeights(sh, dh).entries()) {
    for (let x = 0; x < sw; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let i = 0; i < ws.length; i++) {
        const k = ((left + i) * sw + x) * 3;
        r = f32(r + f32(src[k] * ws[i]));
        g = f32(g + f32(src[k + 1] * ws[i]));
        b = f32(b + f32(src[k + 2] * ws[i]));
      }
      const o = (oy * sw + x) * 3;
      tmp[o] = r;
      tmp[o + 1] = g;
      tmp[o + 2] = b;
    }
  }
  const out = new Uint8Array(dw * dh * 3);
  const round = (v) => Math.round(Math.min(255, Math.max(0, v))); // FloatNearest, v ≥ 0
  for (const [ox, { left, ws }] of sampleWeights(sw, dw).entries()) {
    for (let y = 0; y < dh; y++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let i = 0; i < ws.length; i++) {
        const k = (y * sw + left + i) * 3;
        r = f32(r + f32(tmp[k] * ws[i]));
        g = f32(g + f32(tmp[k + 1] * ws[i]));
        b = f32(b + f32(tmp[k + 2] * ws[i]));
      }
      const o = (y * dw + ox) * 3;
      out[o] = round(r);
      out[o + 1] = round(g);
      out[o + 2] = round(b);
    }
  }
  return out;
}

async function decodeBitmap(blob) {
  try {
    // the server ignores colour profiles and EXIF orientation, and drops alpha (to_rgb8)
    return await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'none' });
  } catch {
    return createImageBitmap(blob);
  }
}

/** A frame on the show's grid: rgb bytes (3 per cell) and a faint canvas for the map. */
async function buildRaster(sceneId, frameId, grid) {
  const bitmap = await decodeBitmap(await frameBlob(sceneId, frameId));
  const c = document.createElement('canvas');
  c.width = bitmap.width;
  c.height = bitmap.height;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
  const src = new Uint8Array(c.width * c.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    src[j] = rgba[i];
    src[j + 1] = rgba[i + 1];
    src[j + 2] = rgba[i + 2];
  }
  bitmap.close?.();
  const rgb = resizeTriangle(src, c.width, c.height, grid.w, grid.h);
  const full = document.createElement('canvas');
  full.width = grid.w;
  full.height = grid.h;
  const img = full.getContext('2d').createImageData(grid.w, grid.h);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    img.data[i] = rgb[j];
    img.data[i + 1] = rgb[j + 1];
    img.data[i + 2] = rgb[j + 2];
    img.data[i + 3] = 255;
  }
  full.getContext('2d').putImageData(img, 0, 0);
  const faint = document.createElement('canvas');
  faint.width = grid.w;
  faint.height = grid.h;
  const fctx = faint.getContext('2d');
  fctx.globalAlpha = 0.4;
  fctx.drawImage(full, 0, 0);
  return { rgb, faint };
}

const rasters = new Map(); // `${sha}|${w}x${h}` → {value, failed, job}
const RASTER_CACHE = 120;
/** Frames waiting to be decoded and resampled: one at a time, the page breathing in between,
 * so a long show does not freeze Play and Stop while its preview is prepared. */
const buildQueue = [];
let building = false;

async function pumpBuilds() {
  if (building) return;
  building = true;
  while (buildQueue.length) {
    const job = buildQueue.shift();
    try {
      job.entry.value = await buildRaster(...job.args);
    } catch (e) {
      // remembered: a frame that cannot be drawn is not tried (and reported) again and again
      job.entry.failed = true;
      showError(e);
    }
    job.entry.job = null;
    await new Promise((r) => setTimeout(r, 0));
  }
  building = false;
}

/** The frame on the grid, or null while it is being prepared. `now` puts it first in line
 * (the frame showing right now). */
function raster(sceneId, frame, grid, now = false) {
  const key = `${frame.sha256}|${grid.w}x${grid.h}`;
  let entry = rasters.get(key);
  if (entry) {
    rasters.delete(key); // most recently used last
    rasters.set(key, entry);
    if (now && entry.job) {
      buildQueue.splice(buildQueue.indexOf(entry.job), 1);
      buildQueue.unshift(entry.job);
    }
    return entry.value;
  }
  entry = { value: null, failed: false, job: null };
  entry.job = { entry, args: [sceneId, frame.frame_id, grid] };
  rasters.set(key, entry);
  if (now) buildQueue.unshift(entry.job);
  else buildQueue.push(entry.job);
  pumpBuilds();
  while (rasters.size > RASTER_CACHE) {
    const [oldKey, old] = rasters.entries().next().value;
    if (old.job) buildQueue.splice(buildQueue.indexOf(old.job), 1);
    rasters.delete(oldKey);
  }
  return null;
}

// ---------------------------------------------------------------- accounts

function isAdmin() {
  return state.me?.grants.some((g) => g.permission === 'admin' && !g.scene_id);
}

function operates(scene) {
  if (!state.me) return false;
  return (
    isAdmin() ||
    scene.owner_id === state.me.user.user_id ||
    state.me.grants.some((g) => g.permission === 'operator' && (g.scene_id === scene.scene_id || !g.scene_id))
  );
}

async function loggedIn() {
  state.me = await api('GET', '/api/auth/me');
  const u = state.me.user;
  $('whoami').textContent = `Logged in as ${u.display_name}${u.login && u.login !== u.display_name ? ' (' + u.login + ')' : ''}${isAdmin() ? ' · admin' : ''}`;
  $('logout').classList.remove('hidden');
  $('auth-section').classList.add('hidden');
  $('app').classList.remove('hidden');
  await loadScenes();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('scene');
  const pick = state.scenes.find((s) => s.scene_id === wanted) ?? (state.scenes.length === 1 ? state.scenes[0] : null);
  if (pick) await selectScene(pick.scene_id);
}

function loggedOut(message) {
  setAccountToken(null);
  state.me = null;
  deselect();
  $('whoami').textContent = 'Not logged in';
  $('logout').classList.add('hidden');
  $('auth-section').classList.remove('hidden');
  $('app').classList.add('hidden');
  if (message) say(message);
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  run(async () => {
    const session = await api('POST', '/api/auth/login', { login: f.elements.login.value.trim(), password: f.elements.password.value });
    setAccountToken(session.token);
    f.elements.password.value = '';
    await loggedIn();
    return session;
  }, (s) => `Logged in as ${s.user.display_name}.`);
});

$('register-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  const body = { login: f.elements.login.value.trim(), password: f.elements.password.value };
  if (f.elements.display_name.value.trim()) body.display_name = f.elements.display_name.value.trim();
  run(async () => {
    const session = await api('POST', '/api/auth/register', body);
    setAccountToken(session.token);
    f.elements.password.value = '';
    await loggedIn();
    return session;
  }, (s) => `Account ${s.user.login} created; you are logged in.`);
});

$('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/api/auth/logout');
  } catch {
    // the token is forgotten either way
  }
  loggedOut('Logged out.');
});

// ---------------------------------------------------------------- scenes

const NEXT_STATUS = {
  draft: ['draft', 'open', 'ended'],
  open: ['open', 'draft', 'live', 'ended'],
  live: ['live', 'open', 'ended'],
  ended: ['ended'],
};

async function loadScenes() {
  const all = [];
  for (let page = 1; page <= 50; page++) {
    const reply = await api('GET', `/api/scenes?page=${page}&per_page=200`);
    all.push(...reply.items);
    if (all.length >= reply.total || reply.items.length === 0) break;
  }
  state.scenes = all.filter(operates);
  renderScenes();
}

function renderScenes() {
  const list = $('scene-list');
  list.textContent = '';
  if (state.scenes.length === 0) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No scenes yet: create one.';
    list.append(li);
  }
  for (const s of state.scenes) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.sceneId = s.scene_id;
    b.textContent = s.name;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = s.status;
    b.append(badge);
    b.setAttribute('aria-current', String(state.scene?.scene_id === s.scene_id));
    b.addEventListener('click', () => selectScene(s.scene_id));
    li.append(b);
    list.append(li);
  }
}

$('reload-scenes').addEventListener('click', () => run(loadScenes, 'Scenes reloaded.'));

function checkedMethods(form) {
  return [...form.querySelectorAll('input[name="location_methods"]:checked')].map((i) => i.value);
}

/** The scene fields of the create and the edit form (they have the same inputs). */
function sceneBody(f) {
  return {
    name: f.elements.name.value.trim(),
    width: Number(f.elements.width.value),
    height: Number(f.elements.height.value),
    idle_color: f.elements.idle_color.value,
    location_methods: checkedMethods(f),
  };
}

$('scene-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  const body = sceneBody(f);
  run(async () => {
    const scene = await api('POST', '/api/scenes', body);
    state.me = await api('GET', '/api/auth/me'); // now its operator
    await loadScenes();
    await selectScene(scene.scene_id);
    f.elements.name.value = '';
    return scene;
  }, (s) => `Scene “${s.name}” created (draft).`);
});

function fillSceneForms(scene) {
  $('scene-title').textContent = scene.name;
  $('scene-status-badge').textContent = scene.status;
  const f = $('scene-edit-form');
  f.elements.name.value = scene.name;
  f.elements.width.value = scene.width;
  f.elements.height.value = scene.height;
  f.elements.idle_color.value = scene.idle_color;
  for (const box of f.querySelectorAll('input[name="location_methods"]')) box.checked = scene.location_methods.includes(box.value);
  const sel = $('scene-status');
  for (const opt of sel.options) opt.disabled = !NEXT_STATUS[scene.status].includes(opt.value);
  sel.value = scene.status;
}

function sceneChanged(scene) {
  const sizeChanged = state.scene && (state.scene.width !== scene.width || state.scene.height !== scene.height);
  state.scene = scene;
  state.scenes = state.scenes.map((s) => (s.scene_id === scene.scene_id ? scene : s));
  renderScenes();
  fillSceneForms(scene);
  if (sizeChanged) makeMap();
}

$('scene-edit-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  const body = sceneBody(f);
  const id = state.scene.scene_id;
  run(async () => {
    const scene = await api('PATCH', `/api/scenes/${id}`, body);
    sceneChanged(scene);
    return scene;
  }, 'Scene saved.');
});

$('status-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const status = $('scene-status').value;
  if (status === state.scene.status) {
    say(`The scene is already ${status}.`);
    return;
  }
  const id = state.scene.scene_id;
  run(async () => {
    const scene = await api('PATCH', `/api/scenes/${id}`, { status });
    sceneChanged(scene);
    return scene;
  }, (s) => `The scene is now ${s.status}.`);
});

function deselect() {
  state.scene = null;
  state.frames = [];
  state.show = null;
  state.pixels = [];
  state.presence = null;
  clock.samples = [];
  $('scene-panel').classList.add('hidden');
}

async function selectScene(id) {
  deselect();
  const scene = state.scenes.find((s) => s.scene_id === id) ?? (await run(() => api('GET', `/api/scenes/${id}`)));
  if (!scene) return;
  state.scene = scene;
  history.replaceState(null, '', '#scene=' + id);
  renderScenes();
  fillSceneForms(scene);
  $('upload-list').textContent = '';
  state.newFrameIds.clear();
  $('scene-panel').classList.remove('hidden');
  makeMap();
  renderPresence();
  await Promise.all([run(loadJoinCode), run(loadFrames), run(loadShow), run(loadPixels), run(loadPresence)]);
  if (state.show) $('show-loop').checked = state.show.show.loop;
}

async function loadJoinCode() {
  const id = state.scene.scene_id;
  const code = await api('GET', `/api/scenes/${id}/join-code`);
  if (state.scene?.scene_id !== id) return;
  const canvas = $('join-qr');
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.height = Math.round(220 * ratio);
  drawQr(canvas, code.side, code.modules);
  const a = $('join-url');
  a.href = code.url;
  a.textContent = code.url;
}

// ---------------------------------------------------------------- frames

async function loadFrames() {
  const id = state.scene.scene_id;
  const frames = await api('GET', `/api/scenes/${id}/frames`);
  if (state.scene?.scene_id !== id) return;
  state.frames = frames;
  renderFrames();
}

let focusAfter = null; // {frameId, action} to focus once the list is redrawn

function renderFrames() {
  const list = $('frame-list');
  const active = document.activeElement;
  if (!focusAfter && active && list.contains(active)) {
    focusAfter = { frameId: active.closest('li')?.dataset.frameId, action: active.dataset.action };
  }
  list.textContent = '';
  const id = state.scene.scene_id;
  const n = state.frames.length;
  const total = state.frames.reduce((s, f) => s + f.duration_ms, 0);
  $('frame-summary').textContent = n ? `${n} frame${n === 1 ? '' : 's'}, ${fmtMs(total)} in all.` : 'No frames yet.';
  state.frames.forEach((f, i) => {
    const li = document.createElement('li');
    li.dataset.frameId = f.frame_id;
    if (state.newFrameIds.has(f.frame_id)) li.classList.add('new');
    const num = document.createElement('span');
    num.className = 'num';
    num.textContent = i + 1;
    const label = `Frame ${i + 1}`;
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `${f.original_name || '(no name)'} · ${f.width}×${f.height}`;
    const durId = `duration-${f.frame_id}`;
    const durLabel = document.createElement('label');
    durLabel.htmlFor = durId;
    durLabel.textContent = 'Duration (ms)';
    const dur = document.createElement('input');
    dur.type = 'number';
    dur.id = durId;
    dur.className = 'frame-duration';
    dur.dataset.action = 'duration';
    dur.min = 1;
    dur.max = 3600000;
    dur.step = 1;
    dur.value = f.duration_ms;
    dur.setAttribute('aria-label', `${label} duration in ms`);
    dur.addEventListener('change', () => setDuration(f.frame_id, dur));
    durLabel.append(dur);
    const btn = (text, action, aria, onClick, disabled = false) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = text;
      b.dataset.action = action;
      b.className = 'frame-' + action;
      b.setAttribute('aria-label', aria);
      b.disabled = disabled;
      b.addEventListener('click', onClick);
      return b;
    };
    const up = btn('↑ Up', 'up', `Move ${label} up`, () => moveFrame(i, -1), i === 0);
    const down = btn('↓ Down', 'down', `Move ${label} down`, () => moveFrame(i, 1), i === n - 1);
    const del = btn('Delete', 'delete', `Delete ${label}`, () => deleteFrame(f.frame_id));
    del.classList.add('danger');
    li.append(num, thumb(id, f.frame_id, `${label}: ${f.original_name || 'image'}`, 'thumb'), meta, durLabel, up, down, del);
    list.append(li);
  });
  if (focusAfter) {
    const li = [...list.children].find((l) => l.dataset.frameId === focusAfter.frameId);
    let el = li?.querySelector(`[data-action="${focusAfter.action}"]`);
    if (el?.disabled) el = li.querySelector(focusAfter.action === 'up' ? '[data-action="down"]' : '[data-action="up"]');
    if (el && !el.disabled) el.focus();
    focusAfter = null;
  }
  renderShowInfo();
}

async function moveFrame(index, delta) {
  const j = index + delta;
  if (j < 0 || j >= state.frames.length) return;
  const ids = state.frames.map((f) => f.frame_id);
  [ids[index], ids[j]] = [ids[j], ids[index]];
  const id = state.scene.scene_id;
  focusAfter = { frameId: state.frames[index].frame_id, action: delta < 0 ? 'up' : 'down' };
  const ok = await run(async () => {
    const frames = await api('PUT', `/api/scenes/${id}/frames/order`, { frame_ids: ids });
    if (state.scene?.scene_id === id) {
      state.frames = frames;
      renderFrames();
    }
    return true;
  }, `Frame moved to place ${j + 1}.`);
  if (!ok) {
    focusAfter = null;
    await run(loadFrames); // someone else changed the frames: show what is there now
  }
}

async function setDuration(frameId, input) {
  const ms = Number(input.value);
  const frame = state.frames.find((f) => f.frame_id === frameId);
  if (!Number.isInteger(ms) || ms < 1 || ms > 3600000) {
    showError(new Error('A duration is a whole number of milliseconds, 1 to 3600000.'));
    if (frame) input.value = frame.duration_ms;
    return;
  }
  const id = state.scene.scene_id;
  await run(async () => {
    const updated = await api('PATCH', `/api/scenes/${id}/frames/${frameId}`, { duration_ms: ms });
    state.frames = state.frames.map((f) => (f.frame_id === frameId ? updated : f));
    const total = state.frames.reduce((s, f) => s + f.duration_ms, 0);
    $('frame-summary').textContent = `${state.frames.length} frames, ${fmtMs(total)} in all.`;
    renderShowInfo();
  }, `Duration set to ${ms} ms.`);
  if (frame && !state.frames.some((f) => f.frame_id === frameId && f.duration_ms === ms)) input.value = frame.duration_ms;
}

async function deleteFrame(frameId) {
  const id = state.scene.scene_id;
  const index = state.frames.findIndex((f) => f.frame_id === frameId);
  await run(async () => {
    await api('DELETE', `/api/scenes/${id}/frames/${frameId}`);
    await loadFrames();
    const li = $('frame-list').children[Math.min(index, state.frames.length - 1)];
    (li?.querySelector('[data-action="delete"]') ?? $('frame-file')).focus();
  }, 'Frame deleted.');
}

// uploads: several at once (three in flight), one progress bar per file

const uploadQueue = [];
let uploadsRunning = 0;
let reloadTimer = null;

function addFiles(files) {
  if (!state.scene) return;
  const durationText = $('upload-duration').value.trim();
  for (const file of files) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = file.name;
    const bar = document.createElement('progress');
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute('aria-label', `Upload of ${file.name}`);
    const status = document.createElement('span');
    status.className = 'muted';
    status.textContent = 'waiting';
    const thumbs = document.createElement('div');
    thumbs.className = 'thumbs';
    li.append(name, bar, status, thumbs);
    $('upload-list').append(li);
    uploadQueue.push({ file, sceneId: state.scene.scene_id, durationText, bar, status, thumbs, li });
  }
  pumpUploads();
}

function pumpUploads() {
  while (uploadsRunning < 3 && uploadQueue.length) {
    const job = uploadQueue.shift();
    uploadsRunning++;
    uploadOne(job).finally(() => {
      uploadsRunning--;
      pumpUploads();
    });
  }
}

async function uploadOne({ file, sceneId, durationText, bar, status, thumbs, li }) {
  const params = new URLSearchParams({ name: file.name });
  if (durationText) params.set('duration_ms', durationText);
  status.textContent = 'uploading';
  try {
    const frames = await upload('POST', `/api/scenes/${sceneId}/frames?${params}`, file, (p) => {
      bar.value = p;
      status.textContent = p < 1 ? `uploading ${Math.round(p * 100)} %` : 'checking…';
    }, guessType(file));
    bar.value = 1;
    li.classList.add('done');
    status.className = 'ok';
    status.textContent = frames.length === 1 ? 'done: 1 frame' : `done: ${frames.length} frames`;
    frames.forEach((f, i) => thumbs.append(thumb(sceneId, f.frame_id, `${file.name}, frame ${i + 1} of ${frames.length}`)));
    if (state.scene?.scene_id === sceneId) {
      for (const f of frames) state.newFrameIds.add(f.frame_id);
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(() => run(loadFrames), 150);
    }
    say(`${file.name} uploaded: ${frames.length} frame${frames.length === 1 ? '' : 's'}.`);
  } catch (err) {
    li.classList.add('failed');
    status.className = 'error';
    status.textContent = 'failed: ' + (err.message || err.code);
    showError(err instanceof ApiError ? new ApiError(err.status, err.code, `${file.name}: ${err.message}`) : err);
  }
}

$('frame-file').addEventListener('change', (e) => {
  addFiles([...e.target.files]);
  e.target.value = '';
});

const drop = $('frame-drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
  drop.classList.add('over');
});
drop.addEventListener('dragleave', (e) => {
  if (!drop.contains(e.relatedTarget)) drop.classList.remove('over');
});
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const files = [...(e.dataTransfer?.files ?? [])].filter((f) => f.type.startsWith('image/') || /\.(png|jpe?g|gif|webp)$/i.test(f.name));
  if (files.length) addFiles(files);
  else showError(new Error('Drop image files (PNG, JPEG, GIF or WebP).'));
});
// a file dropped beside the zone should not navigate away from the page
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// ---------------------------------------------------------------- show and playback

async function loadShow() {
  const id = state.scene.scene_id;
  try {
    const s = await showCall('GET', `/api/scenes/${id}/show`);
    // a refresh that left before a newer answer arrived must not put the page back a version
    if (state.scene?.scene_id === id && !(state.show?.timeline.version > s.timeline.version)) state.show = s;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && state.scene?.scene_id === id) {
      state.show = null; // no show built yet
    } else throw err;
  }
  renderShowInfo();
}

function renderShowInfo() {
  const s = state.show;
  const range = $('seek-range');
  if (!s) {
    $('show-info').textContent = 'No show yet: upload frames, then build it.';
    $('show-stale').classList.add('hidden');
    range.max = 0;
    return;
  }
  const total = s.total_ms;
  $('show-info').textContent = `Show: ${s.show.frames.length} frame${s.show.frames.length === 1 ? '' : 's'}, ${fmtMs(total)}${s.show.loop ? ', looping' : ''}; version ${s.timeline.version}.`;
  range.max = Math.max(0, total - 1);
  $('seek').max = Math.max(0, total - 1);
  // like the server's preload: every frame of the show on its grid before it plays
  const grid = gridFor(s.show);
  for (const f of s.show.frames.slice(0, RASTER_CACHE)) raster(state.scene.scene_id, f, grid);
  const same =
    s.show.frames.length === state.frames.length &&
    s.show.frames.every((f, i) => f.frame_id === state.frames[i].frame_id && f.duration_ms === state.frames[i].duration_ms);
  $('show-stale').classList.toggle('hidden', same || state.frames.length === 0);
}

$('show-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = state.scene.scene_id;
  run(async () => {
    const s = await staleChecked(id, () =>
      showCall('PUT', `/api/scenes/${id}/show${expectedVersion()}`, { loop: $('show-loop').checked }));
    state.show = s;
    renderShowInfo();
    return s;
  }, (s) => `Show built: ${s.show.frames.length} frames, ${fmtMs(s.total_ms)}. Playback is stopped.`);
});

/** `?expected_version=` the show version this page shows (0: no show yet): if another operator
 *  changed the show since, the server refuses (409, with the show as it is now) instead of
 *  applying a command decided on a stale view. */
function expectedVersion() {
  return `?expected_version=${state.show?.timeline.version ?? 0}`;
}

/** Runs a show command; a 409 for a stale view shows the show as it is now and says so. */
async function staleChecked(id, command) {
  try {
    return await command();
  } catch (err) {
    const current = err instanceof ApiError && err.status === 409 ? err.body?.current : null;
    if (!current || state.scene?.scene_id !== id) throw err;
    state.show = current;
    $('show-loop').checked = current.show.loop;
    renderShowInfo();
    throw new ApiError(409, 'conflict',
      `Someone else changed the show just now (it is at version ${current.timeline.version}); check it and press again.`);
  }
}

async function playback(body, okText) {
  if (!state.scene) return;
  const id = state.scene.scene_id;
  await run(async () => {
    const s = await staleChecked(id, () => showCall('POST', `/api/scenes/${id}/playback${expectedVersion()}`, body));
    if (state.scene?.scene_id === id) state.show = s;
    renderShowInfo();
    return s;
  }, okText);
}

function startIn() {
  const v = Number($('start-in').value);
  return Number.isFinite(v) && v > 0 ? Math.round(v) : undefined;
}

$('play').addEventListener('click', () => {
  const now = state.show ? showAt(state.show, serverNow()) : null;
  if (now?.mode === 'paused') {
    playback({ command: 'resume', start_in_ms: startIn() }, 'Resuming.');
  } else if (now?.mode === 'playing' && !confirm('The show is playing. Restart it from the start for every phone?')) {
    say('The show goes on.');
  } else {
    playback({ command: 'play', start_in_ms: startIn(), from_ms: 0 }, `Playing from the start in ${startIn() ?? 3000} ms.`);
  }
});
$('resume').addEventListener('click', () => playback({ command: 'resume', start_in_ms: startIn() }, 'Resuming.'));
$('pause').addEventListener('click', () => playback({ command: 'pause' }, 'Paused.'));
$('stop').addEventListener('click', () => playback({ command: 'stop' }, 'Stopped.'));

function seekTo(ms) {
  if (!Number.isFinite(ms) || ms < 0) {
    showError(new Error('A position is a number of milliseconds from 0.'));
    return;
  }
  ms = Math.round(ms);
  $('seek').value = ms;
  playback({ command: 'seek', position_ms: ms }, `Seeking to ${ms} ms.`);
}
$('seek-form').addEventListener('submit', (e) => {
  e.preventDefault();
  seekTo(Number($('seek').value));
});
let sliding = false;
const range = $('seek-range');
range.addEventListener('input', () => {
  sliding = true;
  $('seek').value = range.value;
});
range.addEventListener('change', () => {
  sliding = false;
  seekTo(Number(range.value));
});
range.addEventListener('blur', () => (sliding = false));

// ---------------------------------------------------------------- pixels and presence

async function loadPixels() {
  const id = state.scene.scene_id;
  const found = [];
  let total = 0;
  for (let page = 1; page <= 50; page++) {
    // at most 10 000 phones drawn
    const reply = await api('GET', `/api/scenes/${id}/pixels?status=located&page=${page}&per_page=200`);
    total = reply.total;
    for (const p of reply.items) if (p.x != null && p.y != null) found.push({ x: p.x, y: p.y });
    if (page * 200 >= reply.total || reply.items.length === 0) break;
  }
  if (state.scene?.scene_id !== id) return;
  state.pixels = found;
  state.pixelsTotal = total;
}

async function loadPresence() {
  const id = state.scene.scene_id;
  const p = await api('GET', `/api/scenes/${id}/presence`);
  if (state.scene?.scene_id !== id) return;
  state.presence = p;
  renderPresence();
}

function renderPresence() {
  const p = state.presence;
  $('count-connected').textContent = p ? p.connected : '–';
  $('count-located').textContent = p ? p.located : '–';
  $('count-synced').textContent = p ? p.synced : '–';
  const list = $('histogram');
  list.textContent = '';
  if (!p) return;
  const max = Math.max(1, ...p.sync_error_histogram.map((b) => b.count));
  let lower = null;
  for (const b of p.sync_error_histogram) {
    const li = document.createElement('li');
    const label = document.createElement('span');
    label.textContent = b.le_ms != null ? `≤ ${b.le_ms} ms` : `> ${lower} ms`;
    const track = document.createElement('span');
    track.setAttribute('aria-hidden', 'true');
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.display = 'block';
    bar.style.width = `${(b.count / max) * 100}%`;
    if (b.count === 0) bar.style.opacity = '0.25';
    track.append(bar);
    const n = document.createElement('span');
    n.className = 'n';
    n.textContent = b.count;
    li.append(label, track, n);
    li.setAttribute('aria-label', `${label.textContent}: ${b.count} phone${b.count === 1 ? '' : 's'}`);
    list.append(li);
    lower = b.le_ms;
  }
}

// polling: presence every second, the show every 2 s (and the clock offset with it),
// located phones every 3 s; one request of each kind at a time, none while the tab is hidden
const inFlight = new Set();
function poll(kind, fn) {
  if (inFlight.has(kind) || !state.scene || document.hidden) return;
  inFlight.add(kind);
  fn()
    .catch((e) => {
      if (!(e instanceof ApiError) || e.status !== 404) showError(e);
    })
    .finally(() => inFlight.delete(kind));
}
let ticks = 0;
setInterval(() => {
  ticks++;
  poll('presence', loadPresence);
  if (ticks % 2 === 0) poll('show', loadShow);
  // located phones change slowly and cost many pages with a big crowd: every 15 s, or at
  // once when the located count moves
  const located = state.presence?.located;
  if (ticks % 15 === 0 || located !== state.polledLocated) {
    state.polledLocated = located;
    poll('pixels', loadPixels);
  }
}, 1000);

// ---------------------------------------------------------------- the preview

function makeMap() {
  if (!state.scene) return;
  state.map = new SceneMap($('preview'), { width: state.scene.width, height: state.scene.height, background: '#000' });
}

let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => state.map?.resize(), 150);
});

let lastDraw = 0;
let lastInfo = '';
function drawPreview(now) {
  requestAnimationFrame(drawPreview);
  if (!state.scene || !state.map || document.hidden || now - lastDraw < 66) return;
  lastDraw = now;
  const scene = state.scene;
  const t = serverNow();
  let image = null;
  let rgb = null;
  let grid = null;
  let info;
  const s = state.show;
  if (s && s.show.frames.length) {
    const at = showAt(s, t);
    if (at.frame != null) {
      grid = gridFor(s.show);
      const r = raster(scene.scene_id, s.show.frames[at.frame], grid, true);
      if (r) {
        image = r.faint;
        rgb = r.rgb;
      }
    }
    info =
      at.mode === 'stopped'
        ? 'stopped'
        : at.waiting
          ? `${at.mode}, starts in ${fmtMs(stateAt(s.timeline, t).anchor_ms - t)}`
          : at.frame == null
            ? `${at.mode}, past the end (${fmtMs(at.position)})`
            : `${at.mode} · frame ${at.frame + 1} of ${s.show.frames.length} · ${fmtMs(at.position)} of ${fmtMs(s.total_ms)}`;
    if (!sliding && document.activeElement !== range) range.value = at.position ?? 0;
  } else {
    info = 'no show';
  }
  const idle = scene.idle_color;
  const dots = state.pixels.map((p) => {
    let color = idle;
    if (rgb) {
      const c = cellOf(grid, p.x, p.y, scene.width, scene.height) * 3;
      color = `rgb(${rgb[c]},${rgb[c + 1]},${rgb[c + 2]})`;
    }
    return { x: p.x, y: p.y, color };
  });
  state.map.draw(dots, image);
  const shown = state.pixels.length < state.pixelsTotal ? ` (${state.pixels.length} drawn of ${state.pixelsTotal})` : '';
  const text = `${info}. ${state.pixels.length} located phone${state.pixels.length === 1 ? '' : 's'}${shown}. Server clock ${clock.samples.length ? `offset ${Math.round(clock.offset)} ms ± ${Math.round(clock.error)} ms` : 'not measured yet (local clock used)'}.`;
  const playbackText = `Playback: ${info}.`;
  if (text !== lastInfo) {
    lastInfo = text;
    $('preview-info').textContent = text;
    $('playback-state').textContent = playbackText;
  }
}
requestAnimationFrame(drawPreview);

// ---------------------------------------------------------------- start

/** Resumes the saved session; only the server saying it is over (401) logs out: a network
 * error minutes before a show keeps the token and tries again. */
async function resume() {
  try {
    await loggedIn();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      loggedOut('Your session has ended; please log in again.');
    } else {
      showError(err);
      say('Retrying in 5 s…');
      setTimeout(resume, 5000);
    }
  }
}

if (accountToken()) resume();
else loggedOut();

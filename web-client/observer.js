// The observer page: sign in, pick a scene, ask the phones for their QR codes, photograph the
// crowd, mark photo ↔ scene reference points, upload, see what was found, and place or identify
// single phones on the scene map.

import { api, upload, accountToken, setAccountToken, ApiError, sceneIdFromKey } from './api.js';
import { SceneMap } from './scenemap.js';

const $ = (id) => document.getElementById(id);

const COLOR_LOCATED = '#3ddc84';
const COLOR_OTHER = '#ff5c5c';
const COLOR_REF = '#ffd33d';
const COLOR_PHONE = '#c9d1d9';
const COLOR_SELECTED = '#4da3ff';
/** Largest side of the on-screen copy of the photo (the photo itself is sent as it is). */
const MAX_DISPLAY_SIDE = 2048;
/** Pages of 200 fetched for the phone list. */
const MAX_PIXEL_PAGES = 50;

const STATUS_TEXT = {
  located: 'located',
  recorded: 'recorded, not moved',
  forged: 'rejected: not a code of this scene',
  expired: 'rejected: code expired',
  unknown_pixel: 'phone no longer in the scene',
  outside_scene: 'maps outside the scene (check the reference points)',
};

const state = {
  user: null,
  scene: null,
  map: null,
  pixels: [],
  pixelsTotal: 0,
  selected: null, // pixel id
  photo: null, // {blob, name, image, width, height, reencode}
  points: [], // [{px, py, x, y}] (x, y null until known)
  picking: null, // index of the point whose scene position the next map click sets
  pickReturn: false, // picking began at a "Pick on map" button: go back to it afterwards
  result: null, // the last PhotoResult
  stream: null,
  uploading: false,
};

// ---------- messages ----------

function say(text) {
  $('status').textContent = text;
}

function clearError() {
  $('error').textContent = '';
}

function describe(e) {
  if (e instanceof ApiError) return `${e.message} (${e.code}${e.status ? ', HTTP ' + e.status : ''})`;
  return e?.message ?? String(e);
}

function showError(e, what) {
  $('error').textContent = (what ? what + ': ' : '') + describe(e);
}

/** Wraps an event handler: clears the last error, reports a failure, and signs out on 401. */
function handled(what, fn) {
  return async (...args) => {
    clearError();
    try {
      await fn(...args);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && state.user) {
        signedOut();
        $('error').textContent = 'Your session has ended; sign in again.';
        return;
      }
      showError(e, what);
    }
  };
}

const fmt = (v) => (Number.isFinite(v) ? (Math.round(v * 100) / 100).toString() : '?');
const round2 = (v) => Math.round(v * 100) / 100;
const shortId = (id) => (id ? id.slice(0, 8) : '—');

// ---------- accounts ----------

function signedIn(user) {
  state.user = user;
  $('whoami').textContent = `Signed in as ${user.display_name || user.login}`;
  $('logout').hidden = false;
  $('login-section').hidden = true;
  $('scene-section').hidden = false;
}

function signedOut() {
  setAccountToken(null);
  state.user = null;
  state.scene = null;
  stopCamera();
  $('whoami').textContent = '';
  $('logout').hidden = true;
  $('login-section').hidden = false;
  $('scene-section').hidden = true;
  $('workspace').hidden = true;
  $('login-name').focus();
}

async function login(event) {
  event.preventDefault();
  const body = { login: $('login-name').value.trim(), password: $('login-password').value };
  const session = await api('POST', '/api/auth/login', body);
  setAccountToken(session.token);
  $('login-password').value = '';
  signedIn(session.user);
  say(`Signed in as ${session.user.display_name || session.user.login}.`);
  await loadScenes();
}

async function logout() {
  try {
    await api('POST', '/api/auth/logout');
  } catch {
    // the token is dropped either way
  }
  signedOut();
  say('Signed out.');
}

// ---------- scenes ----------

function wantedSceneId() {
  const key = new URLSearchParams(location.search).get('scene');
  return key ? sceneIdFromKey(key.trim()) : null;
}

async function loadScenes() {
  const page = await api('GET', '/api/scenes?per_page=200');
  const scenes = page.items;
  const wanted = state.scene?.scene_id ?? wantedSceneId();
  if (wanted && !scenes.some((s) => s.scene_id === wanted)) {
    try {
      scenes.unshift(await api('GET', `/api/scenes/${wanted}`));
    } catch (e) {
      showError(e, `Scene ${wanted} from the address`);
    }
  }
  const select = $('scene-select');
  select.replaceChildren(new Option(scenes.length ? 'Choose a scene…' : 'No scenes you can see', ''));
  for (const s of scenes) select.add(new Option(`${s.name} (${s.status})`, s.scene_id));
  const pick = scenes.find((s) => s.scene_id === wanted) ?? (scenes.length === 1 ? scenes[0] : null);
  if (pick) {
    select.value = pick.scene_id;
    await openScene(pick.scene_id);
  }
}

async function openScene(sceneId) {
  if (!sceneId) {
    state.scene = null;
    $('workspace').hidden = true;
    $('scene-info').textContent = '';
    return;
  }
  const scene = await api('GET', `/api/scenes/${sceneId}`);
  const changed = state.scene?.scene_id !== scene.scene_id;
  state.scene = scene;
  const url = new URL(location.href);
  url.searchParams.set('scene', scene.scene_id);
  history.replaceState(null, '', url);
  $('scene-info').textContent =
    `${scene.name}: ${fmt(scene.width)} × ${fmt(scene.height)} scene units, ${scene.status}` +
    (scene.venue ? `, ${scene.venue}` : '') + '.';
  $('workspace').hidden = false;
  if (changed) {
    state.selected = null;
    state.result = null;
    state.picking = null;
    renderDetections();
    drawPhoto();
  }
  const canvas = $('scene-map');
  if (!state.map) {
    state.map = new SceneMap(canvas, { width: scene.width, height: scene.height, background: '#1d2630' });
  } else {
    state.map.width = scene.width;
    state.map.height = scene.height;
    state.map.resize();
  }
  renderSelection();
  await loadPixels();
}

// ---------- phones (pixels) ----------

async function loadPixels() {
  if (!state.scene) return;
  const id = state.scene.scene_id;
  const items = [];
  let total = 0;
  for (let page = 1; page <= MAX_PIXEL_PAGES; page++) {
    const reply = await api('GET', `/api/scenes/${id}/pixels?per_page=200&page=${page}`);
    items.push(...reply.items);
    total = reply.total;
    if (items.length >= total || reply.items.length === 0) break;
  }
  if (state.scene?.scene_id !== id) return; // another scene was opened meanwhile
  state.pixels = items;
  state.pixelsTotal = total;
  renderPixels();
  renderSelection();
  drawMap();
}

function pixelText(p) {
  const where = p.x != null && p.y != null ? ` at (${fmt(p.x)}, ${fmt(p.y)})` : '';
  const how = p.method ? ` by ${p.method}` : '';
  return `Phone ${shortId(p.pixel_id)}: ${p.status}${where}${how}`;
}

function renderPixels() {
  const filter = $('pixel-filter').value;
  const shown = state.pixels.filter((p) => filter === 'all' || p.status === filter);
  const list = $('pixel-list');
  const items = shown.map((p) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.pixelId = p.pixel_id;
    b.textContent = pixelText(p);
    b.setAttribute('aria-pressed', String(p.pixel_id === state.selected));
    li.append(b);
    return li;
  });
  list.replaceChildren(...items);
  const located = state.pixels.filter((p) => p.status === 'located').length;
  let text = `${state.pixelsTotal} phone(s) in the scene, ${located} located; ${shown.length} listed.`;
  if (state.pixels.length < state.pixelsTotal) text += ` Only the first ${state.pixels.length} were loaded.`;
  $('pixel-count').textContent = text;
}

function selectedPixel() {
  return state.pixels.find((p) => p.pixel_id === state.selected) ?? null;
}

function selectPixel(id) {
  state.selected = id;
  state.picking = null;
  for (const b of $('pixel-list').querySelectorAll('button')) {
    b.setAttribute('aria-pressed', String(b.dataset.pixelId === id));
  }
  const p = selectedPixel();
  $('place-x').value = p?.x != null ? round2(p.x) : '';
  $('place-y').value = p?.y != null ? round2(p.y) : '';
  renderPoints();
  renderSelection();
  drawMap();
  if (p) say(`${pixelText(p)} selected. Click the scene map (or enter x and y) to place it.`);
}

function renderSelection() {
  const p = selectedPixel();
  const has = Boolean(p);
  for (const id of ['place-x', 'place-y', 'place', 'identify', 'deselect']) $(id).disabled = !has;
  $('selected-pixel').textContent = has
    ? `Selected: ${pixelText(p)}.`
    : 'No phone selected. Choose one in the list, then click the map to place it.';
  renderMapMode();
}

function renderMapMode() {
  let text;
  if (state.picking != null) text = `Clicking the map sets the scene position of reference point ${state.picking + 1} (Escape cancels).`;
  else if (selectedPixel()) text = `Clicking the map places phone ${shortId(state.selected)}.`;
  else text = 'Select a phone to place it with a click, or press “Pick on map” on a reference point.';
  $('map-mode').textContent = text;
}

async function placePixel(x, y) {
  const p = selectedPixel();
  if (!p || !state.scene) return;
  const reply = await api('PUT', `/api/scenes/${state.scene.scene_id}/pixels/${p.pixel_id}/position`, { x, y });
  let text = reply?.placed
    ? `Phone ${shortId(p.pixel_id)} placed at (${fmt(x)}, ${fmt(y)}).`
    : `Phone ${shortId(p.pixel_id)}: the observation was recorded but did not move it.`;
  if (reply?.contradiction) text += ' ' + contradictionText(reply.contradiction);
  say(text);
  await loadPixels();
  $('place-x').value = round2(x);
  $('place-y').value = round2(y);
}

async function identify() {
  const p = selectedPixel();
  if (!p || !state.scene) return;
  await api('POST', `/api/scenes/${state.scene.scene_id}/pixels/${p.pixel_id}/identify`);
  say(`Phone ${shortId(p.pixel_id)} is flashing for a few seconds.`);
}

async function askForQrCodes() {
  if (!state.scene) return;
  const unlocatedOnly = $('qr-unlocated-only').checked;
  const reply = await api('POST', `/api/scenes/${state.scene.scene_id}/qr-codes`, { unlocated_only: unlocatedOnly });
  const n = reply?.asked ?? 0;
  say(n
    ? `Asked ${n} phone(s) to show their QR codes. Take the photo now.`
    : `No ${unlocatedOnly ? 'unlocated ' : ''}phone is connected to this scene right now.`);
}

// ---------- scene map ----------

function drawMap() {
  const map = state.map;
  if (!map || !state.scene) return;
  const dots = [];
  const byPhoto = new Set(
    (state.result?.detections ?? []).filter((d) => d.status === 'located' && d.pixel_id).map((d) => d.pixel_id),
  );
  for (const p of state.pixels) {
    if (p.x == null || p.y == null || p.status === 'kicked' || p.pixel_id === state.selected) continue;
    dots.push({ x: p.x, y: p.y, color: byPhoto.has(p.pixel_id) ? COLOR_LOCATED : COLOR_PHONE });
  }
  // detections located by the last photo whose pixel is not (yet) in the list
  for (const d of state.result?.detections ?? []) {
    if (d.status !== 'located' || !d.scene) continue;
    if (state.pixels.some((p) => p.pixel_id === d.pixel_id && p.x != null)) continue;
    dots.push({ x: d.scene[0], y: d.scene[1], color: COLOR_LOCATED });
  }
  state.points.forEach((pt, i) => {
    if (pt.x == null || pt.y == null) return;
    dots.push({ x: pt.x, y: pt.y, color: COLOR_REF, ring: i === state.picking ? '#fff' : '#8a6d00', label: `P${i + 1}` });
  });
  const sel = selectedPixel();
  if (sel?.x != null && sel?.y != null) {
    dots.push({ x: sel.x, y: sel.y, color: '#fff', ring: COLOR_SELECTED, label: shortId(sel.pixel_id) });
  }
  map.draw(dots);
}

const onMapClick = handled('Scene map', async (event) => {
  if (!state.map) return;
  const { x, y } = state.map.toScene(event);
  if (state.picking != null && state.points[state.picking]) {
    const i = state.picking;
    state.points[i].x = round2(x);
    state.points[i].y = round2(y);
    state.picking = null;
    renderPoints();
    drawPhoto();
    drawMap();
    say(`Reference point ${i + 1} is at scene (${fmt(x)}, ${fmt(y)}).`);
    if (state.pickReturn) $('points').querySelectorAll('.point-pick')[i]?.focus();
    state.pickReturn = false;
    return;
  }
  if (selectedPixel()) {
    await placePixel(round2(x), round2(y));
    return;
  }
  say('Select a phone in the list first, or press “Pick on map” on a reference point.');
});

// ---------- camera and photo ----------

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('this browser cannot use the camera here (it needs HTTPS or localhost); choose a photo file instead');
  }
  stopCamera();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: { facingMode: { ideal: 'environment' }, width: { ideal: 3840 }, height: { ideal: 2160 } },
  });
  state.stream = stream;
  const video = $('camera-video');
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  $('camera-capture').disabled = false;
  $('camera-stop').disabled = false;
  say(`Camera on (${video.videoWidth} × ${video.videoHeight}). Press “Capture photo”.`);
  $('camera-capture').focus();
}

function stopCamera() {
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  state.stream = null;
  const video = $('camera-video');
  video.srcObject = null;
  video.hidden = true;
  $('camera-capture').disabled = true;
  $('camera-stop').disabled = true;
}

function canvasBlob(canvas, type, quality) {
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the image could not be encoded'))), type, quality),
  );
}

async function capture() {
  const video = $('camera-video');
  if (!state.stream || !video.videoWidth) throw new Error('the camera is not ready yet');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await canvasBlob(canvas, 'image/jpeg', 0.92);
  stopCamera();
  await setPhoto(blob, 'camera.jpg');
}

/**
 * EXIF orientation of a JPEG (1 when none). Browsers show photos upright, but the server reads
 * the stored pixels; a rotated photo is therefore re-encoded upright before it is sent, so the
 * points marked on screen and the outlines coming back are in the same pixels.
 */
async function jpegOrientation(blob) {
  try {
    const v = new DataView(await blob.slice(0, 128 * 1024).arrayBuffer());
    if (v.getUint16(0) !== 0xffd8) return 1;
    let off = 2;
    while (off + 4 <= v.byteLength) {
      const marker = v.getUint16(off);
      const len = v.getUint16(off + 2);
      if ((marker & 0xff00) !== 0xff00 || marker === 0xffda) break;
      if (marker === 0xffe1 && v.getUint32(off + 4) === 0x45786966) {
        const tiff = off + 10;
        const little = v.getUint16(tiff) === 0x4949;
        const ifd = tiff + v.getUint32(tiff + 4, little);
        const n = v.getUint16(ifd, little);
        for (let i = 0; i < n; i++) {
          const e = ifd + 2 + i * 12;
          if (v.getUint16(e, little) === 0x0112) return v.getUint16(e + 8, little);
        }
        return 1;
      }
      off += 2 + len;
    }
  } catch {
    // truncated or odd: treat as upright
  }
  return 1;
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(blob);
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new Error('this file cannot be shown as an image here; use a JPEG or PNG photo'));
    };
    img.src = url;
  });
}

async function setPhoto(blob, name) {
  const image = await loadImage(blob);
  if (state.photo) URL.revokeObjectURL(state.photo.image.src);
  let reencode = !['image/jpeg', 'image/png'].includes(blob.type);
  if (blob.type === 'image/jpeg' && (await jpegOrientation(blob)) !== 1) reencode = true;
  state.photo = { blob, name, image, width: image.naturalWidth, height: image.naturalHeight, reencode };
  state.result = null;
  state.picking = null;
  const kept = state.points.length;
  renderDetections();
  renderPoints();
  $('photo-canvas').hidden = false;
  drawPhoto();
  drawMap();
  $('photo-info').textContent =
    `Photo: ${name}, ${image.naturalWidth} × ${image.naturalHeight} pixels, ${(blob.size / 1e6).toFixed(1)} MB.`;
  say(`Photo ready. ${kept ? `The ${kept} reference point(s) from before were kept; check them against this photo.` : 'Now click the photo to mark reference points.'}`);
}

/** The bytes to send: the file itself, or an upright JPEG when it is rotated or not JPEG/PNG. */
async function photoForUpload() {
  const p = state.photo;
  if (!p.reencode) return { blob: p.blob, name: p.name };
  const canvas = document.createElement('canvas');
  canvas.width = p.width;
  canvas.height = p.height;
  canvas.getContext('2d').drawImage(p.image, 0, 0);
  const blob = await canvasBlob(canvas, 'image/jpeg', 0.95);
  return { blob, name: p.name.replace(/\.[^.]*$/, '') + '.jpg' };
}

function drawPhoto() {
  const canvas = $('photo-canvas');
  const p = state.photo;
  if (!p) return;
  const ds = Math.min(1, MAX_DISPLAY_SIDE / Math.max(p.width, p.height));
  const w = Math.round(p.width * ds);
  const h = Math.round(p.height * ds);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext('2d');
  ctx.drawImage(p.image, 0, 0, w, h);
  // canvas pixels per CSS pixel, so strokes and labels keep a readable size on screen
  const box = canvas.getBoundingClientRect();
  const k = box.width ? w / box.width : 1;

  const r = state.result;
  if (r) {
    // outlines are in the pixels the server decoded; scale in case they differ from ours
    const sx = (p.width / (r.width || p.width)) * ds;
    const sy = (p.height / (r.height || p.height)) * ds;
    r.detections.forEach((d, i) => {
      const located = d.status === 'located';
      ctx.beginPath();
      d.outline.forEach(([x, y], j) => (j ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
      ctx.closePath();
      ctx.lineWidth = 3 * k;
      ctx.setLineDash(located ? [] : [6 * k, 4 * k]);
      ctx.strokeStyle = located ? COLOR_LOCATED : COLOR_OTHER;
      ctx.stroke();
      ctx.setLineDash([]);
      const [x0, y0] = d.outline[0];
      label(ctx, String(i + 1), x0 * sx, y0 * sy - 4 * k, k, located ? COLOR_LOCATED : COLOR_OTHER);
    });
  }

  state.points.forEach((pt, i) => {
    if (!Number.isFinite(pt.px) || !Number.isFinite(pt.py)) return;
    const x = pt.px * ds;
    const y = pt.py * ds;
    const rad = 7 * k;
    ctx.beginPath();
    ctx.arc(x, y, rad, 0, 2 * Math.PI);
    ctx.fillStyle = COLOR_REF;
    ctx.fill();
    ctx.lineWidth = 2 * k;
    ctx.strokeStyle = i === state.picking ? '#fff' : '#000';
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x - rad * 2, y);
    ctx.lineTo(x + rad * 2, y);
    ctx.moveTo(x, y - rad * 2);
    ctx.lineTo(x, y + rad * 2);
    ctx.lineWidth = 1 * k;
    ctx.stroke();
    label(ctx, `P${i + 1}`, x + rad + 3 * k, y - rad, k, COLOR_REF);
  });
}

function label(ctx, text, x, y, k, color) {
  ctx.font = `bold ${Math.round(14 * k)}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width;
  ctx.fillStyle = 'rgba(0,0,0,0.75)';
  ctx.fillRect(x - 2 * k, y - 14 * k, w + 4 * k, 18 * k);
  ctx.fillStyle = color;
  ctx.fillText(text, x, y);
}

function onPhotoClick(event) {
  const p = state.photo;
  if (!p) return;
  const box = event.currentTarget.getBoundingClientRect();
  const px = Math.round(((event.clientX - box.left) / box.width) * p.width);
  const py = Math.round(((event.clientY - box.top) / box.height) * p.height);
  addPoint(Math.max(0, Math.min(p.width, px)), Math.max(0, Math.min(p.height, py)));
  say(`Point ${state.points.length} added at photo (${px}, ${py}). Type its scene x and y, or click the scene map.`);
}

// ---------- reference points ----------

function addPoint(px, py) {
  state.points.push({ px, py, x: null, y: null });
  state.picking = state.points.length - 1; // the next map click gives its scene position
  state.pickReturn = false;
  renderPoints();
  drawPhoto();
  drawMap();
}

function numberInput(labelText, value, cls, i, extra = {}) {
  const id = `point-${i}-${cls}`;
  const label = document.createElement('label');
  label.htmlFor = id;
  label.append(labelText);
  const input = document.createElement('input');
  Object.assign(input, { type: 'number', id, step: 'any', inputMode: 'decimal', className: `point-${cls}`, ...extra });
  input.value = value ?? '';
  input.dataset.index = i;
  input.dataset.field = cls;
  label.append(input);
  return label;
}

function renderPoints() {
  const list = $('points');
  const focused = document.activeElement?.id;
  const items = state.points.map((pt, i) => {
    const li = document.createElement('li');
    const fs = document.createElement('fieldset');
    const complete = pointComplete(pt);
    fs.className = complete ? '' : 'incomplete';
    const legend = document.createElement('legend');
    legend.textContent = `Point ${i + 1}${complete ? '' : ' (needs its scene x and y)'}`;
    const photoRow = document.createElement('div');
    photoRow.className = 'row';
    photoRow.append(
      numberInput('Photo x (px)', pt.px, 'px', i, { min: 0 }),
      numberInput('Photo y (px)', pt.py, 'py', i, { min: 0 }),
    );
    const sceneRow = document.createElement('div');
    sceneRow.className = 'row';
    sceneRow.append(numberInput('Scene x', pt.x, 'x', i), numberInput('Scene y', pt.y, 'y', i));
    const buttons = document.createElement('div');
    buttons.className = 'row';
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'point-pick';
    pick.dataset.index = i;
    pick.textContent = 'Pick on map';
    pick.setAttribute('aria-pressed', String(state.picking === i));
    pick.setAttribute('aria-label', `Pick on map for point ${i + 1}`);
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'point-remove';
    remove.dataset.index = i;
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove point ${i + 1}`);
    buttons.append(pick, remove);
    fs.append(legend, photoRow, sceneRow, buttons);
    li.append(fs);
    return li;
  });
  list.replaceChildren(...items);
  if (focused && $(focused) && list.contains($(focused))) $(focused).focus();
  updateUploadState();
  renderMapMode();
}

function pointComplete(pt) {
  return [pt.px, pt.py, pt.x, pt.y].every((v) => Number.isFinite(v));
}

function updateUploadState() {
  const complete = state.points.filter(pointComplete).length;
  const incomplete = state.points.length - complete;
  let hint;
  if (!state.photo) hint = 'Take or choose a photo first.';
  else if (complete < 4) hint = `At least 4 reference points are needed; ${complete} complete so far.`;
  else if (incomplete) hint = `${incomplete} point(s) still need a scene x and y (or remove them).`;
  else hint = `${complete} reference points: ready to upload.`;
  $('points-hint').textContent = hint;
  $('add-point').disabled = !state.photo;
  $('clear-points').disabled = state.points.length === 0;
  $('upload').disabled = !state.photo || complete < 4 || incomplete > 0 || state.uploading;
}

function onPointInput(event) {
  const input = event.target;
  if (!input.dataset?.field) return;
  const pt = state.points[Number(input.dataset.index)];
  if (!pt) return;
  const v = input.value.trim() === '' ? null : Number(input.value);
  pt[input.dataset.field] = Number.isFinite(v) ? v : null;
  if (input.dataset.field === 'x' || input.dataset.field === 'y') state.picking = null;
  const fs = input.closest('fieldset');
  const complete = pointComplete(pt);
  fs.className = complete ? '' : 'incomplete';
  fs.querySelector('legend').textContent =
    `Point ${Number(input.dataset.index) + 1}${complete ? '' : ' (needs its scene x and y)'}`;
  for (const b of $('points').querySelectorAll('.point-pick')) {
    b.setAttribute('aria-pressed', String(Number(b.dataset.index) === state.picking));
  }
  updateUploadState();
  renderMapMode();
  drawPhoto();
  drawMap();
}

function onPointsClick(event) {
  const button = event.target.closest('button');
  if (!button) return;
  const i = Number(button.dataset.index);
  if (button.classList.contains('point-remove')) {
    state.points.splice(i, 1);
    if (state.picking === i) state.picking = null;
    else if (state.picking > i) state.picking -= 1;
    renderPoints();
    drawPhoto();
    drawMap();
    say(`Point ${i + 1} removed.`);
    const next = $('points').querySelectorAll('.point-remove')[Math.min(i, state.points.length - 1)];
    (next ?? $('add-point')).focus();
  } else if (button.classList.contains('point-pick')) {
    state.picking = state.picking === i ? null : i;
    renderPoints();
    drawPhoto();
    drawMap();
    if (state.picking != null) {
      state.pickReturn = true;
      say(`Click the scene map where point ${i + 1} is.`);
      $('scene-map').scrollIntoView({ block: 'center', behavior: 'smooth' });
    }
  }
}

// ---------- upload and detections ----------

async function uploadPhoto() {
  if (!state.photo || !state.scene) return;
  const points = state.points.filter(pointComplete).map(({ px, py, x, y }) => ({ px, py, x, y }));
  if (points.length < 4) throw new Error('at least 4 reference points with scene positions are needed');
  state.uploading = true;
  updateUploadState();
  const progress = $('upload-progress');
  const percent = $('upload-percent');
  progress.value = 0;
  percent.textContent = '0 %';
  try {
    const { blob, name } = await photoForUpload();
    const form = new FormData();
    form.append('points', JSON.stringify(points));
    form.append('photo', blob, name);
    say('Uploading the photo…');
    let processing = false;
    const result = await upload('POST', `/api/scenes/${state.scene.scene_id}/photos`, form, (f) => {
      progress.value = f;
      percent.textContent = `${Math.round(f * 100)} %`;
      if (f >= 1 && !processing) {
        processing = true;
        say('Uploaded; the server is looking for QR codes…');
      }
    });
    state.result = result;
    renderDetections();
    drawPhoto();
    say(`Photo done: ${result.detections.length} code(s) found, ${result.located} phone(s) located, ${result.rejected} rejected.`);
    await loadPixels();
  } finally {
    state.uploading = false;
    updateUploadState();
  }
}

function contradictionText(c) {
  return `It disagrees with its earlier position (${fmt(c.previous_x)}, ${fmt(c.previous_y)}) by ${c.previous_method}, ${fmt(c.distance)} units away: check it.`;
}

function renderDetections() {
  const box = $('detections');
  const r = state.result;
  const summary = document.createElement('p');
  summary.id = 'detections-summary';
  if (!r) {
    summary.className = 'muted';
    summary.textContent = 'No photo uploaded yet.';
    box.replaceChildren(summary);
    return;
  }
  summary.textContent = `${r.detections.length} QR code(s) found in the ${r.width} × ${r.height} photo: ` +
    `${r.located} phone(s) located, ${r.rejected} rejected.`;
  if (!r.detections.length) {
    const tip = document.createElement('p');
    tip.className = 'hint';
    tip.textContent = 'No codes were found. Ask the phones to show their codes, get closer or zoom in, and hold still.';
    box.replaceChildren(summary, tip);
    return;
  }
  const legend = document.createElement('ul');
  legend.className = 'legend';
  legend.setAttribute('aria-label', 'Outline colours');
  legend.innerHTML =
    '<li><span class="swatch located" aria-hidden="true"></span>located (solid green)</li>' +
    '<li><span class="swatch other" aria-hidden="true"></span>not located (dashed red)</li>';
  const table = document.createElement('table');
  table.id = 'detections-table';
  table.innerHTML =
    '<caption class="visually-hidden">QR codes found in the photo</caption>' +
    '<thead><tr><th scope="col">#</th><th scope="col">Status</th><th scope="col">Phone</th>' +
    '<th scope="col">Scene position</th><th scope="col">Note</th></tr></thead>';
  const body = document.createElement('tbody');
  r.detections.forEach((d, i) => {
    const tr = document.createElement('tr');
    tr.dataset.status = d.status;
    const cells = [
      String(i + 1),
      STATUS_TEXT[d.status] ?? d.status,
      shortId(d.pixel_id),
      d.scene ? `(${fmt(d.scene[0])}, ${fmt(d.scene[1])})` : '—',
      d.contradiction ? contradictionText(d.contradiction) : '',
    ];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.children[1].className = d.status === 'located' ? 'ok' : 'error';
    body.append(tr);
  });
  table.append(body);
  const wrap = document.createElement('div');
  wrap.className = 'table-wrap';
  wrap.append(table);
  box.replaceChildren(summary, legend, wrap);
}

// ---------- wiring ----------

function bind() {
  $('login-form').addEventListener('submit', handled('Sign in', login));
  $('logout').addEventListener('click', handled('Sign out', logout));
  $('scene-select').addEventListener('change', handled('Scene', (e) => openScene(e.target.value)));
  $('scene-reload').addEventListener('click', handled('Scenes', loadScenes));
  $('ask-qr').addEventListener('click', handled('Asking for QR codes', askForQrCodes));
  $('camera-start').addEventListener('click', handled('Camera', startCamera));
  $('camera-capture').addEventListener('click', handled('Capture', capture));
  $('camera-stop').addEventListener('click', () => {
    stopCamera();
    say('Camera off.');
  });
  $('photo-file').addEventListener('change', handled('Photo', async (e) => {
    const file = e.target.files?.[0];
    if (file) await setPhoto(file, file.name);
  }));
  $('photo-canvas').addEventListener('click', onPhotoClick);
  $('add-point').addEventListener('click', () => {
    const p = state.photo;
    if (!p) return;
    addPoint(Math.round(p.width / 2), Math.round(p.height / 2));
    say(`Point ${state.points.length} added in the middle of the photo; edit its photo and scene coordinates.`);
    $(`point-${state.points.length - 1}-px`)?.focus();
  });
  $('clear-points').addEventListener('click', () => {
    state.points = [];
    state.picking = null;
    renderPoints();
    drawPhoto();
    drawMap();
    say('All reference points removed.');
  });
  $('points').addEventListener('input', onPointInput);
  $('points').addEventListener('click', onPointsClick);
  $('upload').addEventListener('click', handled('Upload', uploadPhoto));
  $('scene-map').addEventListener('click', onMapClick);
  $('pixel-filter').addEventListener('change', renderPixels);
  $('pixel-refresh').addEventListener('click', handled('Phones', async () => {
    await loadPixels();
    say('Phone list refreshed.');
  }));
  $('pixel-list').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-pixel-id]');
    if (b) selectPixel(b.getAttribute('aria-pressed') === 'true' ? null : b.dataset.pixelId);
  });
  $('deselect').addEventListener('click', () => {
    selectPixel(null);
    say('No phone selected.');
  });
  $('place').addEventListener('click', handled('Placing the phone', async () => {
    const x = Number($('place-x').value);
    const y = Number($('place-y').value);
    if ($('place-x').value === '' || $('place-y').value === '' || !Number.isFinite(x) || !Number.isFinite(y)) {
      throw new Error('enter the scene x and y first');
    }
    await placePixel(x, y);
  }));
  $('identify').addEventListener('click', handled('Identify', identify));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.picking != null) {
      state.picking = null;
      renderPoints();
      drawPhoto();
      drawMap();
      say('Picking cancelled.');
    }
  });
  let pending = 0;
  window.addEventListener('resize', () => {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(() => {
      if (state.map && !$('workspace').hidden) {
        state.map.resize();
        drawMap();
      }
      drawPhoto();
    });
  });
  window.addEventListener('pagehide', stopCamera);
}

async function start() {
  bind();
  updateUploadState();
  renderMapMode();
  await resumeSession();
}

/** Resumes the saved session, if any. */
async function resumeSession() {
  if (!accountToken()) {
    signedOut();
    return;
  }
  try {
    const me = await api('GET', '/api/auth/me');
    signedIn(me.user);
  } catch (e) {
    // only the server saying the session is over logs out; a network error keeps the token
    if (e instanceof ApiError && e.status === 401) {
      signedOut();
    } else {
      showError(e, 'Checking the session (retrying in 5 s)');
      setTimeout(resumeSession, 5000);
    }
    return;
  }
  await handled('Scenes', loadScenes)();
}

start();

// The observer's phones and scene map: the list of the scene's phones (read once, then kept
// current by the live stream), choosing one, placing it with a tap on the map or by its
// coordinates, making it flash, asking the phones for their QR codes; and the map itself,
// with the phones, the photo's detections and the reference points on it.

import { api } from '../api.js';
import { PixelStore } from '../pixels.js';
import { $, state, messages, fmt, round2, shortId, COLOR_LOCATED, COLOR_PHONE, COLOR_REF, COLOR_SELECTED } from './state.js';
import { contradictionText } from './detections.js';
import { drawPhoto } from './photo.js';
import { renderPoints } from './points.js';

/** Joins are not pushed (only counted): the list is read again when the count of connected
 * phones grows, at most this often, so a crowd arriving is one read every few seconds. */
const RELOAD_EVERY_MS = 5000;

let lastReload = 0;
let reloadTimer = null;
let renderPending = false;

/** A fresh store for the open scene (every phone, whatever its status). */
export function newPixels(sceneId) {
  clearTimeout(reloadTimer);
  reloadTimer = null;
  state.pixels = new PixelStore(sceneId);
}

/** Reads the scene's phones again (on opening, on `resync`, after a reconnect). */
export async function reloadPixels() {
  const store = state.pixels;
  if (!store) return;
  lastReload = Date.now();
  if (await store.reload() && store === state.pixels) render();
}

/** The count of connected phones grew: a phone may have joined. Reads the list again, at
 * most once every RELOAD_EVERY_MS. */
export function reloadSoon() {
  if (reloadTimer) return;
  const wait = Math.max(0, lastReload + RELOAD_EVERY_MS - Date.now());
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    messages.run(reloadPixels, undefined, 'Phones');
  }, wait);
}

/** A `pixel` event: a phone placed, moved or removed. */
export function pixelChanged(change) {
  state.pixels?.apply(change);
  // a photo can place hundreds of phones at once: one redraw for all of them
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

function render() {
  renderPixels();
  renderSelection();
  drawMap();
}

function pixelText(p) {
  const where = p.x != null && p.y != null ? ` at (${fmt(p.x)}, ${fmt(p.y)})` : '';
  const how = p.method ? ` by ${p.method}` : '';
  return `Phone ${shortId(p.pixel_id)}: ${p.status}${where}${how}`;
}

export function renderPixels() {
  const filter = $('pixel-filter').value;
  const all = [...(state.pixels?.values() ?? [])];
  const shown = all.filter((p) => filter === 'all' || p.status === filter);
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
  // a redraw pushed by the stream keeps the keyboard where it was
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.pixelId : null;
  list.replaceChildren(...items);
  if (focused) list.querySelector(`[data-pixel-id="${focused}"]`)?.focus();
  const located = all.filter((p) => p.status === 'located').length;
  const total = Math.max(state.pixels?.total ?? 0, all.length);
  let text = `${total} phone(s) in the scene, ${located} located; ${shown.length} listed.`;
  if (all.length < total) text += ` Only the first ${all.length} were loaded.`;
  $('pixel-count').textContent = text;
}

function selectedPixel() {
  return (state.selected && state.pixels?.get(state.selected)) ?? null;
}

export function selectPixel(id) {
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
  if (p) messages.say(`${pixelText(p)} selected. Click the scene map (or enter x and y) to place it.`);
}

export function renderSelection() {
  const p = selectedPixel();
  const has = Boolean(p);
  for (const id of ['place-x', 'place-y', 'place', 'identify', 'deselect']) $(id).disabled = !has;
  $('selected-pixel').textContent = has
    ? `Selected: ${pixelText(p)}.`
    : 'No phone selected. Choose one in the list, then click the map to place it.';
  renderMapMode();
}

export function renderMapMode() {
  let text;
  if (state.picking != null) text = `Clicking the map sets the scene position of reference point ${state.picking + 1} (Escape cancels).`;
  else if (selectedPixel()) text = `Clicking the map places phone ${shortId(state.selected)}.`;
  else text = 'Select a phone to place it with a click, or press “Pick on map” on a reference point.';
  $('map-mode').textContent = text;
}

export async function placePixel(x, y) {
  const p = selectedPixel();
  if (!p || !state.scene) return;
  const id = state.scene.scene_id;
  const reply = await api('PUT', `/api/scenes/${id}/pixels/${p.pixel_id}/position`, { x, y });
  let text = reply?.placed
    ? `Phone ${shortId(p.pixel_id)} placed at (${fmt(x)}, ${fmt(y)}).`
    : `Phone ${shortId(p.pixel_id)}: the observation was recorded but did not move it.`;
  if (reply?.contradiction) text += ' ' + contradictionText(reply.contradiction);
  messages.say(text);
  // the phone's new place comes by the live stream; the fields show where it was asked to go
  $('place-x').value = round2(x);
  $('place-y').value = round2(y);
}

export async function identify() {
  const p = selectedPixel();
  if (!p || !state.scene) return;
  await api('POST', `/api/scenes/${state.scene.scene_id}/pixels/${p.pixel_id}/identify`);
  messages.say(`Phone ${shortId(p.pixel_id)} is flashing for a few seconds.`);
}

export async function askForQrCodes() {
  if (!state.scene) return;
  const unlocatedOnly = $('qr-unlocated-only').checked;
  const reply = await api('POST', `/api/scenes/${state.scene.scene_id}/qr-codes`, { unlocated_only: unlocatedOnly });
  const n = reply?.asked ?? 0;
  messages.say(n
    ? `Asked ${n} phone(s) to show their QR codes. Take the photo now.`
    : `No ${unlocatedOnly ? 'unlocated ' : ''}phone is connected to this scene right now.`);
}

// ---------- scene map ----------

export function drawMap() {
  const map = state.map;
  if (!map || !state.scene) return;
  const dots = [];
  const byPhoto = new Set(
    (state.result?.detections ?? []).filter((d) => d.status === 'located' && d.pixel_id).map((d) => d.pixel_id),
  );
  const pixels = state.pixels ?? new Map();
  for (const p of pixels.values()) {
    if (p.x == null || p.y == null || p.status === 'kicked' || p.pixel_id === state.selected) continue;
    dots.push({ x: p.x, y: p.y, color: byPhoto.has(p.pixel_id) ? COLOR_LOCATED : COLOR_PHONE });
  }
  // detections located by the last photo whose pixel is not (yet) in the list
  for (const d of state.result?.detections ?? []) {
    if (d.status !== 'located' || !d.scene) continue;
    if (pixels.get(d.pixel_id)?.x != null) continue;
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

export const onMapClick = messages.handler('Scene map', async (event) => {
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
    messages.say(`Reference point ${i + 1} is at scene (${fmt(x)}, ${fmt(y)}).`);
    if (state.pickReturn) $('points').querySelectorAll('.point-pick')[i]?.focus();
    state.pickReturn = false;
    return;
  }
  if (selectedPixel()) {
    await placePixel(round2(x), round2(y));
    return;
  }
  messages.say('Select a phone in the list first, or press “Pick on map” on a reference point.');
});

// The operator's frames: the list in show order with previews, durations, moving and
// deleting; uploads (several files at once, drag and drop, progress, an animated GIF split
// into its frames by the server; a video becomes one clip, shown by its poster with its
// length and trimmed by start and end). The frames are what a show is built from (show.js).

import { api, apiFetch, upload, ApiError } from '../api.js';
import { $, state, messages, selected, fmtMs } from './state.js';
import { renderShowInfo } from './show.js';

/** The frame's image as a Blob (an <img src> cannot carry the bearer token). Cached: a
 *  frame's bytes never change. */
const blobs = new Map();
function frameBlob(sceneId, frameId) {
  if (!blobs.has(frameId)) {
    // a clip is shown by its poster (its file may be gigabytes)
    const isClip = state.frames?.find((f) => f.frame_id === frameId)?.clip || clipIds.has(frameId);
    const what = isClip ? 'poster' : 'image';
    const p = apiFetch(`/api/scenes/${sceneId}/frames/${frameId}/${what}`).then((res) => res.blob());
    p.catch(() => blobs.delete(frameId));
    blobs.set(frameId, p);
  }
  return blobs.get(frameId);
}

/** Frames known to be clips before the list is read again (just uploaded). */
const clipIds = new Set();

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

function guessType(file) {
  if (file.type) return file.type;
  const ext = file.name.split('.').pop().toLowerCase();
  return (
    { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp', mp4: 'video/mp4', m4v: 'video/mp4', mov: 'video/quicktime', webm: 'video/webm', mkv: 'video/x-matroska' }[ext] ??
    'application/octet-stream'
  );
}

const isVideo = (file) => guessType(file).startsWith('video/');

export async function loadFrames() {
  const id = state.scene.scene_id;
  const frames = await api('GET', `/api/scenes/${id}/frames`);
  if (!selected(id)) return;
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
    meta.textContent = f.clip
      ? `${f.original_name || '(no name)'} · clip · ${f.width}×${f.height} · ${fmtMs(f.clip.video_duration_ms)} long, plays ${fmtMs(f.duration_ms)} at ${f.clip.fps} fps`
      : `${f.original_name || '(no name)'} · ${f.width}×${f.height}`;
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
    // a clip lasts what its stretch of video lasts: trimmed by start and end instead
    const timing = f.clip ? trimInputs(f, label) : [durLabel];
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
    li.append(num, thumb(id, f.frame_id, `${label}: ${f.original_name || 'image'}`, 'thumb'), meta, ...timing, up, down, del);
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

/** A clip's start and end (seconds into the video), each saved when changed. */
function trimInputs(f, label) {
  const field = (name, ms, aria) => {
    const l = document.createElement('label');
    l.htmlFor = `${name}-${f.frame_id}`;
    l.textContent = name === 'start' ? 'Start (s)' : 'End (s)';
    const input = document.createElement('input');
    input.type = 'number';
    input.id = `${name}-${f.frame_id}`;
    input.className = `clip-${name}`;
    input.dataset.action = name;
    input.min = 0;
    input.max = f.clip.video_duration_ms / 1000;
    input.step = 0.001;
    input.value = ms / 1000;
    input.setAttribute('aria-label', aria);
    input.addEventListener('change', () => setTrim(f.frame_id));
    l.append(input);
    return l;
  };
  return [field('start', f.clip.start_ms, `${label} starts at, seconds into the video`), field('end', f.clip.end_ms, `${label} ends at, seconds into the video`)];
}

async function setTrim(frameId) {
  const li = [...$('frame-list').children].find((l) => l.dataset.frameId === frameId);
  const frame = state.frames.find((f) => f.frame_id === frameId);
  if (!li || !frame) return;
  const start = Math.round(Number(li.querySelector('.clip-start').value) * 1000);
  const end = Math.round(Number(li.querySelector('.clip-end').value) * 1000);
  const id = state.scene.scene_id;
  const ok = await messages.run(async () => {
    const updated = await api('PATCH', `/api/scenes/${id}/frames/${frameId}`, { clip: { start_ms: start, end_ms: end } });
    state.frames = state.frames.map((f) => (f.frame_id === frameId ? updated : f));
    renderFrames();
    return true;
  }, `Clip trimmed to ${fmtMs(start)} – ${fmtMs(end)}.`);
  if (!ok) renderFrames(); // back to what is stored
}

async function moveFrame(index, delta) {
  const j = index + delta;
  if (j < 0 || j >= state.frames.length) return;
  const ids = state.frames.map((f) => f.frame_id);
  [ids[index], ids[j]] = [ids[j], ids[index]];
  const id = state.scene.scene_id;
  focusAfter = { frameId: state.frames[index].frame_id, action: delta < 0 ? 'up' : 'down' };
  const ok = await messages.run(async () => {
    const frames = await api('PUT', `/api/scenes/${id}/frames/order`, { frame_ids: ids });
    if (selected(id)) {
      state.frames = frames;
      renderFrames();
    }
    return true;
  }, `Frame moved to place ${j + 1}.`);
  if (!ok) {
    focusAfter = null;
    await messages.run(loadFrames); // someone else changed the frames: show what is there now
  }
}

async function setDuration(frameId, input) {
  const ms = Number(input.value);
  const frame = state.frames.find((f) => f.frame_id === frameId);
  if (!Number.isInteger(ms) || ms < 1 || ms > 3600000) {
    messages.error(new Error('A duration is a whole number of milliseconds, 1 to 3600000.'));
    if (frame) input.value = frame.duration_ms;
    return;
  }
  const id = state.scene.scene_id;
  await messages.run(async () => {
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
  await messages.run(async () => {
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
  const video = isVideo(file);
  if (durationText && !video) params.set('duration_ms', durationText);
  status.textContent = 'uploading';
  try {
    const path = video ? 'clips' : 'frames';
    const answer = await upload('POST', `/api/scenes/${sceneId}/${path}?${params}`, file, (p) => {
      bar.value = p;
      status.textContent = p < 1 ? `uploading ${Math.round(p * 100)} %` : video ? 'reading the video…' : 'checking…';
    }, guessType(file));
    const frames = video ? [answer] : answer;
    if (video) clipIds.add(answer.frame_id);
    bar.value = 1;
    li.classList.add('done');
    status.className = 'ok';
    status.textContent = video ? `done: a clip of ${fmtMs(answer.duration_ms)}` : frames.length === 1 ? 'done: 1 frame' : `done: ${frames.length} frames`;
    frames.forEach((f, i) => thumbs.append(thumb(sceneId, f.frame_id, `${file.name}, frame ${i + 1} of ${frames.length}`)));
    if (selected(sceneId)) {
      for (const f of frames) state.newFrameIds.add(f.frame_id);
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(() => messages.run(loadFrames), 150);
    }
    messages.say(video ? `${file.name} uploaded: a clip of ${fmtMs(answer.duration_ms)} at ${answer.clip.fps} fps.` : `${file.name} uploaded: ${frames.length} frame${frames.length === 1 ? '' : 's'}.`);
  } catch (err) {
    li.classList.add('failed');
    status.className = 'error';
    status.textContent = 'failed: ' + (err.message || err.code);
    messages.error(err instanceof ApiError ? new ApiError(err.status, err.code, `${file.name}: ${err.message}`) : err);
  }
}

export function wireFrames() {
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
    const files = [...(e.dataTransfer?.files ?? [])].filter((f) => /^(image|video)\//.test(f.type) || /\.(png|jpe?g|gif|webp|mp4|m4v|mov|webm|mkv)$/i.test(f.name));
    if (files.length) addFiles(files);
    else messages.error(new Error('Drop image files (PNG, JPEG, GIF or WebP) or videos (MP4, MOV, WebM).'));
  });
  // a file dropped beside the zone should not navigate away from the page
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
}

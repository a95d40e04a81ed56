// The operator's live preview: every located phone drawn in the colour it shows now, over a
// faint copy of the frame showing now; and the playback line under it.
//
// The colours are the server's own: each frame of the show resampled onto the show's grid,
// read from `GET .../show/frames/{frame_id}/raster` (the frame cache the phones' scheduler
// reads), so the preview cannot disagree with the phones whatever the server's resampler
// does. A phone's colour is its cell's (`cellOf`, in f32 as the server computes it); which
// frame shows now comes from the timeline (timeline.js) at the server's clock.
//
// Rasters are fetched one at a time, the frame showing now first, so a long show does not
// hold up the page while its preview is prepared.

import { apiFetch } from '../api.js';
import { PER_PAGE, MAX_PAGES } from '../pixels.js';
import { SceneMap } from '../scenemap.js';
import { $, state, messages, fmtMs, clock } from './state.js';
import { showAt, stateAt } from './timeline.js';

/** Rasters kept (most recently used): a show longer than this fetches again as it plays. */
const RASTER_CACHE = 120;
/** A frame whose raster could not be read is tried again after this. */
const RETRY_RASTER_MS = 5000;
/** The preview is redrawn at most this often (15 a second is plenty for a human). */
const DRAW_EVERY_MS = 66;
/** The frame under the phones, faintly: alpha of its cells. */
const FAINT_ALPHA = 102; // 0.4
const f32 = Math.fround;

/** Grid::cell_of, in f32 like the server. */
export function cellOf(grid, x, y, sceneW, sceneH) {
  const cx = Math.floor(Math.min(Math.max(f32(f32(f32(x) / f32(sceneW)) * grid.w), 0), grid.w - 1));
  const cy = Math.floor(Math.min(Math.max(f32(f32(f32(y) / f32(sceneH)) * grid.h), 0), grid.h - 1));
  return cy * grid.w + cx;
}

/** A frame on the show's grid: rgb bytes (3 per cell) and a faint canvas for the map. */
async function fetchRaster(sceneId, frameId, grid, index) {
  const query = index == null ? '' : `?index=${index}`;
  const res = await apiFetch(`/api/scenes/${sceneId}/show/frames/${frameId}/raster${query}`);
  // the headers say the grid the server used; if the show was rebuilt meanwhile it may not
  // be the grid this page has, and the colours would land in the wrong cells
  const w = Number(res.headers.get('x-grid-width') ?? grid.w);
  const h = Number(res.headers.get('x-grid-height') ?? grid.h);
  const rgb = new Uint8Array(await res.arrayBuffer());
  if (w !== grid.w || h !== grid.h || rgb.length !== w * h * 3) {
    throw new Error(`the frame's raster is ${w} × ${h} (${rgb.length} bytes), not the show's ${grid.w} × ${grid.h} grid`);
  }
  const faint = document.createElement('canvas');
  faint.width = w;
  faint.height = h;
  const ctx = faint.getContext('2d');
  const img = ctx.createImageData(w, h);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    img.data[i] = rgb[j];
    img.data[i + 1] = rgb[j + 1];
    img.data[i + 2] = rgb[j + 2];
    img.data[i + 3] = FAINT_ALPHA;
  }
  ctx.putImageData(img, 0, 0);
  return { rgb, faint };
}

const rasters = new Map(); // `${sha}|${w}x${h}` → {value, failedAt, job (while queued), fetching}
/** Rasters waiting to be fetched: one at a time, the page breathing in between. */
const queue = [];
let fetching = false;

async function pump() {
  if (fetching) return;
  fetching = true;
  while (queue.length) {
    const job = queue.shift();
    const entry = job.entry;
    // out of the queue: a frame being fetched is not queued (or moved in the queue) again
    entry.job = null;
    entry.fetching = true;
    try {
      entry.value = await fetchRaster(...job.args);
      entry.failedAt = null;
    } catch (e) {
      // a show replaced meanwhile answers 404 for its old frames: nothing to report
      if (entry.failedAt == null && e?.status !== 404) messages.error(e, 'Preview');
      entry.failedAt = performance.now();
    }
    entry.fetching = false;
    await new Promise((r) => setTimeout(r, 0));
  }
  fetching = false;
}

/** The frame on the grid, or null while it is being fetched. `now` puts it first in line
 * (the frame showing right now). */
function raster(sceneId, frame, grid, now = false, index = null) {
  const key = `${frame.sha256}|${index ?? ''}|${grid.w}x${grid.h}`;
  let entry = rasters.get(key);
  if (entry) {
    rasters.delete(key); // most recently used last
    rasters.set(key, entry);
    if (now && entry.job) {
      queue.splice(queue.indexOf(entry.job), 1);
      queue.unshift(entry.job);
    }
    if (!entry.value && !entry.job && !entry.fetching && entry.failedAt != null && performance.now() - entry.failedAt > RETRY_RASTER_MS) {
      entry.job = { entry, args: [sceneId, frame.frame_id, grid, index] };
      queue.push(entry.job);
      pump();
    }
    return entry.value;
  }
  entry = { value: null, failedAt: null, job: null, fetching: false };
  entry.job = { entry, args: [sceneId, frame.frame_id, grid, index] };
  rasters.set(key, entry);
  if (now) queue.unshift(entry.job);
  else queue.push(entry.job);
  pump();
  while (rasters.size > RASTER_CACHE) {
    const [oldKey, old] = rasters.entries().next().value;
    if (old.job) queue.splice(queue.indexOf(old.job), 1);
    rasters.delete(oldKey);
  }
  return null;
}

/** Like the server's preload: every frame of the show on its grid before it plays. */
export function prepareShow(s) {
  if (!state.scene || !s.grid) return;
  // a clip's first frame only: the rest are fetched as it plays
  for (const f of s.show.frames.slice(0, RASTER_CACHE)) raster(state.scene.scene_id, f, s.grid, false, f.clip ? f.clip.first : null);
}

/** Whether the frames of the show the page holds are all fetched (for the tests). */
export function showPrepared() {
  const s = state.show;
  if (!s?.grid) return false;
  return s.show.frames.slice(0, RASTER_CACHE).every((f) => rasters.get(`${f.sha256}|${f.clip ? f.clip.first : ''}|${s.grid.w}x${s.grid.h}`)?.value);
}

export function makeMap() {
  if (!state.scene) return;
  state.map = new SceneMap($('preview'), { width: state.scene.width, height: state.scene.height, background: '#000' });
}

let lastDraw = 0;
let lastInfo = '';

/** What the preview shows now: the dots with their colours, the frame, the line under it. */
export function previewNow() {
  const scene = state.scene;
  const t = clock.now();
  let image = null;
  let rgb = null;
  let grid = null;
  let info;
  let position = null;
  const s = state.show;
  if (s && s.show.frames.length) {
    const at = showAt(s, t);
    position = at.position;
    if (at.frame != null && s.grid) {
      grid = s.grid;
      const r = raster(scene.scene_id, s.show.frames[at.frame], grid, true, at.index);
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
            : `${at.mode} · frame ${at.frame + 1} of ${s.show.frames.length}${at.index == null ? '' : ` (clip frame ${at.index + 1})`} · ${fmtMs(at.position)} of ${fmtMs(s.total_ms)}`;
  } else {
    info = 'no show';
  }
  const idle = scene.idle_color;
  const dots = [];
  for (const p of state.pixels?.values() ?? []) {
    if (p.x == null || p.y == null) continue;
    let color = idle;
    if (rgb) {
      const c = cellOf(grid, p.x, p.y, scene.width, scene.height) * 3;
      color = `rgb(${rgb[c]},${rgb[c + 1]},${rgb[c + 2]})`;
    }
    dots.push({ x: p.x, y: p.y, color, pixel_id: p.pixel_id });
  }
  return { t, info, position, image, dots };
}

function drawPreview(now) {
  requestAnimationFrame(drawPreview);
  if (!state.scene || !state.map || document.hidden || now - lastDraw < DRAW_EVERY_MS) return;
  lastDraw = now;
  const { info, position, image, dots } = previewNow();
  const range = $('seek-range');
  if (state.show && !state.sliding && document.activeElement !== range) range.value = position ?? 0;
  state.map.draw(dots, image);
  const total = state.pixels?.total ?? 0;
  const n = dots.length;
  // more located phones than the page reads: say that not all are drawn
  const shown = total > PER_PAGE * MAX_PAGES ? ` (${n} drawn of ${total})` : '';
  const text = `${info}. ${n} located phone${n === 1 ? '' : 's'}${shown}. Server clock ${clock.measured ? `offset ${Math.round(clock.offset)} ms ± ${Math.round(clock.error)} ms` : 'not measured yet (local clock used)'}.`;
  if (text !== lastInfo) {
    lastInfo = text;
    $('preview-info').textContent = text;
    $('playback-state').textContent = `Playback: ${info}.`;
  }
}

export function wirePreview() {
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.map?.resize(), 150);
  });
  requestAnimationFrame(drawPreview);
}

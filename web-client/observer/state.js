// What the observer page's modules share: the scene, its phones, the photo and its reference
// points, the messages region, the colours of the drawings, and small formatting helpers.

import { Messages } from '../errors.js';

export const $ = (id) => document.getElementById(id);

export const messages = new Messages({ errorBox: $('error'), statusLine: $('status') });

export const COLOR_LOCATED = '#3ddc84';
export const COLOR_OTHER = '#ff5c5c';
export const COLOR_REF = '#ffd33d';
export const COLOR_PHONE = '#c9d1d9';
export const COLOR_SELECTED = '#4da3ff';

export const state = {
  user: null,
  scene: null,
  map: null,
  pixels: null, // a PixelStore of the scene's phones, every status
  selected: null, // pixel id
  photo: null, // {blob, name, image, width, height, reencode}
  points: [], // [{px, py, x, y}] (x, y null until known)
  picking: null, // index of the point whose scene position the next map click sets
  pickReturn: false, // picking began at a "Pick on map" button: go back to it afterwards
  result: null, // the last PhotoResult
  stream: null, // the camera's MediaStream
  uploading: false,
  live: null, // the scene's LiveStream
};

/** Whether `id` is still the open scene (an answer for another one is dropped). */
export const selected = (id) => state.scene?.scene_id === id;

export const fmt = (v) => (Number.isFinite(v) ? (Math.round(v * 100) / 100).toString() : '?');
export const round2 = (v) => Math.round(v * 100) / 100;
export const shortId = (id) => (id ? id.slice(0, 8) : '—');

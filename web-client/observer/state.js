// What the observer page's modules share: the scene, its phones, the photo (or the clip's
// still) and its reference points, the flash session, the server's clock, the messages
// region, the colours of the drawings, and small formatting helpers.

import { Messages } from '../errors.js';
import { ServerClock } from '../serverclock.js';

export const $ = (id) => document.getElementById(id);

export const messages = new Messages({ errorBox: $('error'), statusLine: $('status') });

export const COLOR_LOCATED = '#3ddc84';
export const COLOR_OTHER = '#ff5c5c';
export const COLOR_REF = '#ffd33d';
export const COLOR_PHONE = '#c9d1d9';
export const COLOR_SELECTED = '#4da3ff';
/** A clip's phones: read and recorded (not moved), read but rejected, not readable. */
export const COLOR_RECORDED = '#58a6ff';
export const COLOR_REJECTED = '#ff9f1c';
export const COLOR_UNREADABLE = '#8b949e';

/** The server's clock: a flash session's instants are the server's. */
export const clock = new ServerClock();

export const state = {
  user: null,
  scene: null,
  map: null,
  pixels: null, // a PixelStore of the scene's phones, every status
  selected: null, // pixel id
  // the picture the reference points are marked on: a photo {blob, name, image, width,
  // height, reencode}, or a still of a clip, which also has `clip` (clip.js): then `blob` is
  // the clip, `image` a canvas holding the still, and width × height the video's own pixels
  photo: null,
  points: [], // [{px, py, x, y}] (x, y null until known)
  picking: null, // index of the point whose scene position the next map click sets
  pickReturn: false, // picking began at a "Pick on map" button: go back to it afterwards
  result: null, // the last PhotoResult or VideoResult, with `kind` ('photo' or 'clip') added
  flash: null, // the last flash session started here (the server's FlashSessionInfo)
  stream: null, // the camera's MediaStream
  uploading: false,
  live: null, // the scene's LiveStream
};

/** Whether `id` is still the open scene (an answer for another one is dropped). */
export const selected = (id) => state.scene?.scene_id === id;

export const fmt = (v) => (Number.isFinite(v) ? (Math.round(v * 100) / 100).toString() : '?');
export const round2 = (v) => Math.round(v * 100) / 100;
export const shortId = (id) => (id ? id.slice(0, 8) : '—');

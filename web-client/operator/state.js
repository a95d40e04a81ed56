// What the operator page's modules share: the selected scene and what the page knows of it
// (frames, show, phones, presence), the messages region, and small formatting helpers.
// Every module reads and writes this one object, so the selected scene is never two things.

import { Messages } from '../errors.js';
import { ServerClock } from '../serverclock.js';

export const $ = (id) => document.getElementById(id);

export const messages = new Messages({ errorBox: $('errors'), statusLine: $('status-line') });

export const state = {
  me: null, // GET /api/auth/me: {user, grants}
  scenes: [],
  scene: null, // the selected scene
  frames: [], // its frames in order
  show: null, // the last ShowState (or null: no show yet)
  pixels: null, // a PixelStore of its located phones
  presence: null,
  newFrameIds: new Set(),
  map: null, // the preview's SceneMap
  live: null, // the LiveStream of the selected scene
  sliding: false, // the operator is dragging the position slider
};

/** The server's clock, for which frame shows now. */
export const clock = new ServerClock();

/** Whether `id` is still the selected scene (an answer for another one is dropped). */
export const selected = (id) => state.scene?.scene_id === id;

export function fmtMs(ms) {
  if (ms == null) return '–';
  const s = ms / 1000;
  return s >= 60 ? `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}` : `${s.toFixed(2)} s`;
}

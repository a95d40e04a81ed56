// The operator's show and playback: building the show from the frames, the show's summary,
// and the playback commands (play, pause, resume, stop, seek) with the show version the page
// shows, so that a command decided on a stale view is refused by the server (409) instead of
// applied. Which ShowState the page holds is decided here (`applyShow`): never an older
// version than the one it has, whichever answer or pushed event comes last.

import { api, ApiError } from '../api.js';
import { $, state, messages, selected, fmtMs, clock } from './state.js';
import { showAt } from './timeline.js';
import { prepareShow } from './preview.js';

/**
 * The page's show becomes `s`, unless the page already has a newer version (a reply or a
 * read that left before a newer answer arrived must not put the page back a version).
 * Returns whether it was taken.
 */
export function applyShow(s) {
  if (state.show && state.show.timeline.version > s.timeline.version) return false;
  state.show = s;
  renderShowInfo();
  return true;
}

/** Reads the show (when a scene is selected, and after the live stream reconnects). */
export async function loadShow() {
  const id = state.scene.scene_id;
  try {
    const s = await api('GET', `/api/scenes/${id}/show`);
    if (selected(id)) applyShow(s);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      if (selected(id) && !state.show) renderShowInfo(); // no show built yet
    } else throw err;
  }
}

export function renderShowInfo() {
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
  prepareShow(s);
  const same =
    s.show.frames.length === state.frames.length &&
    s.show.frames.every((f, i) => f.frame_id === state.frames[i].frame_id && f.duration_ms === state.frames[i].duration_ms);
  $('show-stale').classList.toggle('hidden', same || state.frames.length === 0);
}

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
    if (!current || !selected(id)) throw err;
    applyShow(current);
    $('show-loop').checked = current.show.loop;
    throw new ApiError(409, 'conflict',
      `Someone else changed the show just now (it is at version ${current.timeline.version}); check it and press again.`);
  }
}

async function playback(body, okText) {
  if (!state.scene) return;
  const id = state.scene.scene_id;
  await messages.run(async () => {
    const s = await staleChecked(id, () => api('POST', `/api/scenes/${id}/playback${expectedVersion()}`, body));
    if (selected(id)) applyShow(s);
    return s;
  }, okText);
}

function startIn() {
  const v = Number($('start-in').value);
  return Number.isFinite(v) && v > 0 ? Math.round(v) : undefined;
}

function seekTo(ms) {
  if (!Number.isFinite(ms) || ms < 0) {
    messages.error(new Error('A position is a number of milliseconds from 0.'));
    return;
  }
  ms = Math.round(ms);
  $('seek').value = ms;
  playback({ command: 'seek', position_ms: ms }, `Seeking to ${ms} ms.`);
}

export function wireShow() {
  $('show-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = state.scene.scene_id;
    messages.run(async () => {
      const s = await staleChecked(id, () =>
        api('PUT', `/api/scenes/${id}/show${expectedVersion()}`, { loop: $('show-loop').checked }));
      if (selected(id)) applyShow(s);
      return s;
    }, (s) => `Show built: ${s.show.frames.length} frames, ${fmtMs(s.total_ms)}. Playback is stopped.`);
  });

  $('play').addEventListener('click', () => {
    const now = state.show ? showAt(state.show, clock.now()) : null;
    if (now?.mode === 'paused') {
      playback({ command: 'resume', start_in_ms: startIn() }, 'Resuming.');
    } else if (now?.mode === 'playing' && !confirm('The show is playing. Restart it from the start for every phone?')) {
      messages.say('The show goes on.');
    } else {
      playback({ command: 'play', start_in_ms: startIn(), from_ms: 0 }, `Playing from the start in ${startIn() ?? 3000} ms.`);
    }
  });
  $('resume').addEventListener('click', () => playback({ command: 'resume', start_in_ms: startIn() }, 'Resuming.'));
  $('pause').addEventListener('click', () => playback({ command: 'pause' }, 'Paused.'));
  $('stop').addEventListener('click', () => playback({ command: 'stop' }, 'Stopped.'));

  $('seek-form').addEventListener('submit', (e) => {
    e.preventDefault();
    seekTo(Number($('seek').value));
  });
  // while the operator drags the slider, the preview does not move it under their finger
  const range = $('seek-range');
  range.addEventListener('input', () => {
    state.sliding = true;
    $('seek').value = range.value;
  });
  range.addEventListener('change', () => {
    state.sliding = false;
    seekTo(Number(range.value));
  });
  range.addEventListener('blur', () => (state.sliding = false));
}

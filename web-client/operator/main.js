// The operator page's entry: the session (log in, register, log out), selecting a scene, and
// keeping the selected scene current from its live stream instead of polling.
//
// When a scene is selected the page reads it once (frames, show, located phones, join code)
// and then only applies what the server pushes: presence, show versions, phones placed or
// removed, scene changes, the end. When the stream reconnects, or the server says the page
// fell behind (`resync`), the show and the phones are read again.
//
// The page's modules: state.js (what they share), scenes.js, frames.js, show.js (building
// and playback), timeline.js (which frame shows when), preview.js, presence.js,
// and ../serverclock.js (the server's clock, shared with the observer page).

import { api, ApiError } from '../api.js';
import { Session } from '../session.js';
import { watchScene } from '../live.js';
import { PixelStore } from '../pixels.js';
import { $, state, messages, selected, clock } from './state.js';
import { isAdmin, loadScenes, renderScenes, fillSceneForms, sceneChanged, loadJoinCode, wireScenes } from './scenes.js';
import { loadFrames, wireFrames } from './frames.js';
import { loadShow, applyShow, renderShowInfo, wireShow } from './show.js';
import { makeMap, previewNow, showPrepared, wirePreview } from './preview.js';
import { renderPresence } from './presence.js';


const session = new Session({
  messages,
  loginForm: $('login-form'),
  registerForm: $('register-form'),
  logoutButton: $('logout'),
  onLogin: loggedIn,
  onLogout: loggedOut,
});

async function loggedIn(me) {
  state.me = me;
  const u = me.user;
  $('whoami').textContent = `Logged in as ${u.display_name}${u.login && u.login !== u.display_name ? ' (' + u.login + ')' : ''}${isAdmin() ? ' · admin' : ''}`;
  $('logout').classList.remove('hidden');
  $('auth-section').classList.add('hidden');
  $('app').classList.remove('hidden');
  clock.start();
  await loadScenes();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('scene');
  const pick = state.scenes.find((s) => s.scene_id === wanted) ?? (state.scenes.length === 1 ? state.scenes[0] : null);
  if (pick) await selectScene(pick.scene_id);
}

function loggedOut() {
  state.me = null;
  deselect();
  clock.stop();
  $('whoami').textContent = 'Not logged in';
  $('logout').classList.add('hidden');
  $('auth-section').classList.remove('hidden');
  $('app').classList.add('hidden');
}

function deselect() {
  state.live?.stop();
  state.live = null;
  state.scene = null;
  state.frames = [];
  state.show = null;
  state.pixels = null;
  state.presence = null;
  $('scene-panel').classList.add('hidden');
}

async function selectScene(id) {
  deselect();
  const scene = state.scenes.find((s) => s.scene_id === id) ?? (await messages.run(() => api('GET', `/api/scenes/${id}`)));
  if (!scene || state.scene) return; // not found, or another scene was chosen meanwhile
  state.scene = scene;
  // what the preview draws: located phones with a place
  state.pixels = new PixelStore(id, { status: 'located', keep: (p) => p.status === 'located' && p.x != null && p.y != null });
  history.replaceState(null, '', '#scene=' + id);
  renderScenes();
  fillSceneForms(scene);
  $('upload-list').textContent = '';
  state.newFrameIds.clear();
  $('scene-panel').classList.remove('hidden');
  makeMap();
  renderPresence();
  renderShowInfo();
  // the phones are read once the stream watches the scene, so that no phone placed between
  // the read and the watch is missed (the show and the counts come with the stream itself)
  const watching = watch(id);
  await Promise.all([
    messages.run(loadJoinCode),
    messages.run(loadFrames),
    messages.run(loadShow),
    watching.then(() => selected(id) && messages.run(() => state.pixels.reload())),
  ]);
  if (state.show && selected(id)) $('show-loop').checked = state.show.show.loop;
}

/** Opens the scene's live stream; resolves when the phones can be read without missing one. */
function watch(id) {
  const { live, opened } = watchScene(id, {
    messages,
    onEvent: (name, data) => selected(id) && onLive(id, name, data),
    reread: () => reread(id),
  });
  state.live = live;
  return opened;
}

/** What may have changed while the page was not told: the show and the phones. */
function reread(id) {
  if (!selected(id)) return;
  messages.run(loadShow);
  messages.run(() => state.pixels.reload());
}

function onLive(id, name, data) {
  switch (name) {
    case 'presence':
      state.presence = data;
      renderPresence();
      break;
    case 'show':
      applyShow(data);
      break;
    case 'pixel':
      state.pixels.apply(data);
      break;
    case 'scene':
      sceneChanged(data, false);
      break;
    case 'resync':
      reread(id);
      break;
    case 'ended':
      messages.run(() => sceneEnded(id));
      break;
    default:
      // an event this page does not know (a newer server): nothing to do
  }
}

/** The scene ended, or was deleted: the stream is over. */
async function sceneEnded(id) {
  try {
    const scene = await api('GET', `/api/scenes/${id}`);
    sceneChanged(scene, false);
    messages.say(`The scene “${scene.name}” has ended.`);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    state.scenes = state.scenes.filter((s) => s.scene_id !== id);
    if (selected(id)) deselect();
    renderScenes();
    messages.say('The scene was deleted.');
  }
}

wireScenes({ select: selectScene });
wireFrames();
wireShow();
wirePreview();

// what the page knows, for the browser tests and the curious (read-only in spirit)
window.c3s = {
  state,
  clock,
  preview: previewNow,
  prepared: showPrepared,
  get live() {
    return state.live ? { connected: state.live.connected } : null;
  },
};

session.start();

// The observer page's entry: the session (sign in, sign out), choosing the scene, keeping its
// phones current from the scene's live stream, and wiring the page's controls to the
// modules that own them.
//
// The phones are read once when the scene opens, and again when the stream reconnects, when
// the server says the page fell behind (`resync`), and when the count of connected phones
// grows (a join is counted, not pushed). Everything else about them is pushed.
//
// The page's modules: state.js (what they share), flash.js (flash sessions, filming them),
// clip.js (the clip and its still), photo.js (camera and photo), points.js (reference
// points), detections.js (upload and its results), phones.js (the phones and the scene map).

import { api, sceneIdFromKey } from '../api.js';
import { Session } from '../session.js';
import { watchScene } from '../live.js';
import { SceneMap } from '../scenemap.js';
import { $, state, messages, selected, fmt } from './state.js';
import { startCamera, stopCamera, capture, setPhoto, drawPhoto, onPhotoClick } from './photo.js';
import { addPoint, renderPoints, updateUploadState, onPointInput, onPointsClick } from './points.js';
import { renderDetections, uploadPicture } from './detections.js';
import {
  startSession, flashSceneOpened, flashSceneClosed, flashAvailability, startFlashCamera, stopFlashCamera, onFpsInput,
  chooseClip, recordingState,
} from './flash.js';
import { onStillInput } from './clip.js';
import {
  newPixels, reloadPixels, reloadSoon, pixelChanged, renderPixels, selectPixel, renderSelection, renderMapMode,
  placePixel, identify, askForQrCodes, drawMap, onMapClick,
} from './phones.js';


const session = new Session({
  messages,
  loginForm: $('login-form'),
  logoutButton: $('logout'),
  onLogin: signedIn,
  onLogout: signedOut,
  words: { loggedIn: 'Signed in', loggedOut: 'Signed out', logIn: 'sign in' },
});

async function signedIn(me) {
  const user = me.user;
  state.user = user;
  $('whoami').textContent = `Signed in as ${user.display_name || user.login}`;
  $('logout').hidden = false;
  $('login-section').hidden = true;
  $('scene-section').hidden = false;
  await loadScenes();
}

function signedOut() {
  state.user = null;
  closeScene();
  stopCamera();
  $('whoami').textContent = '';
  $('logout').hidden = true;
  $('login-section').hidden = false;
  $('scene-section').hidden = true;
  $('login-name').focus();
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
      messages.error(e, `Scene ${wanted} from the address`);
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

function closeScene() {
  flashSceneClosed();
  state.live?.stop();
  state.live = null;
  state.scene = null;
  state.pixels = null;
  $('workspace').hidden = true;
  $('scene-info').textContent = '';
}

/** The scene as it is now: opened, or pushed by the live stream. */
function showScene(scene) {
  state.scene = scene;
  $('scene-info').textContent =
    `${scene.name}: ${fmt(scene.width)} × ${fmt(scene.height)} scene units, ${scene.status}` +
    (scene.venue ? `, ${scene.venue}` : '') + '.';
  flashAvailability(scene);
  const canvas = $('scene-map');
  if (!state.map) {
    state.map = new SceneMap(canvas, { width: scene.width, height: scene.height, background: '#1d2630' });
  } else if (state.map.width !== scene.width || state.map.height !== scene.height) {
    state.map.width = scene.width;
    state.map.height = scene.height;
    state.map.resize();
  }
}

async function openScene(sceneId) {
  if (!sceneId) {
    closeScene();
    return;
  }
  const scene = await api('GET', `/api/scenes/${sceneId}`);
  const changed = !selected(scene.scene_id);
  if (changed) closeScene();
  const url = new URL(location.href);
  url.searchParams.set('scene', scene.scene_id);
  history.replaceState(null, '', url);
  $('workspace').hidden = false;
  showScene(scene);
  state.map.resize(); // the workspace was hidden: its size is known only now
  if (changed) {
    state.selected = null;
    state.result = null;
    state.picking = null;
    renderDetections();
    drawPhoto();
    newPixels(scene.scene_id);
    messages.run(() => flashSceneOpened(scene), undefined, 'Flash session');
    // the stream watches the scene before the phones are read: none placed between is missed
    await watch(scene.scene_id);
    if (!selected(scene.scene_id)) return;
  }
  renderSelection();
  await reloadPixels();
}

/** Opens the scene's live stream; resolves when the phones can be read without missing one. */
function watch(id) {
  let connected = null; // phones connected at the last presence
  const { live, opened } = watchScene(id, {
    messages,
    reread: () => messages.run(reloadPixels, undefined, 'Phones'),
    onEvent: (name, data) => {
      if (!selected(id)) return;
      if (name === 'pixel') pixelChanged(data);
      else if (name === 'presence') {
        if (connected !== null && data.connected > connected) reloadSoon();
        connected = data.connected;
      } else if (name === 'resync') messages.run(reloadPixels, undefined, 'Phones');
      else if (name === 'scene') showScene(data);
      else if (name === 'ended') messages.say('This scene has ended (or was deleted): nothing more will change here.');
    },
  });
  state.live = live;
  return opened;
}

// ---------- wiring ----------

function bind() {
  $('scene-select').addEventListener('change', messages.handler('Scene', (e) => openScene(e.target.value)));
  $('scene-reload').addEventListener('click', messages.handler('Scenes', loadScenes));
  $('ask-qr').addEventListener('click', messages.handler('Asking for QR codes', askForQrCodes));
  $('flash-fps').addEventListener('input', onFpsInput);
  $('flash-start').addEventListener('click', messages.handler('Starting the flash session', startSession));
  $('flash-record').addEventListener('click', messages.handler('Camera', startFlashCamera));
  $('flash-camera-stop').addEventListener('click', () => {
    stopFlashCamera();
    messages.say('Camera off.');
  });
  $('flash-file').addEventListener('change', messages.handler('Clip', async (e) => {
    const file = e.target.files?.[0];
    if (file) await chooseClip(file);
  }));
  $('still-at').addEventListener('input', onStillInput);
  $('camera-start').addEventListener('click', messages.handler('Camera', () => {
    stopFlashCamera(); // one camera at a time
    return startCamera();
  }));
  $('camera-capture').addEventListener('click', messages.handler('Capture', capture));
  $('camera-stop').addEventListener('click', () => {
    stopCamera();
    messages.say('Camera off.');
  });
  $('photo-file').addEventListener('change', messages.handler('Photo', async (e) => {
    const file = e.target.files?.[0];
    if (file) await setPhoto(file, file.name);
  }));
  $('photo-canvas').addEventListener('click', onPhotoClick);
  $('add-point').addEventListener('click', () => {
    const p = state.photo;
    if (!p) return;
    addPoint(Math.round(p.width / 2), Math.round(p.height / 2));
    messages.say(`Point ${state.points.length} added in the middle of the photo; edit its photo and scene coordinates.`);
    $(`point-${state.points.length - 1}-px`)?.focus();
  });
  $('clear-points').addEventListener('click', () => {
    state.points = [];
    state.picking = null;
    renderPoints();
    drawPhoto();
    drawMap();
    messages.say('All reference points removed.');
  });
  $('points').addEventListener('input', onPointInput);
  $('points').addEventListener('click', onPointsClick);
  $('upload').addEventListener('click', messages.handler('Upload', uploadPicture));
  $('scene-map').addEventListener('click', onMapClick);
  $('pixel-filter').addEventListener('change', renderPixels);
  $('pixel-refresh').addEventListener('click', messages.handler('Phones', reloadPixels, 'Phone list refreshed.'));
  $('pixel-list').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-pixel-id]');
    if (b) selectPixel(b.getAttribute('aria-pressed') === 'true' ? null : b.dataset.pixelId);
  });
  $('deselect').addEventListener('click', () => {
    selectPixel(null);
    messages.say('No phone selected.');
  });
  $('place').addEventListener('click', messages.handler('Placing the phone', async () => {
    const x = Number($('place-x').value);
    const y = Number($('place-y').value);
    if ($('place-x').value === '' || $('place-y').value === '' || !Number.isFinite(x) || !Number.isFinite(y)) {
      throw new Error('enter the scene x and y first');
    }
    await placePixel(x, y);
  }));
  $('identify').addEventListener('click', messages.handler('Identify', identify));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.picking != null) {
      state.picking = null;
      renderPoints();
      drawPhoto();
      drawMap();
      messages.say('Picking cancelled.');
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
  window.addEventListener('pagehide', () => {
    stopCamera();
    stopFlashCamera();
  });
}

bind();
updateUploadState();
renderMapMode();

// what the page knows, for the browser tests and the curious
window.c3s = {
  state,
  get live() {
    return state.live ? { connected: state.live.connected } : null;
  },
  get camera() {
    return recordingState();
  },
};

session.start();

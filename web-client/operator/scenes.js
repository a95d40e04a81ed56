// The operator's scenes: the list of the scenes this account operates, creating one, editing
// the selected one's fields and status, and its join code. Selecting a scene (loading what
// belongs to it) is main.js's; this module is told how (`wireScenes({select})`).

import { api } from '../api.js';
import { drawQr } from '../qr.js';
import { $, state, messages, selected } from './state.js';
import { makeMap } from './preview.js';

const NEXT_STATUS = {
  draft: ['draft', 'open', 'ended'],
  open: ['open', 'draft', 'live', 'ended'],
  live: ['live', 'open', 'ended'],
  ended: ['ended'],
};

let select = async () => {};

export function isAdmin() {
  return state.me?.grants.some((g) => g.permission === 'admin' && !g.scene_id);
}

function operates(scene) {
  if (!state.me) return false;
  return (
    isAdmin() ||
    scene.owner_id === state.me.user.user_id ||
    state.me.grants.some((g) => g.permission === 'operator' && (g.scene_id === scene.scene_id || !g.scene_id))
  );
}

export async function loadScenes() {
  const all = [];
  for (let page = 1; page <= 50; page++) {
    const reply = await api('GET', `/api/scenes?page=${page}&per_page=200`);
    all.push(...reply.items);
    if (all.length >= reply.total || reply.items.length === 0) break;
  }
  state.scenes = all.filter(operates);
  renderScenes();
}

export function renderScenes() {
  const list = $('scene-list');
  list.textContent = '';
  if (state.scenes.length === 0) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No scenes yet: create one.';
    list.append(li);
  }
  for (const s of state.scenes) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.sceneId = s.scene_id;
    b.textContent = s.name;
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = s.status;
    b.append(badge);
    b.setAttribute('aria-current', String(selected(s.scene_id)));
    b.addEventListener('click', () => select(s.scene_id));
    li.append(b);
    list.append(li);
  }
}

function checkedMethods(form) {
  return [...form.querySelectorAll('input[name="location_methods"]:checked')].map((i) => i.value);
}

/** The scene fields of the create and the edit form (they have the same inputs). */
function sceneBody(f) {
  return {
    name: f.elements.name.value.trim(),
    width: Number(f.elements.width.value),
    height: Number(f.elements.height.value),
    idle_color: f.elements.idle_color.value,
    location_methods: checkedMethods(f),
  };
}

/** `own`: the page's own edit came back, so the form is refilled even where focus is. */
export function fillSceneForms(scene, own = true) {
  $('scene-title').textContent = scene.name;
  $('scene-status-badge').textContent = scene.status;
  const f = $('scene-edit-form');
  // a change pushed while the operator is typing in the form must not overwrite their typing
  if (own || !f.contains(document.activeElement)) {
    f.elements.name.value = scene.name;
    f.elements.width.value = scene.width;
    f.elements.height.value = scene.height;
    f.elements.idle_color.value = scene.idle_color;
    for (const box of f.querySelectorAll('input[name="location_methods"]')) box.checked = scene.location_methods.includes(box.value);
  }
  const sel = $('scene-status');
  for (const opt of sel.options) opt.disabled = !NEXT_STATUS[scene.status].includes(opt.value);
  if (own || document.activeElement !== sel) sel.value = scene.status;
}

/** The selected scene as it is now: an edit's reply (`own`), or pushed by the live stream. */
export function sceneChanged(scene, own = true) {
  if (!selected(scene.scene_id)) return;
  const sizeChanged = state.scene.width !== scene.width || state.scene.height !== scene.height;
  state.scene = scene;
  state.scenes = state.scenes.map((s) => (s.scene_id === scene.scene_id ? scene : s));
  renderScenes();
  fillSceneForms(scene, own);
  if (sizeChanged) makeMap();
}

export async function loadJoinCode() {
  const id = state.scene.scene_id;
  const code = await api('GET', `/api/scenes/${id}/join-code`);
  if (!selected(id)) return;
  const canvas = $('join-qr');
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.height = Math.round(220 * ratio);
  drawQr(canvas, code.side, code.modules);
  const a = $('join-url');
  a.href = code.url;
  a.textContent = code.url;
}

export function wireScenes(hooks) {
  select = hooks.select;
  $('reload-scenes').addEventListener('click', () => messages.run(loadScenes, 'Scenes reloaded.'));

  $('scene-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target;
    const body = sceneBody(f);
    messages.run(async () => {
      const scene = await api('POST', '/api/scenes', body);
      state.me = await api('GET', '/api/auth/me'); // now its operator
      await loadScenes();
      await select(scene.scene_id);
      f.elements.name.value = '';
      return scene;
    }, (s) => `Scene “${s.name}” created (draft).`);
  });

  $('scene-edit-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const body = sceneBody(e.target);
    const id = state.scene.scene_id;
    messages.run(async () => {
      sceneChanged(await api('PATCH', `/api/scenes/${id}`, body));
    }, 'Scene saved.');
  });

  $('status-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const status = $('scene-status').value;
    if (status === state.scene.status) {
      messages.say(`The scene is already ${status}.`);
      return;
    }
    const id = state.scene.scene_id;
    messages.run(async () => {
      const scene = await api('PATCH', `/api/scenes/${id}`, { status });
      sceneChanged(scene);
      return scene;
    }, (s) => `The scene is now ${s.status}.`);
  });
}

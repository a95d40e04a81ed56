// The observer's reference points: photo pixel ↔ scene position pairs, added by a click on
// the photo or the clip's still (or "Add a point"), edited in their fields or picked on the
// scene map; at least four complete ones are needed before the picture can be uploaded.

import { $, state, messages } from './state.js';
import { drawPhoto } from './photo.js';
import { drawMap, renderMapMode } from './phones.js';

export function addPoint(px, py) {
  state.points.push({ px, py, x: null, y: null });
  state.picking = state.points.length - 1; // the next map click gives its scene position
  state.pickReturn = false;
  renderPoints();
  drawPhoto();
  drawMap();
}

function numberInput(labelText, value, cls, i, extra = {}) {
  const id = `point-${i}-${cls}`;
  const label = document.createElement('label');
  label.htmlFor = id;
  label.append(labelText);
  const input = document.createElement('input');
  Object.assign(input, { type: 'number', id, step: 'any', inputMode: 'decimal', className: `point-${cls}`, ...extra });
  input.value = value ?? '';
  input.dataset.index = i;
  input.dataset.field = cls;
  label.append(input);
  return label;
}

export function renderPoints() {
  const list = $('points');
  const focused = document.activeElement?.id;
  const items = state.points.map((pt, i) => {
    const li = document.createElement('li');
    const fs = document.createElement('fieldset');
    const complete = pointComplete(pt);
    fs.className = complete ? '' : 'incomplete';
    const legend = document.createElement('legend');
    legend.textContent = `Point ${i + 1}${complete ? '' : ' (needs its scene x and y)'}`;
    const photoRow = document.createElement('div');
    photoRow.className = 'row';
    photoRow.append(
      numberInput('Photo x (px)', pt.px, 'px', i, { min: 0 }),
      numberInput('Photo y (px)', pt.py, 'py', i, { min: 0 }),
    );
    const sceneRow = document.createElement('div');
    sceneRow.className = 'row';
    sceneRow.append(numberInput('Scene x', pt.x, 'x', i), numberInput('Scene y', pt.y, 'y', i));
    const buttons = document.createElement('div');
    buttons.className = 'row';
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'point-pick';
    pick.dataset.index = i;
    pick.textContent = 'Pick on map';
    pick.setAttribute('aria-pressed', String(state.picking === i));
    pick.setAttribute('aria-label', `Pick on map for point ${i + 1}`);
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'point-remove';
    remove.dataset.index = i;
    remove.textContent = 'Remove';
    remove.setAttribute('aria-label', `Remove point ${i + 1}`);
    buttons.append(pick, remove);
    fs.append(legend, photoRow, sceneRow, buttons);
    li.append(fs);
    return li;
  });
  list.replaceChildren(...items);
  if (focused && $(focused) && list.contains($(focused))) $(focused).focus();
  updateUploadState();
  renderMapMode();
}

export function pointComplete(pt) {
  return [pt.px, pt.py, pt.x, pt.y].every((v) => Number.isFinite(v));
}

export function updateUploadState() {
  const complete = state.points.filter(pointComplete).length;
  const incomplete = state.points.length - complete;
  const clip = Boolean(state.photo?.clip);
  const noSession = clip && state.flash?.scene_id !== state.scene?.scene_id;
  let hint;
  if (!state.photo) hint = 'Take or choose a photo, or record or choose a clip, first.';
  else if (noSession) hint = 'Start a flash session and film it: a clip is read against the codes of its session.';
  else if (complete < 4) hint = `At least 4 reference points are needed; ${complete} complete so far.`;
  else if (incomplete) hint = `${incomplete} point(s) still need a scene x and y (or remove them).`;
  else hint = `${complete} reference points: ready to upload.`;
  $('points-hint').textContent = hint;
  $('add-point').disabled = !state.photo;
  $('clear-points').disabled = state.points.length === 0;
  $('upload').disabled = !state.photo || noSession || complete < 4 || incomplete > 0 || state.uploading;
  $('upload').textContent = clip ? 'Upload clip and locate phones' : 'Upload photo and locate phones';
}

export function onPointInput(event) {
  const input = event.target;
  if (!input.dataset?.field) return;
  const pt = state.points[Number(input.dataset.index)];
  if (!pt) return;
  const v = input.value.trim() === '' ? null : Number(input.value);
  pt[input.dataset.field] = Number.isFinite(v) ? v : null;
  if (input.dataset.field === 'x' || input.dataset.field === 'y') state.picking = null;
  const fs = input.closest('fieldset');
  const complete = pointComplete(pt);
  fs.className = complete ? '' : 'incomplete';
  fs.querySelector('legend').textContent =
    `Point ${Number(input.dataset.index) + 1}${complete ? '' : ' (needs its scene x and y)'}`;
  for (const b of $('points').querySelectorAll('.point-pick')) {
    b.setAttribute('aria-pressed', String(Number(b.dataset.index) === state.picking));
  }
  updateUploadState();
  renderMapMode();
  drawPhoto();
  drawMap();
}

export function onPointsClick(event) {
  const button = event.target.closest('button');
  if (!button) return;
  const i = Number(button.dataset.index);
  if (button.classList.contains('point-remove')) {
    state.points.splice(i, 1);
    if (state.picking === i) state.picking = null;
    else if (state.picking > i) state.picking -= 1;
    renderPoints();
    drawPhoto();
    drawMap();
    messages.say(`Point ${i + 1} removed.`);
    const next = $('points').querySelectorAll('.point-remove')[Math.min(i, state.points.length - 1)];
    (next ?? $('add-point')).focus();
  } else if (button.classList.contains('point-pick')) {
    state.picking = state.picking === i ? null : i;
    renderPoints();
    drawPhoto();
    drawMap();
    if (state.picking != null) {
      state.pickReturn = true;
      messages.say(`Click the scene map where point ${i + 1} is.`);
      $('scene-map').scrollIntoView({ block: 'center', behavior: 'smooth' });
    }
  }
}

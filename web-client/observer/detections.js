// The observer's upload of the photo and what came back: the photo and its reference points
// sent with progress, the server's detections listed (each QR code found, whether it located
// its phone, and why not) and outlined on the photo (photo.js).

import { upload } from '../api.js';
import { $, state, messages, fmt, shortId } from './state.js';
import { drawPhoto, photoForUpload } from './photo.js';
import { pointComplete, updateUploadState } from './points.js';
import { drawMap } from './phones.js';

const STATUS_TEXT = {
  located: 'located',
  recorded: 'recorded, not moved',
  forged: 'rejected: not a code of this scene',
  expired: 'rejected: code expired',
  unknown_pixel: 'phone no longer in the scene',
  outside_scene: 'maps outside the scene (check the reference points)',
};

export async function uploadPhoto() {
  if (!state.photo || !state.scene) return;
  const points = state.points.filter(pointComplete).map(({ px, py, x, y }) => ({ px, py, x, y }));
  if (points.length < 4) throw new Error('at least 4 reference points with scene positions are needed');
  state.uploading = true;
  updateUploadState();
  const progress = $('upload-progress');
  const percent = $('upload-percent');
  progress.value = 0;
  percent.textContent = '0 %';
  try {
    const { blob, name } = await photoForUpload();
    const form = new FormData();
    form.append('points', JSON.stringify(points));
    form.append('photo', blob, name);
    messages.say('Uploading the photo…');
    let processing = false;
    const result = await upload('POST', `/api/scenes/${state.scene.scene_id}/photos`, form, (f) => {
      progress.value = f;
      percent.textContent = `${Math.round(f * 100)} %`;
      if (f >= 1 && !processing) {
        processing = true;
        messages.say('Uploaded; the server is looking for QR codes…');
      }
    });
    state.result = result;
    renderDetections();
    drawPhoto();
    drawMap();
    // the phones it located come by the live stream, as any placement does
    messages.say(`Photo done: ${result.detections.length} code(s) found, ${result.located} phone(s) located, ${result.rejected} rejected.`);
  } finally {
    state.uploading = false;
    updateUploadState();
  }
}

export function contradictionText(c) {
  return `It disagrees with its earlier position (${fmt(c.previous_x)}, ${fmt(c.previous_y)}) by ${c.previous_method}, ${fmt(c.distance)} units away: check it.`;
}

export function renderDetections() {
  const box = $('detections');
  const r = state.result;
  const summary = document.createElement('p');
  summary.id = 'detections-summary';
  if (!r) {
    summary.className = 'muted';
    summary.textContent = 'No photo uploaded yet.';
    box.replaceChildren(summary);
    return;
  }
  summary.textContent = `${r.detections.length} QR code(s) found in the ${r.width} × ${r.height} photo: ` +
    `${r.located} phone(s) located, ${r.rejected} rejected.`;
  if (!r.detections.length) {
    const tip = document.createElement('p');
    tip.className = 'hint';
    tip.textContent = 'No codes were found. Ask the phones to show their codes, get closer or zoom in, and hold still.';
    box.replaceChildren(summary, tip);
    return;
  }
  const legend = document.createElement('ul');
  legend.className = 'legend';
  legend.setAttribute('aria-label', 'Outline colours');
  legend.innerHTML =
    '<li><span class="swatch located" aria-hidden="true"></span>located (solid green)</li>' +
    '<li><span class="swatch other" aria-hidden="true"></span>not located (dashed red)</li>';
  const table = document.createElement('table');
  table.id = 'detections-table';
  table.innerHTML =
    '<caption class="visually-hidden">QR codes found in the photo</caption>' +
    '<thead><tr><th scope="col">#</th><th scope="col">Status</th><th scope="col">Phone</th>' +
    '<th scope="col">Scene position</th><th scope="col">Note</th></tr></thead>';
  const body = document.createElement('tbody');
  r.detections.forEach((d, i) => {
    const tr = document.createElement('tr');
    tr.dataset.status = d.status;
    const cells = [
      String(i + 1),
      STATUS_TEXT[d.status] ?? d.status,
      shortId(d.pixel_id),
      d.scene ? `(${fmt(d.scene[0])}, ${fmt(d.scene[1])})` : '—',
      d.contradiction ? contradictionText(d.contradiction) : '',
    ];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.children[1].className = d.status === 'located' ? 'ok' : 'error';
    body.append(tr);
  });
  table.append(body);
  const wrap = document.createElement('div');
  wrap.className = 'table-wrap';
  wrap.append(table);
  box.replaceChildren(summary, legend, wrap);
}

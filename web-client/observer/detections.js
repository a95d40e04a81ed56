// The observer's upload of the photo, or of the clip of a flash session, and what came back:
// the picture and its reference points sent with progress, the server's detections listed
// (each QR code or flashing phone found, whether it located its phone, and why not) and drawn
// on the photo or the clip's still (photo.js).

import { upload, ApiError } from '../api.js';
import { $, state, messages, clock, fmt, shortId } from './state.js';
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

/** What a clip's phone came to, in words. */
const BLOB_TEXT = {
  located: 'located',
  recorded: 'recorded, not moved',
  unknown_code: 'rejected: not a code of this session',
  duplicate: 'rejected: the same code seen twice (a reflection?)',
  outside_scene: 'maps outside the scene (check the reference points)',
  unknown_pixel: 'phone no longer in the scene',
  no_preamble: 'not a phone of this session (a light, another screen)',
  unclear: 'not readable (hidden for a while, too dim or too small)',
};
const BLOB_GROUP = {
  located: 'located', recorded: 'recorded', no_preamble: 'unreadable', unclear: 'unreadable',
};
/** The table lists this many of a clip's phones at most (a stadium is tens of thousands; all
 * are drawn on the still). */
const MAX_ROWS = 500;

/** What to do about a clip the server could not read, after its own sentence. */
const CLIP_HINTS = {
  no_phones_in_clip: 'Film the crowd while the phones flash, with their screens facing the camera.',
  no_session_in_clip: 'Start filming before the phones start flashing and stop after they stop; send the clip of the session started here.',
  clip_too_short: 'Start filming before the phones start flashing and stop after they stop.',
  unsupported_media_type: 'Choose the video file of the clip (MP4, MOV or WebM).',
  video_too_long: 'Trim the clip to the session (about 5 s) and send it again.',
  video_too_large: 'Film at 4K or less.',
  payload_too_large: 'Send a shorter clip, or film at a lower resolution.',
  gone: 'Start a new flash session and film it.',
  not_found: 'Start a new flash session and film it.',
};

/** Uploads the picture the reference points are marked on: the photo, or the clip. */
export function uploadPicture() {
  return state.photo?.clip ? uploadClip() : uploadPhoto();
}

/** The complete reference points, as the server takes them. */
function completePoints() {
  const points = state.points.filter(pointComplete).map(({ px, py, x, y }) => ({ px, py, x, y }));
  if (points.length < 4) throw new Error('at least 4 reference points with scene positions are needed');
  return points;
}

/** Sends `form` to `path` with the progress bar; resolves to the reply. */
async function send(path, form, processingText) {
  state.uploading = true;
  updateUploadState();
  const progress = $('upload-progress');
  const percent = $('upload-percent');
  progress.value = 0;
  percent.textContent = '0 %';
  try {
    let processing = false;
    return await upload('POST', path, form, (f) => {
      progress.value = f;
      percent.textContent = `${Math.round(f * 100)} %`;
      if (f >= 1 && !processing) {
        processing = true;
        messages.say(processingText);
      }
    });
  } finally {
    state.uploading = false;
    updateUploadState();
  }
}

async function uploadClip() {
  const p = state.photo;
  const session = state.flash;
  if (!p?.clip || !state.scene) return;
  if (!session || session.scene_id !== state.scene.scene_id) {
    throw new Error('start a flash session first (“Start flashing”) and film it: a clip is read against the codes its session gave the phones');
  }
  const points = completePoints();
  const left = session.ends_at_us / 1000 - clock.now();
  if (left > 0) throw new Error(`the phones are still flashing; send the clip once the session is over (in ${Math.ceil(left / 1000)} s)`);
  // the server reads the fields in this order: the session and the points before the file
  const form = new FormData();
  form.append('session_id', session.session_id);
  form.append('points', JSON.stringify(points));
  form.append('still_at_s', String(p.clip.stillAt));
  form.append('video', p.blob, p.name);
  messages.say('Uploading the clip…');
  let result;
  try {
    result = await send(`/api/scenes/${state.scene.scene_id}/videos`, form,
      'Uploaded; the server is reading every flashing phone in the clip (this can take a minute)…');
  } catch (e) {
    const hint = e instanceof ApiError ? CLIP_HINTS[e.code] : null;
    if (hint) throw new ApiError(e.status, e.code, `${e.message.replace(/\.$/, '')}. ${hint}`, e.body);
    throw e;
  }
  state.result = { ...result, kind: 'clip' };
  renderDetections();
  drawPhoto();
  drawMap();
  // the phones it located come by the live stream, as any placement does
  messages.say(`Clip read: ${result.blobs} flashing spot(s) found, ${result.located} phone(s) located, ` +
    `${result.recorded} recorded, ${result.rejected} rejected, ${result.unreadable} not readable.`);
}

export async function uploadPhoto() {
  if (!state.photo || !state.scene) return;
  const points = completePoints();
  const { blob, name } = await photoForUpload();
  const form = new FormData();
  form.append('points', JSON.stringify(points));
  form.append('photo', blob, name);
  messages.say('Uploading the photo…');
  const result = await send(`/api/scenes/${state.scene.scene_id}/photos`, form, 'Uploaded; the server is looking for QR codes…');
  state.result = { ...result, kind: 'photo' };
  renderDetections();
  drawPhoto();
  drawMap();
  // the phones it located come by the live stream, as any placement does
  messages.say(`Photo done: ${result.detections.length} code(s) found, ${result.located} phone(s) located, ${result.rejected} rejected.`);
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
  if (r.kind === 'clip') {
    renderClipDetections(box, summary, r);
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

function renderClipDetections(box, summary, r) {
  summary.textContent = `${r.blobs} flashing spot(s) found in the ${r.width} × ${r.height} clip ` +
    `(${r.frames} frames, the session from ${fmt(r.session_start_s)} s): ${r.located} phone(s) located, ` +
    `${r.recorded} recorded, ${r.rejected} rejected, ${r.unreadable} not readable.`;
  const timing = document.createElement('p');
  timing.className = 'muted';
  const s = r.seconds ?? {};
  timing.textContent = `Read in ${fmt((s.decode_s ?? 0) + (s.analyze_s ?? 0) + (s.place_s ?? 0))} s ` +
    `(decoding ${fmt(s.decode_s)} s, reading the codes ${fmt(s.analyze_s)} s, placing ${fmt(s.place_s)} s).`;
  const parts = [summary, timing];
  const tip = (text) => {
    const p = document.createElement('p');
    p.className = 'hint';
    p.textContent = text;
    parts.push(p);
  };
  if (!r.detections.length) {
    tip('No flashing phones were found. Film the whole session, from before the phones start until after they stop, with their screens in view.');
  } else if (r.located === 0 && r.detections.some((d) => d.status === 'outside_scene')) {
    tip('Phones were read but map outside the scene: check the reference points against the still.');
  }
  // the phones read come first; the spots that could not be read (stray lights, screens of
  // something else, phones hidden a while) are many in a real crowd, and folded away
  const rows = r.detections.map((d, i) => [d, i]);
  const read = rows.filter(([d]) => BLOB_GROUP[d.status] !== 'unreadable');
  const unread = rows.filter(([d]) => BLOB_GROUP[d.status] === 'unreadable');
  const order = { located: 0, recorded: 1 };
  read.sort(([a], [b]) => (order[a.status] ?? 2) - (order[b.status] ?? 2));
  if (read.length) parts.push(...blobTable(read, 'detections-table', 'Phones read in the clip'));
  if (unread.length) {
    const details = document.createElement('details');
    const title = document.createElement('summary');
    title.textContent = `${unread.length} spot(s) not readable (drawn grey on the still)`;
    details.append(title, ...blobTable(unread, 'unreadable-table', 'Spots in the clip that could not be read'));
    parts.push(details);
  }
  box.replaceChildren(...parts);
}

/** A table of a clip's spots (at most MAX_ROWS rows, and a line saying how many more). */
function blobTable(rows, id, caption) {
  const table = document.createElement('table');
  table.id = id;
  table.innerHTML =
    `<caption class="visually-hidden">${caption}</caption>` +
    '<thead><tr><th scope="col">#</th><th scope="col">Status</th><th scope="col">Phone</th>' +
    '<th scope="col">In the still (px)</th><th scope="col">Scene position</th><th scope="col">Note</th></tr></thead>';
  const body = document.createElement('tbody');
  for (const [d, i] of rows.slice(0, MAX_ROWS)) {
    const tr = document.createElement('tr');
    tr.dataset.status = d.status;
    const cells = [
      String(i + 1),
      BLOB_TEXT[d.status] ?? d.status,
      shortId(d.pixel_id),
      `(${Math.round(d.x)}, ${Math.round(d.y)})`,
      d.scene ? `(${fmt(d.scene[0])}, ${fmt(d.scene[1])})` : '—',
      d.contradiction ? contradictionText(d.contradiction) : '',
    ];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const group = BLOB_GROUP[d.status] ?? 'rejected';
    const status = tr.children[1];
    status.className = d.status === 'located' ? 'ok' : group === 'unreadable' ? 'muted' : 'error';
    const swatch = document.createElement('span');
    swatch.className = `swatch blob ${group}`;
    swatch.setAttribute('aria-hidden', 'true');
    status.prepend(swatch);
    body.append(tr);
  }
  table.append(body);
  const wrap = document.createElement('div');
  wrap.className = 'table-wrap';
  wrap.append(table);
  if (rows.length <= MAX_ROWS) return [wrap];
  const more = document.createElement('p');
  more.className = 'muted';
  more.textContent = `The first ${MAX_ROWS} of ${rows.length} are listed; every one is drawn on the still.`;
  return [wrap, more];
}

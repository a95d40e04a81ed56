// The observer's photo: the camera (start, capture, stop) or a chosen file, made upright
// when its EXIF says it is rotated, and drawn with the detections' outlines and the
// reference points over it; a click on it adds a reference point (points.js). A clip's still
// (clip.js) is drawn here the same way, with the clip's phones as rings over it.

import {
  $, state, messages, COLOR_LOCATED, COLOR_OTHER, COLOR_REF, COLOR_RECORDED, COLOR_REJECTED, COLOR_UNREADABLE,
} from './state.js';
import { renderDetections } from './detections.js';
import { addPoint, renderPoints } from './points.js';
import { drawMap } from './phones.js';
import { releaseClip } from './clip.js';

/** Largest side of the on-screen copy of the photo (the photo itself is sent as it is). */
const MAX_DISPLAY_SIDE = 2048;

export async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('this browser cannot use the camera here (it needs HTTPS or localhost); choose a photo file instead');
  }
  stopCamera();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: { facingMode: { ideal: 'environment' }, width: { ideal: 3840 }, height: { ideal: 2160 } },
  });
  state.stream = stream;
  const video = $('camera-video');
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  $('camera-capture').disabled = false;
  $('camera-stop').disabled = false;
  messages.say(`Camera on (${video.videoWidth} × ${video.videoHeight}). Press “Capture photo”.`);
  $('camera-capture').focus();
}

export function stopCamera() {
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  state.stream = null;
  const video = $('camera-video');
  video.srcObject = null;
  video.hidden = true;
  $('camera-capture').disabled = true;
  $('camera-stop').disabled = true;
}

function canvasBlob(canvas, type, quality) {
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the image could not be encoded'))), type, quality),
  );
}

export async function capture() {
  const video = $('camera-video');
  if (!state.stream || !video.videoWidth) throw new Error('the camera is not ready yet');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await canvasBlob(canvas, 'image/jpeg', 0.92);
  stopCamera();
  await setPhoto(blob, 'camera.jpg');
}

/**
 * EXIF orientation of a JPEG (1 when none). Browsers show photos upright, but the server reads
 * the stored pixels; a rotated photo is therefore re-encoded upright before it is sent, so the
 * points marked on screen and the outlines coming back are in the same pixels.
 */
async function jpegOrientation(blob) {
  try {
    const v = new DataView(await blob.slice(0, 128 * 1024).arrayBuffer());
    if (v.getUint16(0) !== 0xffd8) return 1;
    let off = 2;
    while (off + 4 <= v.byteLength) {
      const marker = v.getUint16(off);
      const len = v.getUint16(off + 2);
      if ((marker & 0xff00) !== 0xff00 || marker === 0xffda) break;
      if (marker === 0xffe1 && v.getUint32(off + 4) === 0x45786966) {
        const tiff = off + 10;
        const little = v.getUint16(tiff) === 0x4949;
        const ifd = tiff + v.getUint32(tiff + 4, little);
        const n = v.getUint16(ifd, little);
        for (let i = 0; i < n; i++) {
          const e = ifd + 2 + i * 12;
          if (v.getUint16(e, little) === 0x0112) return v.getUint16(e + 8, little);
        }
        return 1;
      }
      off += 2 + len;
    }
  } catch {
    // truncated or odd: treat as upright
  }
  return 1;
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(blob);
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new Error('this file cannot be shown as an image here; use a JPEG or PNG photo'));
    };
    img.src = url;
  });
}

/** Lets go of the picture shown (its object URL, or its clip), before another replaces it. */
export function releasePhoto() {
  const p = state.photo;
  if (!p) return;
  if (p.clip) releaseClip(p.clip);
  else URL.revokeObjectURL(p.image.src);
  state.photo = null;
}

export async function setPhoto(blob, name) {
  const image = await loadImage(blob);
  releasePhoto();
  let reencode = !['image/jpeg', 'image/png'].includes(blob.type);
  if (blob.type === 'image/jpeg' && (await jpegOrientation(blob)) !== 1) reencode = true;
  state.photo = { blob, name, image, width: image.naturalWidth, height: image.naturalHeight, reencode };
  state.result = null;
  state.picking = null;
  const kept = state.points.length;
  renderDetections();
  renderPoints();
  $('photo-canvas').hidden = false;
  drawPhoto();
  drawMap();
  $('photo-info').textContent =
    `Photo: ${name}, ${image.naturalWidth} × ${image.naturalHeight} pixels, ${(blob.size / 1e6).toFixed(1)} MB.`;
  messages.say(`Photo ready. ${kept ? `The ${kept} reference point(s) from before were kept; check them against this photo.` : 'Now click the photo to mark reference points.'}`);
}

/** The bytes to send: the file itself, or an upright JPEG when it is rotated or not JPEG/PNG. */
export async function photoForUpload() {
  const p = state.photo;
  if (!p.reencode) return { blob: p.blob, name: p.name };
  const canvas = document.createElement('canvas');
  canvas.width = p.width;
  canvas.height = p.height;
  canvas.getContext('2d').drawImage(p.image, 0, 0);
  const blob = await canvasBlob(canvas, 'image/jpeg', 0.95);
  return { blob, name: p.name.replace(/\.[^.]*$/, '') + '.jpg' };
}

export function drawPhoto() {
  const canvas = $('photo-canvas');
  const p = state.photo;
  if (!p) return;
  const ds = Math.min(1, MAX_DISPLAY_SIDE / Math.max(p.width, p.height));
  const w = Math.round(p.width * ds);
  const h = Math.round(p.height * ds);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext('2d');
  ctx.drawImage(p.image, 0, 0, w, h);
  // canvas pixels per CSS pixel, so strokes and labels keep a readable size on screen
  const box = canvas.getBoundingClientRect();
  const k = box.width ? w / box.width : 1;

  $('photo-legend').hidden = Boolean(p.clip);
  $('blob-legend').hidden = !p.clip;
  const r = state.result;
  if (r?.kind === 'clip') drawBlobs(ctx, r, p, ds, k);
  else if (r) {
    // outlines are in the pixels the server decoded; scale in case they differ from ours
    const sx = (p.width / (r.width || p.width)) * ds;
    const sy = (p.height / (r.height || p.height)) * ds;
    r.detections.forEach((d, i) => {
      const located = d.status === 'located';
      ctx.beginPath();
      d.outline.forEach(([x, y], j) => (j ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
      ctx.closePath();
      ctx.lineWidth = 3 * k;
      ctx.setLineDash(located ? [] : [6 * k, 4 * k]);
      ctx.strokeStyle = located ? COLOR_LOCATED : COLOR_OTHER;
      ctx.stroke();
      ctx.setLineDash([]);
      const [x0, y0] = d.outline[0];
      label(ctx, String(i + 1), x0 * sx, y0 * sy - 4 * k, k, located ? COLOR_LOCATED : COLOR_OTHER);
    });
  }

  state.points.forEach((pt, i) => {
    if (!Number.isFinite(pt.px) || !Number.isFinite(pt.py)) return;
    const x = pt.px * ds;
    const y = pt.py * ds;
    const rad = 7 * k;
    ctx.beginPath();
    ctx.arc(x, y, rad, 0, 2 * Math.PI);
    ctx.fillStyle = COLOR_REF;
    ctx.fill();
    ctx.lineWidth = 2 * k;
    ctx.strokeStyle = i === state.picking ? '#fff' : '#000';
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x - rad * 2, y);
    ctx.lineTo(x + rad * 2, y);
    ctx.moveTo(x, y - rad * 2);
    ctx.lineTo(x, y + rad * 2);
    ctx.lineWidth = 1 * k;
    ctx.stroke();
    label(ctx, `P${i + 1}`, x + rad + 3 * k, y - rad, k, COLOR_REF);
  });
}

/** The colour a clip's phone is drawn in, by its status. */
export function blobColour(status) {
  if (status === 'located') return COLOR_LOCATED;
  if (status === 'recorded') return COLOR_RECORDED;
  if (status === 'no_preamble' || status === 'unclear') return COLOR_UNREADABLE;
  return COLOR_REJECTED; // read, but placed nobody
}

/** A ring round each phone found in the clip, in its status's colour; the unreadable ones
 * (lights, other screens) first, so a located phone is never hidden under one. */
function drawBlobs(ctx, r, p, ds, k) {
  // centres are in the video's pixels the server decoded; scale in case they differ from ours
  const sx = (p.width / (r.width || p.width)) * ds;
  const sy = (p.height / (r.height || p.height)) * ds;
  const rank = (d) => ({ no_preamble: 0, unclear: 0, recorded: 2, located: 3 })[d.status] ?? 1;
  const order = [...r.detections].sort((a, b) => rank(a) - rank(b));
  const rad = 6 * k;
  ctx.lineWidth = 2.5 * k;
  for (const d of order) {
    ctx.beginPath();
    ctx.arc(d.x * sx, d.y * sy, rad, 0, 2 * Math.PI);
    ctx.strokeStyle = blobColour(d.status);
    ctx.stroke();
  }
}

function label(ctx, text, x, y, k, color) {
  ctx.font = `bold ${Math.round(14 * k)}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width;
  ctx.fillStyle = 'rgba(0,0,0,0.75)';
  ctx.fillRect(x - 2 * k, y - 14 * k, w + 4 * k, 18 * k);
  ctx.fillStyle = color;
  ctx.fillText(text, x, y);
}

export function onPhotoClick(event) {
  const p = state.photo;
  if (!p) return;
  const box = event.currentTarget.getBoundingClientRect();
  const px = Math.round(((event.clientX - box.left) / box.width) * p.width);
  const py = Math.round(((event.clientY - box.top) / box.height) * p.height);
  addPoint(Math.max(0, Math.min(p.width, px)), Math.max(0, Math.min(p.height, py)));
  messages.say(`Point ${state.points.length} added at photo (${px}, ${py}). Type its scene x and y, or click the scene map.`);
}

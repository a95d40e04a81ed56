// The observer's clip of a flash session, recorded here (flash.js) or chosen as a file, and
// its still: one frame of it, drawn at the video's own size into a canvas, which becomes the
// picture the reference points are marked on (state.photo, with `clip`), exactly as a photo
// is. A slider picks the still's time; that time goes with the clip as `still_at_s`, since
// the server finds the blobs' centres in that frame (a hand-held camera moves a little).

import { $, state, messages, fmt } from './state.js';
import { renderDetections } from './detections.js';
import { drawPhoto, releasePhoto } from './photo.js';
import { renderPoints } from './points.js';
import { drawMap } from './phones.js';

/** A recording from a browser may not say its length; seeking far past its end makes the
 * browser find it. */
const FAR_PAST_END_S = 1e7;
/** Seeking a frame of a large clip can take a while on a phone; past this it has failed. */
const SEEK_TIMEOUT_MS = 15000;

/** Resolves on `ok` (an event of `el`), rejects on 'error' or after `ms`. */
function event(el, ok, ms, what) {
  return new Promise((resolve, reject) => {
    const done = (f, v) => {
      clearTimeout(timer);
      el.removeEventListener(ok, onOk);
      el.removeEventListener('error', onError);
      f(v);
    };
    const onOk = (e) => done(resolve, e);
    const onError = () => done(reject, new Error(what));
    const timer = setTimeout(() => done(reject, new Error(what)), ms);
    el.addEventListener(ok, onOk);
    el.addEventListener('error', onError);
  });
}

const UNPLAYABLE = 'this browser cannot play this video, so no still of it can be shown to mark the reference points on. ' +
  'Use an MP4 (H.264) or WebM clip, or record it on this page';

async function seek(video, t) {
  if (video.readyState >= 2 && Math.abs(video.currentTime - t) < 1e-4) return;
  const seeked = event(video, 'seeked', SEEK_TIMEOUT_MS, 'the clip could not be shown at that time');
  video.currentTime = t;
  await seeked;
}

/** The clip's length in seconds (a browser's recording may say Infinity until it is read). */
async function clipDuration(video) {
  if (Number.isFinite(video.duration)) return video.duration;
  const found = event(video, 'durationchange', SEEK_TIMEOUT_MS, 'the length of the clip could not be found');
  video.currentTime = FAR_PAST_END_S;
  await found;
  // a few browsers report the true length only once the seek is done
  if (!Number.isFinite(video.duration)) await event(video, 'seeked', SEEK_TIMEOUT_MS, 'the length of the clip could not be found');
  const d = video.duration;
  if (!Number.isFinite(d) || d <= 0) throw new Error('the length of the clip could not be found');
  return d;
}

/**
 * Makes `blob` the clip the reference points are marked on, its still at `stillAt` seconds
 * (default: the middle of the clip); `recorded`: the page recorded it. The clip films the
 * page's flash session (state.flash).
 */
export async function setClip(blob, name, { stillAt = null, recorded = false } = {}) {
  if (blob.type && !blob.type.startsWith('video/')) {
    throw new Error(`“${name}” is not a video (${blob.type}); choose the clip of the flash session`);
  }
  const url = URL.createObjectURL(blob);
  const video = document.createElement('video');
  Object.assign(video, { muted: true, playsInline: true, preload: 'auto' });
  let duration;
  try {
    const loaded = event(video, 'loadeddata', SEEK_TIMEOUT_MS, UNPLAYABLE);
    video.src = url;
    await loaded;
    if (!video.videoWidth || !video.videoHeight) throw new Error(UNPLAYABLE);
    duration = await clipDuration(video);
  } catch (e) {
    URL.revokeObjectURL(url);
    video.removeAttribute('src');
    throw e;
  }
  const image = document.createElement('canvas');
  image.width = video.videoWidth;
  image.height = video.videoHeight;
  const at = Math.max(0, Math.min(duration, stillAt ?? duration / 2));
  const clip = { video, url, duration, stillAt: at, recorded };
  await drawFrame(clip, image, at);

  releasePhoto();
  state.photo = { blob, name, image, width: image.width, height: image.height, reencode: false, clip };
  state.result = null;
  state.picking = null;
  const kept = state.points.length;
  const slider = $('still-at');
  slider.max = String(duration);
  slider.value = String(clip.stillAt);
  $('still-row').hidden = false;
  $('still-at-text').textContent = stillText(clip);
  renderDetections();
  renderPoints();
  $('photo-canvas').hidden = false;
  drawPhoto();
  drawMap();
  $('clip-info').textContent =
    `Clip: ${name}, ${image.width} × ${image.height} pixels, ${fmt(duration)} s, ${sizeText(blob.size)}.`;
  $('photo-info').textContent = 'No photo: the clip’s still is the picture now.';
  messages.say(`Clip ready; its still at ${fmt(clip.stillAt)} s is shown in step 3. ` +
    (kept ? `The ${kept} reference point(s) from before were kept; check them against this still.` : 'Click it to mark the reference points.'));
}

function sizeText(bytes) {
  return bytes < 1e5 ? `${Math.ceil(bytes / 1e3)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

function stillText(clip) {
  return `${clip.stillAt.toFixed(2)} s of ${clip.duration.toFixed(2)} s`;
}

/** Draws the clip's frame at `t` seconds into `image`; the clip's still is then at the frame's time. */
async function drawFrame(clip, image, t) {
  await seek(clip.video, t);
  image.getContext('2d').drawImage(clip.video, 0, 0, image.width, image.height);
  clip.stillAt = clip.video.currentTime;
}

let seeking = null; // the still time being drawn, so a dragged slider draws only its last place
let wanted = null;

/** The slider moved: draws the still at its time (the last one asked for, once the one being
 * drawn is done). */
export async function onStillInput() {
  const p = state.photo;
  if (!p?.clip) return;
  wanted = Number($('still-at').value);
  if (seeking !== null) return;
  try {
    while (wanted !== null && state.photo === p) {
      seeking = wanted;
      wanted = null;
      await drawFrame(p.clip, p.image, seeking);
      $('still-at-text').textContent = stillText(p.clip);
      drawPhoto();
    }
  } catch (e) {
    messages.error(e, 'The still');
  } finally {
    seeking = null;
  }
}

/** Lets go of a clip that is no longer the picture. */
export function releaseClip(clip) {
  clip.video.removeAttribute('src');
  clip.video.load();
  URL.revokeObjectURL(clip.url);
  $('still-row').hidden = true;
  $('clip-info').textContent = 'No clip yet.';
}

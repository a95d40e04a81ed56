// Which frame a show shows at a server instant, as the server's playback does
// (src/playback.rs): the timeline's current state from its effective instant on, the
// previous one before; the position from the anchor; the frame from the durations.
// Pure functions of a ShowState: no DOM, no clock.

export function stateAt(tl, t) {
  return t >= tl.current.effective_ms ? tl.current : tl.previous;
}

export function positionAt(pb, t) {
  if (pb.mode === 'stopped') return null;
  if (pb.mode === 'paused') return pb.base_ms;
  if (t < pb.anchor_ms) return null;
  return pb.base_ms + (t - pb.anchor_ms);
}

export const totalMs = (show) => show.frames.reduce((s, f) => s + f.duration_ms, 0);

/** Index of the frame at `position` ms into the show, or null. */
export function frameAt(show, position) {
  const total = totalMs(show);
  if (total <= 0 || position == null || position < 0) return null;
  let within;
  if (show.loop) within = ((position % total) + total) % total;
  else if (position >= total) return null;
  else within = position;
  let end = 0;
  for (let i = 0; i < show.frames.length; i++) {
    end += show.frames[i].duration_ms;
    if (within < end) return i;
  }
  return null;
}

/** For a clip at `position` ms into the show, its show frame there (the `index` the raster
 *  endpoint takes): the clip's first plus floor(ms into the clip × fps / 1000), as
 *  Timeline::segments computes it. Null for a still. */
export function clipIndexAt(show, frame, position) {
  const f = show.frames[frame];
  if (!f?.clip || position == null) return null;
  const total = totalMs(show);
  const within = show.loop ? ((position % total) + total) % total : position;
  let start = 0;
  for (let i = 0; i < frame; i++) start += show.frames[i].duration_ms;
  const k = Math.floor(((within - start) * f.clip.fps) / 1000);
  return f.clip.first + Math.min(Math.max(k, 0), f.clip.frames - 1);
}

/** What the show does at server instant t (ms): {mode, position, frame, index, waiting}. */
export function showAt(showState, t) {
  t = Math.floor(t);
  const pb = stateAt(showState.timeline, t);
  const position = positionAt(pb, t);
  let frame = null;
  if (pb.mode === 'playing' || pb.mode === 'paused') frame = frameAt(showState.show, position);
  const index = frame == null ? null : clipIndexAt(showState.show, frame, position);
  return { mode: pb.mode, position, frame, index, waiting: pb.mode === 'playing' && position == null };
}

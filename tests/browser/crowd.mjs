// What the crowd sees: phone pages in Chromium behind the delay relay, each with its clock
// shifted, play a show of a different colour every frame; each page logs every refresh (its
// requestAnimationFrame time and the colour it put on screen), and the instants are put on the
// true clock (this machine's, the server's) to see when each colour change really appeared.
// Used by tests/browser/crowd.test.mjs (6 pages) and benches/crowd.mjs (20).

import { shiftClock, pageClockTruth, png, sleep, until } from './harness.mjs';
import { random as seeded } from './flashclip.mjs';
import { percentile } from './truth.mjs';

export const FPS = 30;
export const SHOW_MS = 10000;
const FRAMES = (SHOW_MS / 1000) * FPS;

/** Frame i's colour: all 300 differ, and so do neighbours. */
export function colourOf(i) {
  return [i % 256, 40 + 128 * Math.floor(i / 256), (i * 73) % 256];
}

/** Frame i's duration: 33 or 34 ms, a second to every 30. */
function durationOf(i) {
  return Math.floor((1000 * (i + 1)) / FPS) - Math.floor((1000 * i) / FPS);
}

/** A scene with a looping show of 300 frames, open; returns its id, the join path, a token. */
export async function crowdScene(server) {
  const token = await server.login();
  const scene = await server.api('POST', '/api/scenes', { name: 'crowd', width: 10, height: 10 }, token);
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  let next = 0;
  const upload = async () => {
    for (let i = next++; i < FRAMES; i = next++) {
      const res = await fetch(`${server.base}/api/scenes/${scene.scene_id}/frames?duration_ms=${durationOf(i)}&name=f${String(i).padStart(3, '0')}`, {
        method: 'POST',
        headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
        body: png(4, 4, colourOf(i)),
      });
      if (res.status !== 201) throw new Error(`frame ${i}: ${res.status} ${await res.text()}`);
    }
  };
  await Promise.all(Array.from({ length: 6 }, upload));
  // the frames in their order, whatever order the uploads landed in
  const frames = await server.api('GET', `/api/scenes/${scene.scene_id}/frames`, undefined, token);
  frames.sort((a, b) => a.original_name.localeCompare(b.original_name));
  await server.api('PUT', `/api/scenes/${scene.scene_id}/show`, { frame_ids: frames.map((f) => f.frame_id), loop: true }, token);
  const { path: joinPath } = await server.api('GET', `/api/scenes/${scene.scene_id}/join-code`);
  return { sceneId: scene.scene_id, joinPath, token };
}

/**
 * A phone page in its own context, its clock `shiftMs` off, joined through `base` (the relay);
 * its document can be made hidden (`setHidden`), as when the user switches away.
 */
export async function crowdPhone(browser, base, joinPath, shiftMs) {
  const context = await browser.newContext({ viewport: { width: 120, height: 200 }, isMobile: true, hasTouch: true });
  await shiftClock(context, shiftMs);
  await context.addInitScript(() => {
    window.__hidden = false;
    Object.defineProperty(Document.prototype, 'visibilityState', { get: () => (window.__hidden ? 'hidden' : 'visible') });
    Object.defineProperty(Document.prototype, 'hidden', { get: () => window.__hidden });
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('phone page error:', e.message));
  await page.goto(base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join', 30000);
  const cdp = await context.newCDPSession(page);
  return { page, shiftMs, cdp, pixelId: await page.evaluate(() => window.c3s.pixelId) };
}

/**
 * The tab goes to the background (the document says hidden, then the page is frozen: no
 * refresh, no timer, no message handled) or comes back (thawed, then visible).
 */
export async function setHidden(phone, hidden) {
  if (hidden) {
    await phone.page.evaluate(() => {
      window.__hidden = true;
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await phone.cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
  } else {
    await phone.cdp.send('Page.setWebLifecycleState', { state: 'active' });
    await phone.page.evaluate(() => {
      window.__hidden = false;
      document.dispatchEvent(new Event('visibilitychange'));
    });
  }
}

/** Each page's refreshes so far, on the true clock: [{t, colour}], and its refresh period. */
async function refreshes(phone) {
  const truth = await pageClockTruth(phone.page);
  const log = await phone.page.evaluate(() => window.c3s.refreshes.map((r) => [r.local, r.color]));
  const list = log.map(([local, colour]) => ({ t: local - phone.shiftMs + truth, colour }));
  const gaps = list.slice(1).map((r, i) => r.t - list[i].t).filter((g) => g > 0 && g < 100).sort((a, b) => a - b);
  return { list, periodMs: gaps.length ? gaps[Math.floor(gaps.length / 2)] : 1000 / 60 };
}

const round = (v) => (v === null ? null : Math.round(v * 100) / 100);

/**
 * The figures of the colour changes scheduled in [from, to) (server ms) of a show anchored at
 * `anchor`, over every page: the share that appeared within a refresh of their instant, the
 * share on the very refresh nearest it, each change's spread across the pages, and the changes
 * no refresh was near (the page skipped a refresh: the machine, not the clock).
 */
export function figures(pages, anchor, from, to) {
  const changes = [];
  for (let lap = Math.floor((from - anchor) / SHOW_MS); anchor + lap * SHOW_MS < to; lap++) {
    let at = anchor + lap * SHOW_MS;
    for (let i = 0; i < FRAMES; i++) {
      if (at >= from && at < to) changes.push({ at, key: colourOf(i).join(','), prev: colourOf((i + FRAMES - 1) % FRAMES).join(',') });
      at += durationOf(i);
    }
  }
  let counted = 0;
  let within = 0;
  let nearest = 0;
  let skipped = 0;
  let missing = 0;
  const errors = [];
  const spreads = [];
  let period = 1000 / 60;
  for (const c of changes) {
    const seen = [];
    for (const { list, periodMs } of pages) {
      period = periodMs;
      // the refresh nearest the instant; none within half a refresh: that refresh was skipped
      let best = null;
      for (const r of list) if (best === null || Math.abs(r.t - c.at) < Math.abs(best.t - c.at)) best = r;
      if (!best || Math.abs(best.t - c.at) > periodMs / 2 + 0.5) {
        skipped += 1;
        continue;
      }
      const first = list.find((r) => r.colour === c.key && Math.abs(r.t - c.at) < 250);
      counted += 1;
      if (!first) {
        missing += 1;
        continue;
      }
      const e = first.t - c.at;
      errors.push(Math.abs(e));
      if (Math.abs(e) <= periodMs) within += 1;
      if (first === best) nearest += 1;
      seen.push(first.t);
    }
    if (seen.length === pages.length) spreads.push(Math.max(...seen) - Math.min(...seen));
  }
  return {
    pages: pages.length,
    changes: changes.length,
    counted,
    within_refresh_share: counted ? within / counted : null,
    nearest_refresh_share: counted ? nearest / counted : null,
    missing,
    skipped_refreshes: skipped,
    error_p50_ms: round(percentile(errors, 0.5)),
    error_p99_ms: round(percentile(errors, 0.99)),
    spread_p99_ms: round(percentile(spreads, 0.99)),
    spread_max_ms: round(percentile(spreads, 1)),
    refresh_ms: round(period),
  };
}

/**
 * The whole run: `count` pages join through `relay`, are placed, the show plays; figures for
 * the steady show, then after every tab was hidden for 3 s and shown again, then after a 3 s
 * network stall. `log` gets progress lines.
 */
export async function crowdRun({ browser, server, relay, count, seed = 1, log = () => {} }) {
  const { sceneId, joinPath, token } = await crowdScene(server);
  const random = seeded(seed);
  const phones = [];
  for (let i = 0; i < count; i++) {
    // clocks off by up to ±10 minutes, each its own way
    phones.push(await crowdPhone(browser, relay.base, joinPath, (random() * 2 - 1) * 600000));
  }
  log(`${count} pages joined`);
  await server.api('POST', `/api/scenes/${sceneId}/pixels/positions`, {
    positions: phones.map((p, i) => ({ pixel_id: p.pixelId, x: 0.5 + (i % 10), y: 0.5 + Math.floor(i / 10) })),
  }, token);
  // let the clocks settle as they would while the crowd waits for the show
  await sleep(8000);
  await server.api('POST', `/api/scenes/${sceneId}/playback`, { command: 'play', start_in_ms: 2000 }, token);
  const show = await server.api('GET', `/api/scenes/${sceneId}/show`, undefined, token);
  const anchor = show.timeline.current.anchor_ms;
  const wait = (serverMs) => sleep(Math.max(0, serverMs - Date.now()));

  await wait(anchor + SHOW_MS + 200);
  const steady = figures(await Promise.all(phones.map(refreshes)), anchor, anchor + 500, anchor + SHOW_MS);
  log(`steady: ${JSON.stringify(steady)}`);

  for (const p of phones) await setHidden(p, true);
  await sleep(3000);
  for (const p of phones) await setHidden(p, false);
  const shown = Date.now();
  await wait(shown + 6000);
  const afterHidden = figures(await Promise.all(phones.map(refreshes)), anchor, shown + 1000, shown + 6000);
  log(`after hidden: ${JSON.stringify(afterHidden)}`);

  await relay.stall(3000);
  const resumed = Date.now() + 3000;
  await wait(resumed + 6500);
  const afterStall = figures(await Promise.all(phones.map(refreshes)), anchor, resumed + 1500, resumed + 6500);
  log(`after stall: ${JSON.stringify(afterStall)}`);
  const sync = await Promise.all(phones.map((p) => p.page.evaluate(() => window.c3s.syncErrorMs)));
  for (const p of phones) await p.page.context().close();
  return { steady, after_hidden: afterHidden, after_stall: afterStall, sync_error_bound_ms: { max: round(Math.max(...sync)), min: round(Math.min(...sync)) } };
}

// Flash locating from the observer page, end to end without a real camera: phone pages join,
// the observer page starts a flash session, the phones get their codes; a clip of them
// flashing those codes is drawn and encoded with FFmpeg (what a camera would have filmed),
// chosen on the page, four reference points are clicked on its still, and the upload locates
// every phone where it stands, drawn on the still and on the map. And the page records a
// session with a (fake) camera by itself, from the instant the session says to film.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Server, launchBrowser, until, sleep, ROOT, ADMIN } from './harness.mjs';
import { flashClip, testPatternY4m } from './flashclip.mjs';

const SCENE_W = 40;
const SCENE_H = 20;
/** The clip: 640 × 360 at 30 fps; the scene fills the rectangle (80, 60)–(560, 300), 12 video
 * pixels a scene unit, so its corners are where the observer clicks. */
const VIDEO_W = 640;
const VIDEO_H = 360;
const FPS = 30;
const PX_PER_UNIT = 12;
const ORIGIN = [80, 60];
const toVideo = (x, y) => [ORIGIN[0] + x * PX_PER_UNIT, ORIGIN[1] + y * PX_PER_UNIT];
/** Where the phones stand, scene units. */
const PLACES = [[10, 5], [30, 7], [20, 15]];
/** The session starts this far into the clip, and the clip goes on this long after it. */
const LEAD_S = 0.6;
const GREEN = [0x3d, 0xdc, 0x84];
const SHOTS = path.join(ROOT, 'target/browser-screenshots');

let server;
let browser;
let tmp;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'c3s-flash-observer-'));
  await mkdir(SHOTS, { recursive: true });
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function flashScene(token, name) {
  const scene = await server.api('POST', '/api/scenes', { name, width: SCENE_W, height: SCENE_H, location_methods: ['flash', 'observer'] }, token);
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  return scene;
}

async function openPhone(b, joinPath) {
  const context = await b.newContext({ viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('phone page error:', e.message));
  await page.goto(server.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  return page;
}

async function openObserver(b, sceneId, contextOptions = {}) {
  const context = await b.newContext({ viewport: { width: 1280, height: 900 }, ...contextOptions });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('observer page error:', e.message));
  await page.goto(`${server.base}/observer.html?scene=${sceneId}`);
  await page.fill('#login-name', ADMIN.login);
  await page.fill('#login-password', ADMIN.password);
  await page.click('#login-submit');
  await page.waitForSelector('#workspace:not([hidden])');
  await page.waitForSelector('#flash-controls:not([hidden])');
  return page;
}

/** The page's messages, for a failure's text. */
const pageTexts = (page) => page.evaluate(() => ['#error', '#status', '#flash-session', '#flash-countdown', '#detections']
  .map((s) => document.querySelector(s)?.textContent?.trim()));

/** Whether a canvas has a pixel within `tolerance` of `rgb` within `radius` canvas pixels of (x, y). */
function canvasHasNear(page, selector, x, y, radius, rgb, tolerance = 40) {
  return page.evaluate(({ selector, x, y, radius, rgb, tolerance }) => {
    const c = document.querySelector(selector);
    const x0 = Math.max(0, Math.round(x - radius));
    const y0 = Math.max(0, Math.round(y - radius));
    const w = Math.min(c.width - x0, 2 * radius + 1);
    const h = Math.min(c.height - y0, 2 * radius + 1);
    const d = c.getContext('2d').getImageData(x0, y0, w, h).data;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) <= tolerance) return true;
    }
    return false;
  }, { selector, x, y, radius, rgb, tolerance });
}

test('the observer page starts a flash session, reads a clip of it and locates every phone where it stands', { timeout: 120000 }, async (t) => {
  const token = await server.login();
  const scene = await flashScene(token, 'Flash from the page');
  const id = scene.scene_id;
  const { path: joinPath } = await server.api('GET', `/api/scenes/${id}/join-code`);
  const phones = [];
  for (let i = 0; i < PLACES.length; i++) phones.push(await openPhone(browser, joinPath));
  const pixelIds = await Promise.all(phones.map((p) => p.evaluate(() => window.c3s.pixelId)));

  // a narrower window than the clip: the still is shown smaller than the video's own pixels,
  // which are what the reference points must be in
  const observer = await openObserver(browser, id, { viewport: { width: 1000, height: 900 } });
  assert.equal(await observer.inputValue('#flash-fps'), '30', 'no camera: 30 fps assumed');
  await observer.selectOption('#flash-start-in', '3000');
  await observer.click('#flash-start');
  const session = await until(() => observer.evaluate(() => window.c3s.state.flash), 'the session to start')
    .catch(async (e) => assert.fail(`${e.message}: ${JSON.stringify(await pageTexts(observer))}`));
  assert.equal(session.phones, PLACES.length, 'every phone got a code');
  assert.equal(session.symbol_us, 66667, 'slots of two frames at 30 fps');
  assert.match(await observer.textContent('#flash-session'), new RegExp(`${PLACES.length} phone\\(s\\) will flash`));
  assert.match(await observer.textContent('#flash-countdown'), /Flashing starts in \d+ s/);

  // each phone's code, as it was told it
  const slots = [];
  for (const [i, phone] of phones.entries()) {
    slots.push(await until(() => phone.evaluate((sid) => window.c3s.flash?.session === sid && window.c3s.flash.slots, session.session_id),
      `phone ${i}'s flash message`));
  }
  assert.equal(new Set(slots).size, slots.length, 'every phone has its own code');

  // the clip a camera would have filmed: from LEAD_S before the first slot to LEAD_S after the last
  const symbolS = session.symbol_us / 1e6;
  const seconds = 2 * LEAD_S + session.slots * symbolS;
  const clip = await flashClip({
    width: VIDEO_W,
    height: VIDEO_H,
    fps: FPS,
    symbolS,
    sessionStartS: LEAD_S,
    seconds,
    seed: 7,
    phones: PLACES.map(([x, y], i) => {
      const [vx, vy] = toVideo(x, y);
      return { x: vx, y: vy, w: 8, h: 12, slots: slots[i], clockErrorS: [0.003, -0.002, 0.005][i], refreshPhaseS: [0.004, 0.011, 0.0][i] };
    }),
  });

  // a clip is taken once the session is over; before that the page says when
  await until(async () => /Session over/.test(await observer.textContent('#flash-countdown')), 'the countdown to say the session is over', 20000);
  assert.ok(Date.now() >= session.ends_at_us / 1000, 'over by the server clock (this machine shares it)');
  await observer.setInputFiles('#flash-file', { name: 'crowd.mp4', mimeType: 'video/mp4', buffer: clip });
  await until(() => observer.evaluate(() => window.c3s.state.photo?.clip), 'the clip\'s still')
    .catch(async (e) => assert.fail(`${e.message}: ${JSON.stringify(await pageTexts(observer))}`));
  const still = await observer.evaluate(() => {
    const p = window.c3s.state.photo;
    return { width: p.width, height: p.height, stillAt: p.clip.stillAt, duration: p.clip.duration };
  });
  assert.deepEqual([still.width, still.height], [VIDEO_W, VIDEO_H], 'the still is in the video\'s own pixels');
  assert.ok(Math.abs(still.duration - seconds) < 0.1, `the clip lasts ${still.duration} s`);
  assert.ok(Math.abs(still.stillAt - seconds / 2) < 0.1, `a chosen clip's still is its middle: ${still.stillAt} s`);
  assert.equal(await observer.isVisible('#still-at'), true, 'a slider picks another still');
  assert.equal(await observer.isDisabled('#upload'), true, 'no upload before the reference points');

  // the four scene corners, clicked on the still where the clip shows them
  const corners = [[0, 0], [SCENE_W, 0], [SCENE_W, SCENE_H], [0, SCENE_H]];
  const shown = await observer.locator('#photo-canvas').boundingBox();
  assert.ok(shown.width < VIDEO_W * 0.95, `the still is shown ${shown.width} px wide, smaller than the video`);
  for (const [i, [x, y]] of corners.entries()) {
    const [px, py] = toVideo(x, y);
    // the messages above it change the layout: where the still is now
    await observer.locator('#photo-canvas').scrollIntoViewIfNeeded();
    const box = await observer.locator('#photo-canvas').boundingBox();
    await observer.mouse.click(box.x + ((px + 0.5) / VIDEO_W) * box.width, box.y + ((py + 0.5) / VIDEO_H) * box.height);
    await observer.fill(`#point-${i}-x`, String(x));
    await observer.fill(`#point-${i}-y`, String(y));
  }
  const marked = await observer.evaluate(() => window.c3s.state.points);
  for (const [i, [x, y]] of corners.entries()) {
    const [px, py] = toVideo(x, y);
    assert.ok(Math.abs(marked[i].px - px) <= 1 && Math.abs(marked[i].py - py) <= 1, `point ${i} at ${JSON.stringify(marked[i])}, clicked at (${px}, ${py})`);
  }
  assert.equal(await observer.textContent('#upload'), 'Upload clip and locate phones');

  const uploads = [];
  await observer.route(`**/api/scenes/${id}/videos`, async (route) => {
    uploads.push(route.request().postDataBuffer());
    await route.continue();
  });
  await observer.click('#upload');
  await until(() => observer.evaluate(() => window.c3s.state.result?.kind === 'clip'), 'the clip\'s result', 60000)
    .catch(async (e) => assert.fail(`${e.message}: ${JSON.stringify(await pageTexts(observer))}`));
  const texts = await pageTexts(observer);
  t.diagnostic(`page says: ${texts[1]}`);

  // the form's fields in the order the server reads them, the still's time with them
  assert.equal(uploads.length, 1);
  const body = uploads[0].toString('latin1');
  const order = ['session_id', 'points', 'still_at_s', 'video'].map((f) => body.indexOf(`name="${f}"`));
  assert.ok(order.every((at, i) => at >= 0 && (i === 0 || at > order[i - 1])), `fields in order: ${order}`);
  assert.match(body, new RegExp(`name="still_at_s"\\r\\n\\r\\n${still.stillAt}\\r\\n`));

  // the page reports every phone located, and draws them on the still and on the map
  const located = await observer.locator('#detections-table tr[data-status="located"]').count();
  assert.equal(located, PLACES.length, `located rows: ${JSON.stringify(texts)}`);
  assert.match(await observer.textContent('#detections-summary'), new RegExp(`${PLACES.length} phone\\(s\\) located`));
  const result = await observer.evaluate(() => window.c3s.state.result);
  const scale = await observer.evaluate(() => document.getElementById('photo-canvas').width / window.c3s.state.photo.width);
  for (const [i, [x, y]] of PLACES.entries()) {
    const [vx, vy] = toVideo(x, y);
    const d = result.detections.find((d) => d.pixel_id === pixelIds[i]);
    assert.ok(d && d.status === 'located', `phone ${i} located in the clip: ${JSON.stringify(d)}`);
    assert.ok(Math.hypot(d.x - vx, d.y - vy) < 2, `phone ${i} found at (${d.x}, ${d.y}) in the still, filmed at (${vx}, ${vy})`);
    assert.ok(await canvasHasNear(observer, '#photo-canvas', d.x * scale, d.y * scale, 12, GREEN), `phone ${i} drawn located on the still`);
  }
  await until(async () => {
    const map = await observer.evaluate(() => ({ s: window.c3s.state.map.scale * window.c3s.state.map.ratio }));
    for (const [x, y] of PLACES) if (!(await canvasHasNear(observer, '#scene-map', x * map.s, y * map.s, 4, GREEN))) return false;
    return true;
  }, 'every phone drawn located on the map');
  await observer.screenshot({ path: path.join(SHOTS, 'observer-flash.png'), fullPage: true });

  // and the server placed each phone where it stood: within a quarter of their spacing
  let spacing = Infinity;
  for (const [i, a] of PLACES.entries()) for (const b of PLACES.slice(i + 1)) spacing = Math.min(spacing, Math.hypot(a[0] - b[0], a[1] - b[1]));
  const page = await server.api('GET', `/api/scenes/${id}/pixels?status=located&per_page=200`, undefined, token);
  assert.equal(page.items.length, PLACES.length);
  for (const [i, [x, y]] of PLACES.entries()) {
    const p = page.items.find((p) => p.pixel_id === pixelIds[i]);
    assert.ok(p, `phone ${i} located`);
    const off = Math.hypot(p.x - x, p.y - y);
    assert.ok(off <= spacing / 4, `phone ${i} placed at (${p.x}, ${p.y}), ${off.toFixed(2)} from (${x}, ${y}); spacing ${spacing.toFixed(1)}`);
    assert.equal(p.method, 'flash');
    const told = await until(() => phones[i].evaluate(() => window.c3s.position), `phone ${i} to be told`);
    assert.ok(Math.hypot(told.x - p.x, told.y - p.y) < 1e-6, 'the phone was told its place');
  }
  for (const p of phones) await p.context().close();
  await observer.context().close();
});

test('the observer page says in words why a clip cannot be read', { timeout: 60000 }, async () => {
  const token = await server.login();
  const scene = await flashScene(token, 'Flash errors');
  const id = scene.scene_id;
  const observer = await openObserver(browser, id);
  // no phone: the session has none, and says so
  await observer.selectOption('#flash-start-in', '3000');
  await observer.click('#flash-start');
  await until(async () => /No phone is connected/.test(await observer.textContent('#status')), 'the page to say no phone will flash');
  const session = await observer.evaluate(() => window.c3s.state.flash);
  // a clip of nothing flashing, sent before the session is over: the page waits
  const clip = await flashClip({ width: 320, height: 180, fps: FPS, symbolS: 1 / 15, sessionStartS: 0.6, seconds: 5.4, phones: [] });
  await observer.setInputFiles('#flash-file', { name: 'empty.mp4', mimeType: 'video/mp4', buffer: clip });
  await until(() => observer.evaluate(() => window.c3s.state.photo?.clip), 'the still');
  for (const [i, [px, py, x, y]] of [[10, 10, 0, 0], [300, 10, 40, 0], [300, 170, 40, 20], [10, 170, 0, 20]].entries()) {
    await observer.click('#add-point');
    await observer.fill(`#point-${i}-px`, String(px));
    await observer.fill(`#point-${i}-py`, String(py));
    await observer.fill(`#point-${i}-x`, String(x));
    await observer.fill(`#point-${i}-y`, String(y));
  }
  if (Date.now() < session.ends_at_us / 1000 - 500) {
    await observer.click('#upload');
    await until(async () => /still flashing/.test(await observer.textContent('#error')), 'the page to say the session is not over');
  }
  await sleep(Math.max(0, session.ends_at_us / 1000 - Date.now() + 200));
  // after it: the server finds no flashing phone, and the page says so, with what to do
  await observer.click('#upload');
  // (noise alone may make a few spots flicker: then it is the session that is not there)
  await until(async () => /no flashing phones were found in the clip|no phone of this session was seen flashing in the clip/i.test(await observer.textContent('#error')),
    'the server\'s sentence')
    .catch(async (e) => assert.fail(`${e.message}: ${JSON.stringify(await pageTexts(observer))}`));
  assert.match(await observer.textContent('#error'), /(Film the crowd while the phones flash|Start filming before the phones start flashing)[^.]*\./,
    'what to do about it');
  // a file that is not a video is refused before anything is sent
  await observer.setInputFiles('#flash-file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
  await until(async () => /is not a video/.test(await observer.textContent('#error')), 'the page to refuse a text file');
  // a scene that does not locate by flashing offers no flash session
  await server.api('PATCH', `/api/scenes/${id}`, { location_methods: ['observer'] }, token);
  await observer.waitForSelector('#flash-off:not([hidden])');
  assert.equal(await observer.isVisible('#flash-start'), false);
  await observer.context().close();
});

test('the Record button films a session with the camera, by itself, from the instant it says', { timeout: 90000 }, async (t) => {
  const y4m = path.join(tmp, 'camera.y4m');
  await testPatternY4m(y4m, { width: 640, height: 360, fps: 25, seconds: 2 });
  const camBrowser = await launchBrowser({
    args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', `--use-file-for-fake-video-capture=${y4m}`],
  });
  try {
    const token = await server.login();
    const scene = await flashScene(token, 'Flash with a camera');
    const id = scene.scene_id;
    const { path: joinPath } = await server.api('GET', `/api/scenes/${id}/join-code`);
    const phone = await openPhone(camBrowser, joinPath);
    const observer = await openObserver(camBrowser, id, { permissions: ['camera'] });

    await observer.click('#flash-record');
    await until(() => observer.evaluate(() => window.c3s.camera.cameraOn), 'the camera to be on')
      .catch(async (e) => assert.fail(`${e.message}: ${JSON.stringify(await pageTexts(observer))}`));
    assert.equal(await observer.isVisible('#flash-video'), true, 'the camera\'s preview is shown');
    assert.equal(await observer.inputValue('#flash-fps'), '25', 'the frame rate is the camera\'s');
    await observer.selectOption('#flash-start-in', '3000');
    await observer.click('#flash-start');
    const session = await until(() => observer.evaluate(() => window.c3s.state.flash), 'the session');
    assert.equal(session.symbol_us, 80000, 'slots of two frames of a 25 fps camera');
    assert.equal(session.phones, 1);
    await until(() => phone.evaluate((sid) => window.c3s.flash?.session === sid, session.session_id), 'the phone\'s code');

    // not before the session says to film; from then, until it says to stop
    const started = await until(() => observer.evaluate(() => window.c3s.camera.recording && Date.now()), 'the recording to start', 15000);
    assert.ok(started >= session.film_from_us / 1000 - 50, `recording began ${session.film_from_us / 1000 - started} ms early`);
    assert.ok(started <= session.starts_at_us / 1000, 'recording began before the first slot');
    const stopped = await until(() => observer.evaluate(() => !window.c3s.camera.recording && Date.now()), 'the recording to stop', 15000);
    assert.ok(stopped >= session.film_until_us / 1000 - 50, 'recording went on until the session said to stop');
    await until(() => observer.evaluate(() => window.c3s.state.photo?.clip?.recorded), 'the recording\'s still', 15000)
      .catch(async (e) => assert.fail(`${e.message}: ${JSON.stringify(await pageTexts(observer))}`));
    const rec = await observer.evaluate(() => {
      const p = window.c3s.state.photo;
      const c = p.image;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4 * 97) seen.add(`${d[i] >> 4},${d[i + 1] >> 4},${d[i + 2] >> 4}`);
      return { type: p.blob.type, size: p.blob.size, width: p.width, height: p.height, duration: p.clip.duration, stillAt: p.clip.stillAt, colours: seen.size };
    });
    const filmS = (session.film_until_us - session.film_from_us) / 1e6;
    assert.match(rec.type, /^video\/(webm|mp4)$/);
    assert.ok(rec.size > 10000, `the recording has ${rec.size} bytes`);
    assert.deepEqual([rec.width, rec.height], [640, 360], 'the still is the camera\'s size');
    assert.ok(Math.abs(rec.duration - filmS) < 0.8, `the recording lasts ${rec.duration} s; the session asked for ${filmS} s`);
    const middle = (session.starts_at_us + session.ends_at_us) / 2e6 - session.film_from_us / 1e6;
    assert.ok(Math.abs(rec.stillAt - middle) < 0.4, `the still is the session's middle: ${rec.stillAt} s, expected about ${middle} s`);
    assert.ok(rec.colours > 8, `the still shows the camera's picture (${rec.colours} colours)`);
    assert.equal(await observer.isVisible('#photo-canvas'), true, 'the still is on the page');
    assert.equal(await observer.evaluate(() => window.c3s.camera.cameraOn), false, 'the camera is let go');

    // the recording is a video the server reads: it answers with what it found in it (the test
    // pattern has no phone in it, so nobody is located), not that it is no video
    for (const [i, [px, py, x, y]] of [[20, 20, 0, 0], [620, 20, 40, 0], [620, 340, 40, 20], [20, 340, 0, 20]].entries()) {
      await observer.click('#add-point');
      await observer.fill(`#point-${i}-px`, String(px));
      await observer.fill(`#point-${i}-py`, String(py));
      await observer.fill(`#point-${i}-x`, String(x));
      await observer.fill(`#point-${i}-y`, String(y));
    }
    await observer.click('#upload');
    const answer = await until(() => observer.evaluate(() => {
      const r = window.c3s.state.result;
      if (r?.kind === 'clip') return `read: ${r.frames} frames, ${r.located} located`;
      return document.getElementById('error').textContent.trim();
    }), 'the server\'s answer to the recording', 60000);
    assert.match(answer, /^read: \d+ frames, 0 located$|no flashing phones were found|no phone of this session was seen flashing/, answer);
    t.diagnostic(`recorded ${rec.type}, ${rec.size} bytes, ${rec.duration.toFixed(2)} s, still at ${rec.stillAt.toFixed(2)} s; the server: ${answer}`);
  } finally {
    await camBrowser.close();
  }
});

// The operator's and observer's pages are pushed what happens to their scene (the live
// stream, server-sent events), not polling for it: a phone that joins and is placed shows on
// the operator's page, in the colour of the frame showing now as the server's raster of it
// says, while the page asks the server for nothing but its clock; the page comes back by
// itself when the stream drops (a server restart) and reads again what it missed. The
// observer's page lists a phone that joins and sees it placed. And the stream's parser reads
// the event-stream format however the bytes are cut.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launchBrowser, pngOf, until, sleep, ADMIN } from './harness.mjs';
import { SseParser, retryDelay, RETRY_FIRST_MS, RETRY_MAX_MS } from '../../web-client/live.js';

const RED = [220, 30, 40];
const GREEN = [40, 200, 60];
const BLUE = [30, 60, 230];
const YELLOW = [240, 220, 20];
const FRAME_MS = 1000;
/** The window over which the page must not poll. */
const QUIET_MS = 5000;

let server;
let browser;

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const near = (a, b, tolerance = 12) => a.every((v, i) => Math.abs(v - b[i]) <= tolerance);

/** A scene 40 × 20 with a looping show of two 8 × 4 frames, each two colours side by side
 * (left half, right half): red | green, then blue | yellow. */
async function twoFrameScene(token, name) {
  const scene = await server.api('POST', '/api/scenes', { name, width: 40, height: 20, location_methods: ['observer'] }, token);
  const id = scene.scene_id;
  await server.api('PATCH', `/api/scenes/${id}`, { status: 'open' }, token);
  for (const [left, right] of [[RED, GREEN], [BLUE, YELLOW]]) {
    const res = await fetch(`${server.base}/api/scenes/${id}/frames?duration_ms=${FRAME_MS}`, {
      method: 'POST',
      headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
      body: pngOf(8, 4, (x) => (x < 4 ? left : right)),
    });
    assert.equal(res.status, 201, await res.text());
  }
  await server.api('PUT', `/api/scenes/${id}/show`, { loop: true }, token);
  return scene;
}

async function openPhone(joinPath) {
  const context = await browser.newContext({ viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('phone page error:', e.message));
  await page.goto(server.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  return page;
}

/** Every request a page makes: {at, method, path}. */
function recordRequests(page) {
  const requests = [];
  page.on('request', (r) => requests.push({ at: Date.now(), method: r.method(), path: new URL(r.url()).pathname }));
  return requests;
}

test('the operator page is pushed the phones, their counts and the show, and polls nothing', { timeout: 120000 }, async (t) => {
  const token = await server.login();
  const scene = await twoFrameScene(token, 'Pushed');
  const id = scene.scene_id;
  const played = await server.api('POST', `/api/scenes/${id}/playback`, { command: 'play', start_in_ms: 1000 }, token);
  const { path: joinPath } = await server.api('GET', `/api/scenes/${id}/join-code`);

  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => console.error('operator page error:', e.message));
  const requests = recordRequests(page);
  await page.goto(server.base + '/operator.html');
  await page.fill('#login-login', ADMIN.login);
  await page.fill('#login-password', ADMIN.password);
  await page.click('#login-submit');
  await page.waitForSelector('#app:not(.hidden)');
  await page.click(`#scene-list button[data-scene-id="${id}"]`);
  await page.waitForSelector('#scene-panel:not(.hidden)');

  // loaded: the show (version 2, playing), the counts, both frames' rasters, the stream open
  await until(async () => /version 2\b/.test(await page.textContent('#show-info')), 'the page to show version 2');
  await until(async () => (await page.textContent('#count-connected')) === '0', 'the counts');
  await until(() => page.evaluate(() => window.c3s.prepared() && window.c3s.live?.connected), 'the preview prepared and the stream open');
  const rasters = requests.filter((r) => /\/show\/frames\/[^/]+\/raster$/.test(r.path));
  assert.equal(rasters.length, 2, `each frame's raster read once: ${JSON.stringify(rasters)}`);
  const quietFrom = Date.now();

  // a phone joins and is placed in the right half of the scene
  const phone = await openPhone(joinPath);
  const pixelId = await phone.evaluate(() => window.c3s.pixelId);
  await until(async () => (await page.textContent('#count-connected')) === '1', 'the page to count the phone connected');
  await server.api('PUT', `/api/scenes/${id}/pixels/${pixelId}/position`, { x: 30, y: 5 }, token);
  await until(async () => (await page.textContent('#count-located')) === '1', 'the page to count the phone located');
  await until(() => page.evaluate(() => window.c3s.preview().dots.length === 1), 'the phone on the preview');

  // until the window is over: the phone's dot on the preview is the colour of its cell of
  // the frame showing now (green in the first frame, yellow in the second), checked away
  // from the frames' boundaries
  const tl = played.timeline.current;
  const checked = [0, 0];
  // to the end of the quiet window, and over both frames at least (on a busy machine the
  // phone may take most of the window to join)
  const checksUntil = Math.max(quietFrom + QUIET_MS, Date.now() + 2 * FRAME_MS + 1000);
  while (Date.now() < checksUntil) {
    const seen = await page.evaluate(() => {
      const { state } = window.c3s;
      const map = state.map;
      const [p] = state.pixels.values();
      const c = document.getElementById('preview');
      const s = map.scale * map.ratio;
      const d = c.getContext('2d').getImageData(Math.round(p.x * s), Math.round(p.y * s), 1, 1).data;
      return { at: Date.now(), rgb: [d[0], d[1], d[2]] };
    });
    const position = tl.base_ms + (seen.at - tl.anchor_ms);
    const within = ((position % (2 * FRAME_MS)) + 2 * FRAME_MS) % (2 * FRAME_MS);
    const frame = Math.floor(within / FRAME_MS);
    const fromEdge = Math.min(within % FRAME_MS, FRAME_MS - (within % FRAME_MS));
    if (position > 0 && fromEdge > 150) {
      const expected = frame === 0 ? GREEN : YELLOW;
      assert.ok(near(seen.rgb, expected), `${position} ms into the show (frame ${frame + 1}) the phone is drawn ${seen.rgb}, not ${expected}`);
      checked[frame]++;
    }
    await sleep(120);
  }
  assert.ok(checked[0] > 0 && checked[1] > 0, `the colour was checked in both frames: ${checked}`);

  // over the whole window the page asked for nothing but its clock (the stream was already open)
  const inWindow = requests.filter((r) => r.at >= quietFrom && r.at <= quietFrom + QUIET_MS);
  const polled = inWindow.filter((r) => r.path !== '/api/clock' && r.path !== `/api/scenes/${id}/live`);
  assert.deepEqual(polled, [], `requests in the ${QUIET_MS} ms after load: ${JSON.stringify(inWindow)}`);
  for (const kind of ['presence', 'show', 'pixels']) {
    assert.ok(!inWindow.some((r) => r.method === 'GET' && r.path === `/api/scenes/${id}/${kind}`), `no GET .../${kind}`);
  }
  t.diagnostic(`${inWindow.length} requests in the window: ${inWindow.map((r) => r.path).join(', ') || 'none'}; colour checked ${checked}`);

  // the server restarts: the stream drops, the page opens it again by itself and reads the
  // show and the phones again
  const restartedAt = Date.now();
  await server.restart();
  await until(() => page.evaluate(() => window.c3s.live?.connected), 'the stream to open again', 40000);
  const after = () => requests.filter((r) => r.at >= restartedAt && r.method === 'GET');
  assert.ok(after().some((r) => r.path === `/api/scenes/${id}/live`), 'the stream was opened again');
  await until(() => after().some((r) => r.path === `/api/scenes/${id}/show`), 'the show read again');
  await until(() => after().some((r) => r.path === `/api/scenes/${id}/pixels`), 'the phones read again');
  // and the new stream is live: the phone is removed, and leaves the preview
  await until(() => phone.evaluate(() => window.c3s.phase === 'in' && window.c3s.welcomes === 2), 'the phone to be back', 40000);
  await server.api('POST', `/api/scenes/${id}/pixels/${pixelId}/kick`, {}, token);
  await until(() => page.evaluate(() => window.c3s.preview().dots.length === 0), 'the kicked phone to leave the preview');
  await until(async () => (await page.textContent('#count-connected')) === '0', 'the kicked phone to be counted gone');
  assert.equal((await page.textContent('#errors')).trim(), '', 'no error left on the page');
});

test('the observer page lists a phone that joins and is told where it was placed', { timeout: 60000 }, async () => {
  const token = await server.login();
  const scene = await twoFrameScene(token, 'Observed');
  const id = scene.scene_id;
  const { path: joinPath } = await server.api('GET', `/api/scenes/${id}/join-code`);

  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.on('pageerror', (e) => console.error('observer page error:', e.message));
  const requests = recordRequests(page);
  await page.goto(`${server.base}/observer.html?scene=${id}`);
  await page.fill('#login-name', ADMIN.login);
  await page.fill('#login-password', ADMIN.password);
  await page.click('#login-submit');
  await page.waitForSelector('#workspace:not([hidden])');
  await until(() => page.evaluate(() => window.c3s.live?.connected), 'the stream open');
  await until(async () => /^0 phone/.test(await page.textContent('#pixel-count')), 'the empty list');
  const quietFrom = Date.now();

  // a phone joins: the count of connected phones grows, and the list is read again
  const phone = await openPhone(joinPath);
  const pixelId = await phone.evaluate(() => window.c3s.pixelId);
  const entry = `#pixel-list [data-pixel-id="${pixelId}"]`;
  await page.waitForSelector(entry, { timeout: 15000 });
  // placed by someone else: the page is told
  await server.api('PUT', `/api/scenes/${id}/pixels/${pixelId}/position`, { x: 12, y: 7 }, token);
  await until(async () => /located at \(12, 7\)/.test(await page.textContent(entry)), 'the phone listed as placed');
  const reads = requests.filter((r) => r.at >= quietFrom && r.path === `/api/scenes/${id}/pixels`);
  assert.equal(reads.length, 1, `one read of the list, for the join: ${JSON.stringify(reads)}`);
  assert.ok(!requests.some((r) => r.at >= quietFrom && /\/(presence|show)$/.test(r.path)), 'no polling');
});

test('the stream parser reads events however the bytes are cut', () => {
  const text = ': keep-alive\n\nevent: presence\ndata: {"connected":1}\n\r\nevent: show\r\ndata: {"a":\r\ndata: 1}\r\r' +
    'data:{"plain":true}\n\nevent: ended\ndata: {}\n\n';
  const expected = [
    ['presence', '{"connected":1}'],
    ['show', '{"a":\n1}'],
    ['message', '{"plain":true}'],
    ['ended', '{}'],
  ];
  for (const size of [1, 2, 3, 7, text.length]) {
    const got = [];
    const parser = new SseParser((name, data) => got.push([name, data]));
    for (let i = 0; i < text.length; i += size) parser.push(text.slice(i, i + size));
    assert.deepEqual(got, expected, `cut every ${size} characters`);
  }
  // an event not ended by a blank line is not dispatched
  const got = [];
  new SseParser((name) => got.push(name)).push('event: show\ndata: {}\n');
  assert.deepEqual(got, []);
  // reconnects back off from 1 s to 15 s, never sooner than half the step
  assert.equal(retryDelay(0, () => 0), RETRY_FIRST_MS / 2);
  assert.equal(retryDelay(0, () => 1), RETRY_FIRST_MS);
  assert.equal(retryDelay(3, () => 1), 8000);
  assert.equal(retryDelay(20, () => 1), RETRY_MAX_MS);
});

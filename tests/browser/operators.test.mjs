// Two operators on one show: the operator page sends each playback command with the show
// version it shows (`?expected_version=`); when another operator changed the show in the
// meantime the server refuses (409, with the show as it is now), the page shows that state and
// says so, nothing stale is applied, and pressing again works.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launchBrowser, png, until, sleep, ADMIN } from './harness.mjs';

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

test('a command decided on a stale view is refused, shown, and works when pressed again', { timeout: 120000 }, async (t) => {
  const token = await server.login();

  // a one-frame looping show, playing in a second
  const scene = await server.api('POST', '/api/scenes', { name: 'Two operators', width: 20, height: 10 }, token);
  const id = scene.scene_id;
  await server.api('PATCH', `/api/scenes/${id}`, { status: 'open' }, token);
  const up = await fetch(`${server.base}/api/scenes/${id}/frames?duration_ms=500`, {
    method: 'POST',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
    body: png(8, 4, [200, 40, 40]),
  });
  assert.equal(up.status, 201, await up.text());
  const built = await server.api('PUT', `/api/scenes/${id}/show`, { loop: true }, token);
  assert.equal(built.timeline.version, 1);
  const played = await server.api('POST', `/api/scenes/${id}/playback`, { command: 'play', start_in_ms: 1000 }, token);
  assert.equal(played.timeline.version, 2);
  const getShow = () => server.api('GET', `/api/scenes/${id}/show`, undefined, token);

  // the operator page: log in, choose the scene, see version 2
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => console.error('operator page error:', e.message));
  page.on('dialog', (d) => d.dismiss()); // no confirm() is expected; never hang on one
  await page.goto(server.base + '/operator.html');
  await page.fill('#login-login', ADMIN.login);
  await page.fill('#login-password', ADMIN.password);
  await page.click('#login-submit');
  await page.waitForSelector('#app:not(.hidden)');
  await page.click(`#scene-list button[data-scene-id="${id}"]`);
  await page.waitForSelector('#scene-panel:not(.hidden)');
  const info = () => page.textContent('#show-info');
  await until(async () => /version 2\b/.test(await info()), 'the page to show version 2');

  // the page polls the show every 2 s; freeze that (as in a background tab) so that what the
  // page knows after the refusal can only come from the 409's `current`. First let any poll
  // already on its way come back.
  const showGets = new Set();
  const isShowGet = (r) => r.method() === 'GET' && new URL(r.url()).pathname === `/api/scenes/${id}/show`;
  page.on('request', (r) => isShowGet(r) && showGets.add(r));
  page.on('requestfinished', (r) => showGets.delete(r));
  page.on('requestfailed', (r) => showGets.delete(r));
  await page.evaluate(() => Object.defineProperty(document, 'hidden', { configurable: true, get: () => true }));
  await sleep(300);
  await until(() => showGets.size === 0, 'the page\'s show poll to come back', 5000);
  assert.match(await info(), /version 2\b/, 'the page still shows version 2');

  // the show has started (a seek needs it playing now)
  await sleep(Math.max(0, played.timeline.current.anchor_ms + 50 - Date.now()));

  // another operator seeks to the start, at once: version 3, still playing
  const seeked = await server.api('POST', `/api/scenes/${id}/playback`, { command: 'seek', position_ms: 0, in_ms: 0 }, token);
  assert.equal(seeked.timeline.version, 3);
  assert.equal(seeked.timeline.current.mode, 'playing');

  // our operator, still looking at version 2, presses Pause
  const statusBefore = await page.textContent('#status-line');
  assert.notEqual(statusBefore, 'Paused.');
  const isPlayback = (r) => r.method() === 'POST' && new URL(r.url()).pathname === `/api/scenes/${id}/playback`;
  let [request] = await Promise.all([page.waitForRequest(isPlayback, { timeout: 10000 }), page.click('#pause')]);
  assert.equal(new URL(request.url()).searchParams.get('expected_version'), '2', `the command names the version the page showed: ${request.url()}`);
  let response = await request.response();
  assert.equal(response.status(), 409, 'the server refuses the stale command');

  // the page shows the state now and says what happened
  const errors = await until(async () => {
    const text = await page.textContent('#errors');
    return /Someone else changed the show/.test(text) && text;
  }, 'the conflict to be reported', 10000);
  assert.match(errors, /Someone else changed the show just now \(it is at version 3\); check it and press again\./);
  assert.match(await info(), /version 3\b/, 'the page shows the current version');
  assert.equal(await page.textContent('#status-line'), statusBefore, 'no success reported');

  // nothing stale was applied
  const after409 = await getShow();
  assert.equal(after409.timeline.version, 3);
  assert.equal(after409.timeline.current.mode, 'playing');

  // pressed again (the poll still frozen: the page knows version 3 from the refusal alone)
  [request] = await Promise.all([page.waitForRequest(isPlayback, { timeout: 10000 }), page.click('#pause')]);
  assert.equal(new URL(request.url()).searchParams.get('expected_version'), '3');
  response = await request.response();
  assert.equal(response.status(), 200, await response.text());
  await until(async () => (await page.textContent('#status-line')) === 'Paused.', 'the page to say "Paused."', 10000);
  assert.equal((await page.textContent('#errors')).trim(), '', 'the error is cleared');
  assert.match(await info(), /version 4\b/);
  const paused = await getShow();
  assert.equal(paused.timeline.version, 4);
  assert.equal(paused.timeline.current.mode, 'paused');

  // the log: play, seek, pause; the refused pause is not in it
  const { items } = await server.api('GET', `/api/scenes/${id}/events`, undefined, token);
  const commands = items.filter((e) => e.event === 'playback').map((e) => e.data.command.command);
  assert.deepEqual(commands, ['play', 'seek', 'pause']);
  t.diagnostic(`events: ${items.map((e) => e.event).join(', ')}`);
});

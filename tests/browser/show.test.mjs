// A show in a real browser: an operator prepares a scene, three phone pages join and are
// located, a two-frame show plays and every phone shows the right colour at the right instant;
// then the phones survive a server restart, and tell their users when they are removed or the
// scene ends.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Server, launchBrowser, shiftClock, png, centreColour, until, sleep, ROOT, ADMIN } from './harness.mjs';

const SHOTS = path.join(ROOT, 'target/browser-screenshots');
const RED = [220, 30, 40];
const BLUE = [30, 60, 230];
const FRAME_MS = 1500;
/** One refresh at 60 Hz. */
const REFRESH_MS = 1000 / 60;

let server;
let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

function near(actual, expected, tolerance = 12) {
  return actual.every((v, i) => Math.abs(v - expected[i]) <= tolerance);
}

async function uploadFrame(token, sceneId, name, colour) {
  const res = await fetch(`${server.base}/api/scenes/${sceneId}/frames?duration_ms=${FRAME_MS}&name=${name}`, {
    method: 'POST',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
    body: png(16, 12, colour),
  });
  assert.equal(res.status, 201, await res.text());
}

/**
 * Opens a phone page in its own browser context (its own storage: its own device token). Its
 * monotonic clock is shifted by `shiftMs`, as a phone's clock is anything but the server's:
 * only a working clock sync puts its colours at the right instants.
 */
async function openPhone(joinPath, shiftMs) {
  const context = await browser.newContext({ viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true });
  await shiftClock(context, shiftMs);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('phone page error:', e.message));
  await page.goto(server.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  return page;
}

test('three phones play a two-frame show in step, survive a restart, and hear kicks and the end', async (t) => {
  const token = await server.login();

  // the operator logs in, creates the scene, uploads two frames at once and opens the scene
  const operator = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  operator.on('pageerror', (e) => console.error('operator page error:', e.message));
  await operator.goto(server.base + '/operator.html');
  await operator.fill('#login-login', ADMIN.login);
  await operator.fill('#login-password', ADMIN.password);
  await operator.click('#login-submit');
  await operator.waitForSelector('#app:not(.hidden)');
  await operator.fill('#scene-name', 'Browser show');
  await operator.fill('#scene-width', '30');
  await operator.fill('#scene-height', '10');
  await operator.uncheck('#scene-form input[value=qr]');
  await operator.uncheck('#scene-form input[value=gps]');
  await operator.click('#scene-create');
  await operator.waitForSelector('#scene-panel:not(.hidden)');
  const scene = (await server.api('GET', '/api/scenes', undefined, token)).items.find((s) => s.name === 'Browser show');
  assert.ok(scene, 'the scene exists');
  assert.deepEqual([...scene.location_methods].sort(), ['observer', 'seat']);
  await operator.fill('#upload-duration', String(FRAME_MS));
  await operator.setInputFiles('#frame-file', [
    { name: 'red.png', mimeType: 'image/png', buffer: png(16, 12, RED) },
    { name: 'blue.png', mimeType: 'image/png', buffer: png(16, 12, BLUE) },
  ]);
  await until(async () => (await operator.locator('#frame-list li').count()) === 2, 'two frames listed');
  const frames = () => server.api('GET', `/api/scenes/${scene.scene_id}/frames`, undefined, token);
  // uploads run side by side, so red may have landed second: move it up with the keyboard
  if (!(await frames())[0].original_name.startsWith('red')) {
    const red = (await frames()).find((f) => f.original_name.startsWith('red'));
    await operator.focus(`#frame-list li[data-frame-id="${red.frame_id}"] .frame-up`);
    await operator.keyboard.press('Enter');
    await until(async () => (await frames())[0].original_name.startsWith('red'), 'red to be first');
  }
  assert.deepEqual((await frames()).map((f) => [f.original_name.replace(/\.png$/, ''), f.duration_ms]), [['red', FRAME_MS], ['blue', FRAME_MS]]);
  await operator.selectOption('#scene-status', 'open');
  await operator.click('#status-apply');
  await until(async () => (await server.api('GET', `/api/scenes/${scene.scene_id}`, undefined, token)).status === 'open', 'the scene to open');
  await operator.click('#build-show');
  await until(async () => (await server.api('GET', `/api/scenes/${scene.scene_id}/show`, undefined, token).catch(() => null))?.total_ms === 2 * FRAME_MS, 'the show to be built');

  const seats = await fetch(`${server.base}/api/scenes/${scene.scene_id}/seats`, {
    method: 'PUT',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'text/csv' },
    body: 'section,row,seat,x,y\nA,1,1,5,5\nA,1,2,15,5\nA,1,3,25,5\n',
  });
  assert.equal(seats.status, 200, await seats.text());
  const { path: joinPath } = await server.api('GET', `/api/scenes/${scene.scene_id}/join-code`);
  assert.match(joinPath, /^\/s\/[A-Za-z0-9_-]{22}$/);

  // three phones join from the short address and enter their seats
  const phones = [];
  const shifts = [7300, -4100, 123456];
  for (let i = 0; i < 3; i++) {
    const page = await openPhone(joinPath, shifts[i]);
    assert.equal(await page.textContent('#status'), 'Waiting to be located.');
    await page.fill('#seat-form [name=section]', 'A');
    await page.fill('#seat-form [name=row]', '1');
    await page.fill('#seat-form [name=seat]', String(i + 1));
    await page.click('#seat-form button');
    await until(() => page.evaluate(() => window.c3s.position !== null), `phone ${i} to be located`);
    assert.equal(await page.textContent('#status'), 'Located. Waiting for the show…');
    phones.push(page);
  }
  // each phone has synced its clock
  for (const page of phones) {
    await until(() => page.evaluate(() => Number.isFinite(window.c3s.syncErrorMs)), 'a clock sync report');
  }

  await phones[0].screenshot({ path: path.join(SHOTS, 'phone-waiting.png') });

  // the operator presses play: red, then blue, starting two seconds later
  await operator.fill('#start-in', '2000');
  await operator.click('#play');
  const played = await until(async () => {
    const show = await server.api('GET', `/api/scenes/${scene.scene_id}/show`, undefined, token);
    return show.timeline.current.mode === 'playing' && show;
  }, 'the show to play');
  const startAt = played.timeline.current.anchor_ms;
  assert.ok(Number.isFinite(startAt), `the play reply names its start instant: ${JSON.stringify(played.timeline)}`);
  const blueAt = startAt + FRAME_MS;

  // a third of the way into each frame (by this machine's clock, which is the server's), every
  // phone's screen shows that frame's colour
  for (const [colour, at, name] of [[RED, startAt + FRAME_MS / 3, 'red'], [BLUE, blueAt + FRAME_MS / 3, 'blue']]) {
    await sleep(Math.max(0, at - Date.now()));
    const seen = await Promise.all(phones.map((p) => centreColour(p)));
    seen.forEach((c, i) => assert.ok(near(c, colour), `phone ${i} shows ${c} in the ${name} frame`));
    await Promise.all(phones.map((p, i) => p.screenshot({ path: path.join(SHOTS, `phone-${i}-${name}.png`) })));
    // the operator's preview shows the located phones in that colour too
    const previewHas = await operator.evaluate((rgb) => {
      const c = document.getElementById('preview');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 20) return true;
      }
      return false;
    }, colour);
    assert.ok(previewHas, `the preview shows ${name}`);
    if (name === 'blue') await operator.screenshot({ path: path.join(SHOTS, 'operator.png'), fullPage: true });
  }

  // the instants at which each phone turned blue agree within one refresh of each other, and
  // each is within a refresh (plus its sync error) of the schedule: by the phone's synced clock
  // (`at`), and by the wall clock this machine shares with the server (`wall`)
  const turned = [];
  for (const [i, page] of phones.entries()) {
    const { changes, syncErrorMs } = await page.evaluate(() => ({ changes: window.c3s.changes, syncErrorMs: window.c3s.syncErrorMs }));
    const change = changes.find((c) => c.color === BLUE.join(','));
    assert.ok(change, 'the phone recorded turning blue');
    const slack = REFRESH_MS + syncErrorMs + 2;
    assert.ok(Math.abs(change.wall - blueAt) <= slack, `phone ${i} turned blue ${change.wall - blueAt} ms from the schedule (sync error ${syncErrorMs})`);
    assert.ok(Math.abs(change.at - change.wall) <= syncErrorMs + 2, `phone ${i}'s synced clock is off by ${change.at - change.wall} ms`);
    turned.push(change.wall);
  }
  const spread = Math.max(...turned) - Math.min(...turned);
  t.diagnostic(`turned blue at ${turned.map((at) => (at - blueAt).toFixed(1)).join(', ')} ms from the schedule; spread ${spread.toFixed(1)} ms`);
  assert.ok(spread <= REFRESH_MS, `phones turned blue ${spread.toFixed(1)} ms apart`);

  // the server restarts; every phone comes back by itself as the same pixel, still located
  const before = await Promise.all(phones.map((p) => p.evaluate(() => window.c3s.pixelId)));
  await server.restart();
  for (const [i, page] of phones.entries()) {
    await until(() => page.evaluate(() => window.c3s.phase === 'in' && window.c3s.welcomes === 2), `phone ${i} to be back`, 40000);
    assert.equal(await page.evaluate(() => window.c3s.pixelId), before[i], 'the same pixel after reconnecting');
    assert.notEqual(await page.evaluate(() => window.c3s.position), null, 'still located');
  }
  // and the show plays on them again
  await server.api('POST', `/api/scenes/${scene.scene_id}/playback`, { command: 'play', start_in_ms: 1500 }, token);
  const replayed = await server.api('GET', `/api/scenes/${scene.scene_id}/show`, undefined, token);
  await sleep(Math.max(0, replayed.timeline.current.anchor_ms + FRAME_MS / 2 - Date.now()));
  for (const [i, page] of phones.entries()) {
    const c = await centreColour(page);
    assert.ok(near(c, RED), `phone ${i} shows ${c} after the restart`);
  }

  // one phone is removed; it says so and stays away
  await server.api('POST', `/api/scenes/${scene.scene_id}/pixels/${before[2]}/kick`, {}, token);
  await until(() => phones[2].evaluate(() => window.c3s.phase === 'over'), 'the kicked phone to stop');
  assert.equal(await phones[2].textContent('#status'), 'You were removed from this scene.');

  // the scene ends; the others say so
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'ended' }, token);
  for (const page of phones.slice(0, 2)) {
    await until(() => page.evaluate(() => window.c3s.phase === 'over'), 'the phone to hear the end');
    assert.equal(await page.textContent('#status'), 'The show has ended. Thank you for being part of it!');
  }
  await phones[0].screenshot({ path: path.join(SHOTS, 'phone-ended.png') });
});

// An observer locates phones from the observer page: by tapping the scene map, and by
// photographing a phone's QR code; "identify" makes a phone flash.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launchBrowser, until, ADMIN } from './harness.mjs';

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

async function openPhone(joinPath) {
  const context = await browser.newContext({ viewport: { width: 360, height: 640 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  await page.goto(server.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  return page;
}

test('an observer places a phone with a tap, identifies it, and locates another from a photo of its code', async () => {
  const token = await server.login();
  const scene = await server.api('POST', '/api/scenes', { name: 'Observer test', width: 40, height: 70, location_methods: ['observer', 'qr'] }, token);
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  const { path: joinPath } = await server.api('GET', `/api/scenes/${scene.scene_id}/join-code`);
  const tapped = await openPhone(joinPath);
  const photographed = await openPhone(joinPath);
  const tappedId = await tapped.evaluate(() => window.c3s.pixelId);

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const observer = await context.newPage();
  observer.on('pageerror', (e) => console.error('observer page error:', e.message));
  await observer.goto(`${server.base}/observer.html?scene=${scene.scene_id}`);
  await observer.fill('#login-name', ADMIN.login);
  await observer.fill('#login-password', ADMIN.password);
  await observer.click('#login-submit');
  await observer.waitForSelector('#workspace:not([hidden])');

  // tap: choose the phone, click the map at three quarters across, a quarter down
  await observer.click(`#pixel-list [data-pixel-id="${tappedId}"]`);
  const map = await observer.locator('#scene-map').boundingBox();
  await observer.mouse.click(map.x + map.width * 0.75, map.y + map.height * 0.25);
  const placed = await until(() => tapped.evaluate(() => window.c3s.position), 'the tapped phone to be located');
  assert.ok(Math.abs(placed.x - 30) < 1 && Math.abs(placed.y - 17.5) < 1, `placed at ${JSON.stringify(placed)}`);

  // identify: the phone flashes black and white
  await observer.click('#identify');
  await until(() => tapped.evaluate(() => window.c3s.changes.filter((c) => c.color === '255,255,255').length >= 2), 'the phone to flash');

  // QR: ask the phones for their codes; the unlocated phone shows one full screen
  await observer.check('#qr-unlocated-only');
  await observer.click('#ask-qr');
  await photographed.waitForSelector('#qr-layer:not([hidden])');
  await new Promise((r) => setTimeout(r, 1000)); // time for a stray message to arrive
  assert.equal(await tapped.isVisible('#qr-layer'), false, 'a located phone was not asked');
  // the observer's "photo" is that phone's screen: 360 × 640 px showing scene (0..36, 0..64)
  const photo = await photographed.screenshot({ type: 'png' });
  await observer.setInputFiles('#photo-file', { name: 'crowd.png', mimeType: 'image/png', buffer: photo });
  await observer.waitForSelector('#photo-canvas:not([hidden])');
  const corners = [[0, 0, 0, 0], [360, 0, 36, 0], [360, 640, 36, 64], [0, 640, 0, 64]];
  for (const [i, [px, py, x, y]] of corners.entries()) {
    await observer.click('#add-point');
    await observer.fill(`#point-${i}-px`, String(px));
    await observer.fill(`#point-${i}-py`, String(py));
    await observer.fill(`#point-${i}-x`, String(x));
    await observer.fill(`#point-${i}-y`, String(y));
  }
  await observer.click('#upload');
  await until(
    () => observer.evaluate(() => document.querySelector('#detections-table tr[data-status="located"]')),
    'a located detection',
  ).catch(async (e) => {
    const texts = await observer.evaluate(() => ['#error', '#status', '#detections'].map((s) => document.querySelector(s)?.textContent));
    throw new Error(`${e.message}: ${JSON.stringify(texts)}`);
  });
  const located = await until(() => photographed.evaluate(() => window.c3s.position), 'the photographed phone to be located');
  // the code is drawn in the middle of the screen: scene (18, 32)
  assert.ok(Math.abs(located.x - 18) < 1.5 && Math.abs(located.y - 32) < 1.5, `located at ${JSON.stringify(located)}`);
  await until(() => photographed.evaluate(() => document.getElementById('qr-layer').hidden), 'the code to go away once located');
});

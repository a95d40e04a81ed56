// A phone on a Wi-Fi that stops for a second mid-show keeps showing the show: it holds colours
// ahead of time (docs/protocol.md, "Ahead of time"), so a drop shorter than the lookahead never
// shows.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, StallingProxy, launchBrowser, png, until, sleep } from './harness.mjs';

let server;
let proxy;
let browser;

before(async () => {
  server = await Server.start();
  proxy = await StallingProxy.start(server.port);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  proxy?.close();
  await server?.stop();
});

test('a one-second network stall mid-show never shows the idle colour', async (t) => {
  const token = await server.login();
  const scene = await server.api('POST', '/api/scenes', { name: 'Stall', width: 10, height: 10, idle_color: '#000000' }, token);
  for (const [name, colour] of [['red', [220, 30, 40]], ['blue', [30, 60, 230]]]) {
    const res = await fetch(`${server.base}/api/scenes/${scene.scene_id}/frames?duration_ms=400&name=${name}`, {
      method: 'POST',
      headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
      body: png(4, 4, colour),
    });
    assert.equal(res.status, 201);
  }
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  await server.api('PUT', `/api/scenes/${scene.scene_id}/show`, { loop: true }, token);
  const { path: joinPath } = await server.api('GET', `/api/scenes/${scene.scene_id}/join-code`);

  // the phone reaches the server only through the proxy
  const page = await (await browser.newContext({ viewport: { width: 360, height: 640 } })).newPage();
  await page.goto(proxy.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  const pixelId = await page.evaluate(() => window.c3s.pixelId);
  await server.api('PUT', `/api/scenes/${scene.scene_id}/pixels/${pixelId}/position`, { x: 5, y: 5 }, token);
  await server.api('POST', `/api/scenes/${scene.scene_id}/playback`, { command: 'play', start_in_ms: 1000 }, token);
  await until(() => page.evaluate(() => window.c3s.changes.some((c) => c.color === '220,30,40')), 'the show to start');
  await sleep(1500);

  const stallFrom = Date.now();
  await proxy.stall(1000);
  const stallTo = Date.now();
  await sleep(1500);

  const changes = await page.evaluate(() => window.c3s.changes);
  const during = changes.filter((c) => c.wall >= stallFrom && c.wall <= stallTo + 1500);
  t.diagnostic(`${during.length} colour changes during and after the stall: ${[...new Set(during.map((c) => c.color))].join(' / ')}`);
  assert.ok(during.length >= 4, 'the show kept changing colour');
  assert.ok(during.every((c) => c.color !== '0,0,0'), 'never the idle colour');
  assert.equal(await page.evaluate(() => window.c3s.phase), 'in', 'the socket survived');
});

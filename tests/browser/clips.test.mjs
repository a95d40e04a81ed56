// A clip on the operator page in a real browser: a video made by the test with FFmpeg is
// dropped in the upload box, uploads with progress, shows in the frame list by its poster with
// its length and rate, is trimmed by its start and end, and once the show of it plays the
// preview draws a located phone in the clip frame's colour.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Server, launchBrowser, until, ADMIN } from './harness.mjs';

let server;
let browser;
let dir;

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'c3s-clip-page-'));
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('an operator uploads a clip, sees its poster and length, trims it and previews it playing', async () => {
  // 3 s of a solid colour that changes each second: red, green, blue (320 × 240, 30 fps)
  const clip = path.join(dir, 'colours.mp4');
  execFileSync('ffmpeg', ['-nostdin', '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'color=c=red:s=320x240:r=30:d=1',
    '-f', 'lavfi', '-i', 'color=c=lime:s=320x240:r=30:d=1',
    '-f', 'lavfi', '-i', 'color=c=blue:s=320x240:r=30:d=1',
    '-filter_complex', '[0:v][1:v][2:v]concat=n=3:v=1[v]', '-map', '[v]',
    '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-g', '15', clip]);

  const token = await server.login();
  const scene = await server.api('POST', '/api/scenes', { name: 'Clip page', width: 4, height: 3, idle_color: '#000000' }, token);
  const id = scene.scene_id;
  await server.api('PATCH', `/api/scenes/${id}`, { status: 'open' }, token);

  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('dialog', (d) => d.dismiss());
  await page.goto(server.base + '/operator.html');
  await page.fill('#login-login', ADMIN.login);
  await page.fill('#login-password', ADMIN.password);
  await page.click('#login-submit');
  await page.waitForSelector('#app:not(.hidden)');
  await page.click(`#scene-list button[data-scene-id="${id}"]`);
  await page.waitForSelector('#scene-panel:not(.hidden)');

  // the upload: the same box as images; it reports a clip and its length
  await page.setInputFiles('#frame-file', clip);
  await until(async () => /done: a clip of 3\.00 s/.test(await page.textContent('#upload-list')), 'the upload to finish as a clip');
  const frames = await server.api('GET', `/api/scenes/${id}/frames`, undefined, token);
  assert.equal(frames.length, 1);
  assert.equal(frames[0].content_type, 'video/mp4');
  assert.equal(frames[0].clip.fps, 30);

  // the list: the poster (a 320 px PNG), what the clip is, its start and end
  const item = `#frame-list li[data-frame-id="${frames[0].frame_id}"]`;
  await page.waitForSelector(item);
  await until(() => page.evaluate((sel) => document.querySelector(`${sel} img.thumb`)?.naturalWidth === 320, item), 'the poster to show');
  const meta = await page.textContent(`${item} .meta`);
  assert.match(meta, /clip · 320×240 · 3\.00 s long, plays 3\.00 s at 30 fps/, meta);
  assert.equal(await page.inputValue(`${item} .clip-start`), '0');
  assert.equal(await page.inputValue(`${item} .clip-end`), '3');

  // trimmed to its second second: it plays 1 s, the green one
  await page.fill(`${item} .clip-start`, '1');
  await page.dispatchEvent(`${item} .clip-start`, 'change');
  await until(async () => (await server.api('GET', `/api/scenes/${id}/frames`, undefined, token))[0].clip.start_ms === 1000, 'the start to be saved');
  await page.fill(`${item} .clip-end`, '2');
  await page.dispatchEvent(`${item} .clip-end`, 'change');
  await until(async () => (await server.api('GET', `/api/scenes/${id}/frames`, undefined, token))[0].duration_ms === 1000, 'the end to be saved');
  await until(async () => /plays 1\.00 s at 30 fps/.test(await page.textContent(`${item} .meta`)), 'the list to show the trimmed length');

  // a located phone (placed by the API) in the preview, in the clip's colour while it plays
  const guest = await server.api('POST', '/api/auth/guest', {});
  const joined = await server.api('POST', `/api/scenes/${id}/join`, {}, guest.token).catch(() => null);
  assert.ok(joined?.pixel_id, 'a guest joins the scene');
  await server.api('PUT', `/api/scenes/${id}/pixels/${joined.pixel_id}/position`, { x: 2, y: 1.5 }, token);
  await server.api('PUT', `/api/scenes/${id}/show`, { loop: true }, token);
  await server.api('POST', `/api/scenes/${id}/playback`, { command: 'play', start_in_ms: 1500 }, token);
  const info = await until(async () => {
    const text = await page.textContent('#preview-info');
    return /playing · frame 1 of 1 \(clip frame \d+\)/.test(text) && text;
  }, 'the preview to play the clip');
  assert.match(info, /1 located phone/);
  const colour = await until(async () => {
    const dots = await page.evaluate(() => window.c3s.preview().dots);
    const c = dots?.[0]?.color;
    return c && c !== '#000000' && c;
  }, 'the phone to be drawn in a colour of the clip');
  const [r, g, b] = colour.match(/\d+/g).map(Number);
  assert.ok(g > 200 && r < 60 && b < 60, `the trimmed clip is green: ${colour}`);
  assert.deepEqual(errors, [], 'no page error');
});

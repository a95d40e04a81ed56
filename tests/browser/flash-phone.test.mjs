// A phone page flashes its code of a flash session at the scheduled instants: every slot,
// once, lit as its code says, on the refresh nearest the slot's instant by the clock it
// synced with the server; screenshots mid-slot show white and black; a notice comes before
// the start and goes when the flashing begins; and a phone whose user declines does not
// flash. The page's clock is shifted far from the server's, so only a working sync passes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launchBrowser, shiftClock, until, sleep } from './harness.mjs';

/** One refresh at 60 Hz. */
const REFRESH_MS = 1000 / 60;
/** What a logged instant may be off beyond its refresh: the page reads its clock in the
 * refresh's callback, which runs a millisecond or two after the refresh began (more on a
 * busy two-core machine); the instant is the clock's reading there, not the refresh's. */
const CALLBACK_SLACK_MS = 3;
/** What the wall clock may be off beyond that: `wall` is read a moment after `at`, and the
 * server's clock is the wall clock it read at its start (it drifts by well under a ms over a
 * test). */
const WALL_SLACK_MS = 2;
/** Slots of one session the page may miss for want of a refresh (see `checkLog`). */
const MAX_MISSED = 2;
/** The page's monotonic clock is this far from the server's. */
const SHIFT_MS = -123456;
const IDLE = [0x30, 0x50, 0xa0];
const WHITE = [255, 255, 255];
const BLACK = [0, 0, 0];

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

async function openPhone(joinPath) {
  const context = await browser.newContext({ viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true });
  await shiftClock(context, SHIFT_MS);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('phone page error:', e.message));
  await page.goto(server.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  await until(() => page.evaluate(() => Number.isFinite(window.c3s.syncErrorMs)), 'a clock sync');
  return page;
}

/** The colour at the screen's centre and when (this machine's clock) the screenshot was taken. */
async function shotColour(page) {
  const from = Date.now();
  const shot = await page.screenshot({ type: 'png' });
  const to = Date.now();
  const rgb = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
    const c = new OffscreenCanvas(img.width, img.height);
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(Math.floor(img.width / 2), Math.floor(img.height / 2), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, shot.toString('base64'));
  return { rgb, from, to };
}

async function startSession(token, sceneId, body) {
  return server.api('POST', `/api/scenes/${sceneId}/flash-sessions`, body, token);
}

/** The session's code as the phone was told it, once it was. */
function codeOf(page, session) {
  return until(() => page.evaluate((id) => window.c3s.flash?.session === id && window.c3s.flash.slots, session.session_id), 'the flash message');
}

function checkCode(slots) {
  assert.equal(slots.length, 63, 'guard, preamble, nine groups, guard');
  assert.equal(slots[0], '0', 'a dark guard first');
  assert.equal(slots.slice(1, 8), '1110010', 'the Barker-7 preamble');
  assert.equal(slots[62], '0', 'a dark guard last');
  for (let g = 0; g < 9; g++) {
    const group = slots.slice(8 + 6 * g, 14 + 6 * g);
    assert.equal([...group].filter((c) => c === '1').length, 3, `group ${g} lights 3 of 6: ${group}`);
  }
}

/** Asserts the page's log of `session`: every slot once, lit as `slots` says, each on the
 * refresh nearest its instant by the synced clock (`at`) and by the wall clock (`wall`). */
async function checkLog(t, page, session, slots) {
  const { log, syncErrorMs } = await page.evaluate((id) => ({
    log: window.c3s.flashLog.filter((e) => e.session === id),
    syncErrorMs: window.c3s.syncErrorMs,
  }), session.session_id);
  // Every slot once, in order. A slot is missing when the page had no refresh in it at all
  // (it logs a slot at the slot's first refresh): headless Chromium on a busy two-core
  // machine now and then skips a refresh, as a phone does, and the screen then holds the
  // slot before, which the observer's decoder takes as one wrong slot. More than MAX_MISSED
  // is a page that cannot keep up, and fails.
  const shown = log.map((e) => e.slot);
  for (let k = 1; k < shown.length; k++) assert.ok(shown[k] > shown[k - 1], `slots in order, each once: ${shown.join(',')}`);
  assert.equal(shown[0], 0, 'the first slot shown');
  assert.equal(shown[shown.length - 1], slots.length - 1, 'the last slot shown');
  const missed = [...slots].map((_, i) => i).filter((i) => !shown.includes(i));
  assert.ok(missed.length <= MAX_MISSED, `at most ${MAX_MISSED} slots without a refresh; missed ${missed.join(',')}`);
  let worstAt = 0;
  let worstWall = 0;
  for (const e of log) {
    assert.equal(e.lit, slots[e.slot] === '1', `slot ${e.slot} lit as the code says`);
    const due = session.starts_at_us / 1000 + (e.slot * session.symbol_us) / 1000;
    const at = e.at - due;
    const wall = e.wall - due;
    assert.ok(Math.abs(at) <= REFRESH_MS + CALLBACK_SLACK_MS, `slot ${e.slot} shown ${at.toFixed(1)} ms from its instant by the synced clock`);
    assert.ok(Math.abs(wall) <= REFRESH_MS + CALLBACK_SLACK_MS + syncErrorMs + WALL_SLACK_MS,
      `slot ${e.slot} shown ${wall.toFixed(1)} ms from its instant by the wall clock (sync error ${syncErrorMs} ms)`);
    worstAt = Math.max(worstAt, Math.abs(at));
    worstWall = Math.max(worstWall, Math.abs(wall));
  }
  t.diagnostic(`${log.length} slots of ${slots.length} shown (missed: ${missed.join(',') || 'none'}), of ${session.symbol_us / 1000} ms; worst ${worstAt.toFixed(1)} ms off by the synced clock, ` +
    `${worstWall.toFixed(1)} ms by the wall clock (sync error ${syncErrorMs?.toFixed(1)} ms)`);
}

/** Six slots to photograph: the three lit and three dark ones furthest from a change of
 * colour (a screenshot takes a few tens of ms), at least three slots apart. */
function chooseSlots(slots) {
  const room = [...slots].map((c, i) => {
    let before = 0;
    while (i - before - 1 >= 0 && slots[i - before - 1] === c) before++;
    let afterN = 0;
    while (i + afterN + 1 < slots.length && slots[i + afterN + 1] === c) afterN++;
    return { i, c, room: Math.min(before, afterN) };
  });
  const chosen = [];
  for (const c of ['1', '0']) {
    const order = room.filter((r) => r.c === c && r.i > 0 && r.i < slots.length - 1).sort((a, b) => b.room - a.room || a.i - b.i);
    let n = 0;
    for (const r of order) {
      if (n === 3) break;
      if (chosen.some((o) => Math.abs(o.i - r.i) < 3)) continue;
      chosen.push(r);
      n++;
    }
  }
  return chosen.sort((a, b) => a.i - b.i);
}

test('a phone shows its code slot by slot at the scheduled instants, and not when its user declines', { timeout: 120000 }, async (t) => {
  const token = await server.login();
  const scene = await server.api('POST', '/api/scenes', {
    name: 'Flash phone', width: 10, height: 10, idle_color: '#3050a0', location_methods: ['flash', 'observer'],
  }, token);
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  const { path: joinPath } = await server.api('GET', `/api/scenes/${scene.scene_id}/join-code`);
  const phone = await openPhone(joinPath);

  // a session at the camera's default pace (two frames at 30 fps)
  const a = await startSession(token, scene.scene_id, { start_in_ms: 3000 });
  assert.equal(a.phones, 1);
  const codeA = await codeOf(phone, a);
  checkCode(codeA);
  // before the start: the notice, with the button to decline
  assert.ok(Date.now() < a.starts_at_us / 1000 - 500, 'the message came well before the start');
  assert.equal(await phone.isVisible('#flash-notice'), true, 'the notice is shown before the start');
  assert.equal(await phone.isVisible('#flash-skip'), true);
  assert.match(await phone.textContent('#flash-countdown'), /^in \d s$/);
  // during: nothing on screen but the code
  await sleep(a.starts_at_us / 1000 + 1000 - Date.now());
  assert.equal(await phone.isVisible('#flash-notice'), false, 'the notice is gone while flashing');
  assert.equal(await phone.isVisible('#panel'), false, 'no words while flashing');
  await sleep(a.ends_at_us / 1000 + 300 - Date.now());
  await checkLog(t, phone, a, codeA);
  assert.equal(await phone.isVisible('#flash-notice'), false, 'no notice after the session');

  // slower slots, photographed in the middle of six of them (by this machine's clock, which
  // is the server's: the page's own is two minutes off)
  const b = await startSession(token, scene.scene_id, { start_in_ms: 3000, symbol_ms: 200 });
  const codeB = await codeOf(phone, b);
  checkCode(codeB);
  const seen = [];
  for (const { i, c } of chooseSlots(codeB)) {
    const mid = b.starts_at_us / 1000 + ((i + 0.5) * b.symbol_us) / 1000;
    // the screenshot lands a little after it is asked for: ask a little before the middle
    await sleep(mid - 20 - Date.now());
    const shot = await shotColour(phone);
    seen.push({ slot: i, lit: c === '1', ...shot, mid });
  }
  for (const s of seen) {
    const when = `slot ${s.slot}: screenshot from ${(s.from - s.mid).toFixed(0)} to ${(s.to - s.mid).toFixed(0)} ms around its middle`;
    assert.ok(near(s.rgb, s.lit ? WHITE : BLACK), `${when} shows ${s.rgb}, not ${s.lit ? 'white' : 'black'}`);
  }
  t.diagnostic(`screenshots: ${seen.map((s) => `slot ${s.slot} ${s.lit ? 'white' : 'black'} ${(s.from - s.mid).toFixed(0)}..${(s.to - s.mid).toFixed(0)} ms`).join('; ')}`);
  await sleep(b.ends_at_us / 1000 + 300 - Date.now());
  await checkLog(t, phone, b, codeB);

  // a user who declines: the next session does not flash on this phone
  const c = await startSession(token, scene.scene_id, { start_in_ms: 3000 });
  await codeOf(phone, c);
  await phone.waitForSelector('#flash-notice:not([hidden])');
  await phone.click('#flash-skip');
  assert.equal(await phone.isVisible('#flash-notice'), false, 'the notice goes with the button');
  await sleep(c.starts_at_us / 1000 + 1000 - Date.now());
  // (the words stay up, over the middle of the screen: the screen's own colour is read)
  const during = await phone.evaluate(() => getComputedStyle(document.getElementById('screen')).backgroundColor);
  await sleep(c.ends_at_us / 1000 + 300 - Date.now());
  const { log, changes } = await phone.evaluate((id) => ({
    log: window.c3s.flashLog.filter((e) => e.session === id),
    changes: window.c3s.changes,
  }), c.session_id);
  assert.deepEqual(log, [], 'no slot of the declined session was shown');
  const flashed = changes.filter((ch) => ch.wall >= c.starts_at_us / 1000 && ch.wall <= c.ends_at_us / 1000);
  assert.deepEqual(flashed, [], 'the screen did not change during the declined session');
  assert.equal(during, `rgb(${IDLE.join(', ')})`, 'the screen shows the idle colour during the declined session');
});

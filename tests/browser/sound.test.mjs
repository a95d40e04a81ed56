// Locating phones by sound through the real server (docs/sound.md): phone pages in Chromium,
// each with a fake microphone that plays what a phone at a known place of the scene hears of
// six beacons (benches/sound/synth.mjs, in crowd noise, with echoes), record a session, find
// the chirps in their worker and report; the server places each within half a metre. And what
// the server refuses: sessions without a scale or with too few beacons, beacons outside the
// scene or past eight, a wrong beacon key, and reports that are early, for a session the phone
// was not told of, twice, with too few beacons or impossible delays, or not JSON the protocol
// has (a number out of range).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Server, launchBrowser, until, sleep } from './harness.mjs';
import { loopedWav, paths } from '../../benches/sound/synth.mjs';

/** The fake microphone's rate. Chromium's fake capture device runs at 44.1 kHz whatever the
 * file's rate, and a file of another rate is resampled in chunks: the last chunk of each loop is
 * padded with silence, so each loop came out 5–25 ms longer than the file (measured with a 48
 * kHz file). Its period is then not the session's, and the beacons before and after the
 * wrap get offsets that differ by that much (metres). At the device's own rate the file loops
 * exactly: checked below, from the track's settings. */
const FAKE_CAPTURE_RATE = 44100;
const SCENE = { width: 40, height: 24 };
const TEMPERATURE_C = 20;
/** 331.3 · √(1 + T / 273.15), as the server has it. */
const SPEED_M_S = 331.3 * Math.sqrt(1 + TEMPERATURE_C / 273.15);
/** Loudspeakers at the corners and the long sides' middles (scene units = metres). */
const BEACONS = [[0, 0], [20, 0], [40, 0], [40, 24], [20, 24], [0, 24]].map(([x, y], slot) => ({ slot, x, y }));
/** Where the phones stand, and their microphones' latencies (which a looped capture of unknown
 * phase hides anyway). */
const PHONES = [
  { x: 10, y: 8, micLatencyMs: 12, seed: 11 },
  { x: 27.5, y: 15.25, micLatencyMs: 37, seed: 22 },
  { x: 34, y: 4.5, micLatencyMs: 64, seed: 33 },
];
const MAX_ERROR_M = 0.5;
/** What one arrival may be off the phone's common offset, µs (34 mm): the detector's own error
 * is microseconds. */
const MAX_ARRIVAL_ERROR_US = 100;
const SNR_DB = 10;

let server;
let dir;
const browsers = [];

before(async () => {
  server = await Server.start();
  dir = mkdtempSync(path.join(tmpdir(), 'c3s-sound-'));
});

after(async () => {
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A request whose refusal is the point: `{status, body}`. */
async function call(method, p, body, token) {
  const headers = {};
  if (token) headers.authorization = 'Bearer ' + token;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(server.base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function refused(status, method, p, body, token, what) {
  const r = await call(method, p, body, token);
  assert.equal(r.status, status, `${what}: ${method} ${p} ${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function soundScene(token, name) {
  const scene = await server.api('POST', '/api/scenes', { name, ...SCENE, location_methods: ['sound', 'observer'] }, token);
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  const { path: joinPath } = await server.api('GET', `/api/scenes/${scene.scene_id}/join-code`);
  return { id: scene.scene_id, joinPath };
}

async function openPhone(browser, joinPath, { listens = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true });
  if (!listens) {
    // a phone that cannot listen (no microphone API): it ignores `listen`, and every report
    // it makes is the test's own
    await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'mediaDevices', { get: () => undefined }));
  }
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => {
    page.errors.push(e.message);
    console.error('phone page error:', e.message);
  });
  await page.goto(server.base + joinPath);
  await page.click('#join');
  await until(() => page.evaluate(() => window.c3s.phase === 'in'), 'the phone to join');
  await until(() => page.evaluate(() => Number.isFinite(window.c3s.syncErrorMs)), 'a clock sync');
  return page;
}

/** Each beacon's true delay at `phone` (metres), ms, before the phone's unknown offset. */
function trueDelays(phone, micLatencyMs = 0, beacons = BEACONS) {
  const ps = paths({ phone, beacons: beacons.map((b) => ({ index: b.slot, x: b.x, y: b.y })), micLatencyMs, reverb: false, speedOfSound: SPEED_M_S });
  return new Map(ps.map((p) => [p.index, p.delayMs]));
}

test('phones hearing six beacons through a fake microphone are located within half a metre', { timeout: 100000 }, async (t) => {
  const token = await server.login();
  const { id, joinPath } = await soundScene(token, 'Sound');
  const setup = await server.api('PUT', `/api/scenes/${id}/sound`, { metres_per_unit: 1, temperature_c: TEMPERATURE_C }, token);
  assert.ok(Math.abs(setup.speed_m_s - SPEED_M_S) < 1e-9, `speed of sound ${setup.speed_m_s}`);
  assert.equal(setup.ready, false, 'no beacons yet: not ready');
  const added = [];
  for (const b of BEACONS) {
    const r = await call('POST', `/api/scenes/${id}/beacons`, { name: `Speaker ${b.slot}`, x: b.x, y: b.y, slot: b.slot }, token);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.slot, b.slot);
    assert.ok(r.body.key && r.body.page.includes(r.body.key), 'the beacon page carries its key');
    added.push(r.body);
  }
  assert.equal((await server.api('GET', `/api/scenes/${id}/sound`, undefined, token)).ready, true);

  // one Chromium per phone: the fake microphone's file is the process's
  const started = Date.now();
  const phones = await Promise.all(PHONES.map(async (p, i) => {
    const wavPath = path.join(dir, `phone-${i}.wav`);
    loopedWav({
      sampleRate: FAKE_CAPTURE_RATE, phone: p, beacons: BEACONS.map((b) => ({ index: b.slot, x: b.x, y: b.y })),
      micLatencyMs: p.micLatencyMs, snrDb: SNR_DB, reverb: true, seed: p.seed, speedOfSound: SPEED_M_S, path: wavPath,
    });
    const browser = await launchBrowser({ args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wavPath}`, '--autoplay-policy=no-user-gesture-required'] });
    browsers.push(browser);
    const page = await openPhone(browser, joinPath);
    // the fake device's rate is the file's: else its loop is not the session's period
    const rate = await page.evaluate(async () => {
      // (as listen.js asks: with the browser's voice processing on, the track is 48 kHz)
      const s = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
      const r = s.getAudioTracks()[0].getSettings().sampleRate;
      for (const track of s.getTracks()) track.stop();
      return r;
    });
    assert.equal(rate, FAKE_CAPTURE_RATE, 'the fake capture device runs at the WAV\'s rate');
    return page;
  }));
  t.diagnostic(`three browsers up and joined in ${Date.now() - started} ms`);

  const session = await server.api('POST', `/api/scenes/${id}/sound-sessions`, { start_in_ms: 3000, repeats: 2 }, token);
  assert.equal(session.phones, 3, 'every phone told to listen');
  assert.equal(session.repeats, 2);
  assert.equal(session.period_us, 4800000);
  assert.equal(session.slot_us, 600000);
  assert.deepEqual(session.beacons.map((b) => [b.slot, b.x_m, b.y_m]), BEACONS.map((b) => [b.slot, b.x, b.y]));
  assert.equal(session.record_from_us, session.starts_at_us - 200000);
  assert.equal(session.record_until_us, session.starts_at_us + 2 * 4800000 + 700000);
  assert.ok(Math.abs(session.speed_m_s - SPEED_M_S) < 1e-9);

  // a beacon in the session finds it in its schedule
  const schedule = await server.api('GET', `/api/beacons/${added[3].beacon_id}/schedule?key=${encodeURIComponent(added[3].key)}`);
  assert.equal(schedule.slot, 3);
  assert.equal(schedule.scene_id, id);
  assert.deepEqual(schedule.sessions.map((s) => s.session_id), [session.session_id]);
  assert.equal(schedule.sessions[0].starts_at_us, session.starts_at_us);
  assert.ok(Math.abs(schedule.server_time_us - Date.now() * 1000) < 2e6, 'the server\'s time');

  // the phones say they listen, then report, and are placed
  await until(() => Promise.all(phones.map((p) => p.evaluate(() => window.c3s.sound?.phase))).then((ph) => ph.every((x) => x === 'listening')),
    'every phone to listen', session.starts_at_us / 1000 - Date.now() + 2000);
  const waitMs = session.record_until_us / 1000 - Date.now() + 20000;
  const results = await Promise.all(phones.map((page, i) => until(() => page.evaluate(() => {
    const s = window.c3s.sound;
    if (s?.phase === 'failed' || s?.refused) return { failed: s.error ?? s.refused };
    return s?.phase === 'reported' && window.c3s.position && { sound: s, position: window.c3s.position, pixelId: window.c3s.pixelId };
  }), `phone ${i} to report and be placed`, waitMs)));
  const reportedAfterMs = Date.now() - session.record_until_us / 1000;
  const { items } = await server.api('GET', `/api/scenes/${id}/pixels?status=located&per_page=200`, undefined, token);
  for (const [i, r] of results.entries()) {
    assert.ok(!r.failed, `phone ${i}: ${r.failed}`);
    const truth = PHONES[i];
    const { report } = r.sound;
    const error = Math.hypot(r.position.x - truth.x, r.position.y - truth.y);
    const delays = trueDelays(truth, truth.micLatencyMs);
    // the capture's phase is unknown: what the arrivals are off, less their common part
    const offs = report.heard.map((a) => a.delayMs - delays.get(a.beacon));
    const common = offs.reduce((a, b) => a + b, 0) / offs.length;
    t.diagnostic(`phone ${i} at (${truth.x}, ${truth.y}): placed at (${r.position.x.toFixed(4)}, ${r.position.y.toFixed(4)}), ${(1000 * error).toFixed(1)} mm off; ` +
      `detection ${report.tookMs.toFixed(0)} ms over ${report.samples} samples at ${report.sampleRate} Hz; common offset ${common.toFixed(2)} ms; ` +
      `arrivals ${report.heard.map((a, k) => `${a.beacon}: ${a.delayMs.toFixed(3)} ms (${(1000 * (offs[k] - common)).toFixed(1)} µs, ${a.snr.toFixed(1)} dB)`).join(', ')}`);
    assert.equal(report.heard.length, BEACONS.length, `phone ${i} heard every beacon`);
    // every arrival on the same offset, not only the position: the server's solver leaves out
    // one beacon that disagrees, which would hide a capture that jumps (a file of another rate)
    const worstUs = Math.max(...offs.map((o) => Math.abs(o - common) * 1000));
    assert.ok(worstUs <= MAX_ARRIVAL_ERROR_US, `phone ${i}: an arrival ${worstUs.toFixed(1)} µs off the others' offset`);
    assert.equal(report.sampleRate, FAKE_CAPTURE_RATE);
    assert.ok(report.samples >= ((session.record_until_us - session.record_from_us) / 1e6) * report.sampleRate * 0.95, `phone ${i} recorded the window (${report.samples} samples)`);
    assert.ok(error <= MAX_ERROR_M, `phone ${i} placed ${error.toFixed(3)} m from where it stands`);
    const pixel = items.find((p) => p.pixel_id === r.pixelId);
    assert.ok(pixel, `phone ${i} listed as located`);
    assert.equal(pixel.method, 'sound');
    assert.ok(Math.hypot(pixel.x - r.position.x, pixel.y - r.position.y) < 1e-9, 'the phone was told its place');
  }
  t.diagnostic(`reports placed ${reportedAfterMs} ms after the recording window`);
  const tally = await server.api('GET', `/api/scenes/${id}/sound-sessions/${session.session_id}`, undefined, token);
  assert.deepEqual([tally.phones, tally.reported, tally.placed, tally.refused], [3, 3, 3, 0], JSON.stringify(tally));
  for (const [i, page] of phones.entries()) assert.deepEqual(page.errors, [], `phone ${i}: no page errors`);
});

/** Sends `text` on the phone's socket and resolves to the reason of the refusal it brings. */
async function refusal(page, text) {
  const before = await page.evaluate(() => window.c3s.refusals.length);
  await page.evaluate((s) => window.c3s.socket.send(s), text);
  const r = await until(() => page.evaluate((n) => window.c3s.refusals[n], before), `a refusal of ${text.slice(0, 80)}`, 5000);
  assert.equal(r.method, 'sound');
  return r.reason;
}

const report = (sessionId, arrivals) => JSON.stringify({ type: 'sound', session_id: sessionId, arrivals });

test('the server refuses bad sound setups and bad reports', { timeout: 60000 }, async (t) => {
  const token = await server.login();
  const { id, joinPath } = await soundScene(token, 'Sound refusals');
  const sessions = `/api/scenes/${id}/sound-sessions`;

  // a scene that does not locate by sound takes no scale or beacons
  const plain = await server.api('POST', '/api/scenes', { name: 'No sound', ...SCENE, location_methods: ['observer'] }, token);
  await refused(409, 'PUT', `/api/scenes/${plain.scene_id}/sound`, { metres_per_unit: 1 }, token, 'no sound: scale');
  await refused(409, 'POST', `/api/scenes/${plain.scene_id}/beacons`, { name: 'B', x: 1, y: 1 }, token, 'no sound: beacon');
  await refused(409, 'POST', `/api/scenes/${plain.scene_id}/sound-sessions`, {}, token, 'no sound: session');

  // no scale, then no beacons, then three
  const noScale = await refused(409, 'POST', sessions, { start_in_ms: 2000 }, token, 'no scale');
  assert.match(noScale.message, /scale/);
  await refused(422, 'PUT', `/api/scenes/${id}/sound`, { metres_per_unit: 0 }, token, 'a scale of 0');
  await refused(422, 'PUT', `/api/scenes/${id}/sound`, { metres_per_unit: 1, temperature_c: 100 }, token, '100 °C');
  await server.api('PUT', `/api/scenes/${id}/sound`, { metres_per_unit: 1, temperature_c: TEMPERATURE_C }, token);
  assert.match((await refused(409, 'POST', sessions, {}, token, 'no beacons')).message, /0 beacon/);
  const places = [[0, 0], [20, 0], [40, 0], [40, 12], [40, 24], [20, 24], [0, 24], [0, 12]];
  const beacons = [];
  for (const [x, y] of places.slice(0, 3)) beacons.push(await server.api('POST', `/api/scenes/${id}/beacons`, { name: `B${beacons.length}`, x, y }, token));
  assert.deepEqual(beacons.map((b) => b.slot), [0, 1, 2], 'the lowest free slots');
  assert.match((await refused(409, 'POST', sessions, {}, token, 'three beacons')).message, /3 beacon/);
  // beacons outside the scene, a slot out of range, a slot taken
  for (const [x, y] of [[40.5, 3], [-1, 3], [5, 25], [5, -0.1]]) {
    const body = await refused(422, 'POST', `/api/scenes/${id}/beacons`, { name: 'Out', x, y }, token, `a beacon at (${x}, ${y})`);
    assert.equal(body.error, 'outside_scene', JSON.stringify(body));
  }
  await refused(422, 'POST', `/api/scenes/${id}/beacons`, { name: 'Slot 8', x: 1, y: 1, slot: 8 }, token, 'slot 8');
  await refused(409, 'POST', `/api/scenes/${id}/beacons`, { name: 'Again', x: 1, y: 1, slot: 1 }, token, 'slot 1 taken');
  for (const [x, y] of places.slice(3)) beacons.push(await server.api('POST', `/api/scenes/${id}/beacons`, { name: `B${beacons.length}`, x, y }, token));
  assert.deepEqual(beacons.map((b) => b.slot), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.match((await refused(409, 'POST', `/api/scenes/${id}/beacons`, { name: 'Ninth', x: 5, y: 5 }, token, 'a ninth beacon')).message, /eight/);
  await refused(422, 'POST', sessions, { repeats: 0 }, token, 'no repeats');
  await refused(422, 'POST', sessions, { start_in_ms: 10 }, token, 'too soon');
  // a wrong key, another beacon's key, no such beacon
  const b0 = beacons[0];
  await refused(404, 'GET', `/api/beacons/${b0.beacon_id}/schedule?key=not-the-key`, undefined, undefined, 'a wrong key');
  await refused(404, 'GET', `/api/beacons/${b0.beacon_id}/schedule?key=${encodeURIComponent(beacons[1].key)}`, undefined, undefined, 'another beacon\'s key');
  await refused(404, 'GET', `/api/beacons/00000000-0000-4000-8000-000000000000/schedule?key=${encodeURIComponent(b0.key)}`, undefined, undefined, 'no such beacon');

  const browser = await launchBrowser({ args: ['--autoplay-policy=no-user-gesture-required'] });
  browsers.push(browser);
  // the beacon page loads, says which beacon it is, and hears of the session
  const beaconPage = await (await browser.newContext()).newPage();
  const beaconErrors = [];
  beaconPage.on('pageerror', (e) => beaconErrors.push(e.message));
  await beaconPage.goto(server.base + b0.page);
  await until(() => beaconPage.evaluate(() => window.c3s.slot === 0 && Number.isFinite(window.c3s.syncErrorMs)), 'the beacon page\'s schedule and clock');
  assert.equal(await beaconPage.textContent('#beacon-name'), 'B0');
  const wrongKey = await (await browser.newContext()).newPage();
  await wrongKey.goto(`${server.base}/beacon.html?beacon=${b0.beacon_id}&key=wrong`);
  await until(() => wrongKey.evaluate(() => window.c3s.error !== null), 'the wrong key\'s answer');
  assert.match(await wrongKey.textContent('#status'), /names no beacon/);

  // phone A is told of the first session; B joins after it started
  const a = await openPhone(browser, joinPath, { listens: false });
  const s1 = await server.api('POST', sessions, { start_in_ms: 1000, repeats: 1 }, token);
  assert.equal(s1.phones, 1);
  const place = { x: 15, y: 9 };
  const delays = trueDelays(place, 0, beacons);
  const arrivals = (slots = [...delays.keys()], offsetMs = 41.5) => slots.map((slot) => ({ slot, delay_ms: delays.get(slot) + offsetMs }));
  // before the recording ends
  assert.match(await refusal(a, report(s1.session_id, arrivals(beacons.map((b) => b.slot)))), /still under way/);
  const b = await openPhone(browser, joinPath, { listens: false });
  const s2 = await server.api('POST', sessions, { start_in_ms: 1000, repeats: 1 }, token);
  assert.equal(s2.phones, 2, 'both phones told of the second session');
  // the beacon page lists both sessions for its slot
  await until(() => beaconPage.evaluate(() => window.c3s.sessions.length === 2), 'the beacon page to hear of both sessions');
  assert.deepEqual(await beaconPage.evaluate(() => window.c3s.sessions.map((s) => s.session_id).sort()), [s1.session_id, s2.session_id].sort());

  await sleep(s2.record_until_us / 1000 - Date.now() + 100);
  const reasons = {};
  // three beacons are too few (and that was A's one report of the first session)
  reasons.tooFew = await refusal(a, report(s1.session_id, arrivals([0, 1, 2])));
  assert.match(reasons.tooFew, /^3 beacon\(s\) heard/);
  reasons.again = await refusal(a, report(s1.session_id, arrivals()));
  assert.match(reasons.again, /reported already/);
  // B was not told of the first session
  reasons.notTold = await refusal(b, report(s1.session_id, arrivals()));
  assert.match(reasons.notTold, /not told to listen/);
  // a delay that is a number but not one within the period
  const far = arrivals();
  far[2].delay_ms = 1e300;
  reasons.badDelay = await refusal(a, report(s2.session_id, far));
  assert.match(reasons.badDelay, /not a finite number/);
  reasons.noSession = await refusal(a, report('00000000-0000-4000-8000-000000000000', arrivals()));
  assert.match(reasons.noSession, /no such sound session/);
  t.diagnostic(`refusals: ${JSON.stringify(reasons)}`);
  assert.equal(await a.textContent('#status'), 'Your location could not be used.');
  for (const [name, page] of [['A', a], ['B', b]]) assert.equal(await page.evaluate(() => window.c3s.position), null, `phone ${name} not placed`);

  // B's own report of the second session, from the true delays of a place: placed there
  await b.evaluate((s) => window.c3s.socket.send(s), report(s2.session_id, arrivals()));
  const placed = await until(() => b.evaluate(() => window.c3s.position), 'B to be placed');
  t.diagnostic(`B placed at (${placed.x.toFixed(4)}, ${placed.y.toFixed(4)}) from exact delays at (${place.x}, ${place.y})`);
  assert.ok(Math.hypot(placed.x - place.x, placed.y - place.y) < 0.01, `placed at ${JSON.stringify(placed)}`);

  // a delay JSON cannot carry (1e999 overflows a double; NaN is written null) is not a message
  // of the protocol: the socket ends with 4000, the page comes back, and nothing is placed
  for (const text of ['{"type":"sound","session_id":"' + s2.session_id + '","arrivals":[{"slot":0,"delay_ms":1e999}]}',
    report(s2.session_id, [{ slot: 0, delay_ms: NaN }])]) {
    const welcomes = await a.evaluate(() => window.c3s.welcomes);
    await a.evaluate((s) => window.c3s.socket.send(s), text);
    await until(() => a.evaluate(() => window.c3s.lastClose === 4000), `the socket to end with 4000 after ${text}`, 5000);
    await until(() => a.evaluate((w) => window.c3s.phase === 'in' && window.c3s.welcomes > w, welcomes), 'A to come back', 10000);
    await a.evaluate(() => { window.c3s.lastClose = null; });
  }
  assert.equal(await a.evaluate(() => window.c3s.position), null, 'A not placed');

  const t1 = await server.api('GET', `${sessions}/${s1.session_id}`, undefined, token);
  assert.deepEqual([t1.phones, t1.reported, t1.placed, t1.refused], [1, 1, 0, 1], JSON.stringify(t1));
  const t2 = await server.api('GET', `${sessions}/${s2.session_id}`, undefined, token);
  assert.deepEqual([t2.phones, t2.reported, t2.placed, t2.refused], [2, 2, 1, 1], JSON.stringify(t2));
  const { items } = await server.api('GET', `/api/scenes/${id}/pixels?status=located&per_page=200`, undefined, token);
  assert.deepEqual(items.map((p) => p.pixel_id), [await b.evaluate(() => window.c3s.pixelId)], 'only B is located');
  assert.deepEqual([...a.errors, ...b.errors, ...beaconErrors], [], 'no page errors');
});

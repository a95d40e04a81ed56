// Conformance of the phone socket to docs/protocol.md, checked as a new client author would:
// a plain WebSocket client (`ws`, no browser) that knows only what that document says. Every
// promise the document makes a client is its own test: hello/welcome and every welcome field,
// clock sync, heartbeats, every close code a client can cause (each a real close frame with a
// fixed reason of at most 123 bytes), the colour chunks' binary format and timing, locating by
// seat and GPS, QR codes, and the messages an operator's actions bring. The scene set-up uses
// the HTTP API (as the other browser tests do); the socket is spoken from the document alone.
//
// C3S_BIN names the server binary (the harness's default otherwise).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Server, png, sleep } from './harness.mjs';

const BIN = process.env.C3S_BIN || undefined;

// --- what the document says -----------------------------------------------------------------

const PROTOCOL = 1;
const HELLO_WITHIN_MS = 10000;
const PING_EVERY_MS = 15000;
const MAX_MESSAGE_BYTES = 4096;
const RATE_PER_S = 20;
const BURST = 40;
const DEFAULT_TICK_MS = 500;
const DEFAULT_LOOKAHEAD_MS = 1500;
const MAX_REASON_BYTES = 123;
/** "at once", for a catch-up chunk: well under a tick. */
const AT_ONCE_MS = 250;
const REASONS = {
  1000: ['bye'],
  1001: ['server shutting down', 'send failed', 'closed'],
  1009: ['message too big'],
  4000: ['not a message of this protocol', 'binary messages are not accepted', 'hello was already said'],
  4001: ['hello expected', 'the first message must be hello'],
  4002: [`unsupported protocol version N; this server speaks ${PROTOCOL}`],
  4003: ['removed from the scene'],
  4004: ['no such scene is open'],
  4005: ['the server cannot take phones right now; retry shortly'],
  4008: ['too slow: the phone fell behind the show'],
  4009: ['this phone connected again elsewhere'],
  4010: ['the scene has ended'],
  4011: ['no answer to pings'],
  4029: ['too many messages'],
};
/** The 4000 reasons are written "bad message: a / b / c": take either reading. */
function reasonMatches(code, reason, sentence) {
  if (reason === sentence) return true;
  return code === 4000 && reason === 'bad message: ' + sentence;
}
const isInt = (v) => Number.isInteger(v);
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const isId = (v) => (typeof v === 'string' && v.length > 0) || isInt(v);
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
/** Server → phone messages and the shape the document gives each. */
const SHAPES = {
  welcome: (m) => m.protocol === PROTOCOL && isId(m.user_id) && isId(m.pixel_id) && sceneShape(m.scene) &&
    (m.position === null || (m.position && isNum(m.position.x) && isNum(m.position.y))) &&
    isNum(m.server_time_us) && isNum(m.tick_ms) && isNum(m.lookahead_ms) && (m.token === undefined || typeof m.token === 'string'),
  scene: (m) => sceneShape(m.scene),
  sync: (m) => isNum(m.t0) && isNum(m.t1) && isNum(m.t2),
  located: (m) => isNum(m.x) && isNum(m.y),
  locate_refused: (m) => ['seat', 'gps', 'qr'].includes(m.method) && typeof m.reason === 'string',
  qr: (m) => m.side === 25 && typeof m.modules === 'string' && m.modules.length === 625 && isNum(m.expires_us),
  identify: (m) => isNum(m.until_us),
  flash: (m) => isId(m.session_id) && isNum(m.starts_at_us) && isNum(m.symbol_us) && typeof m.slots === 'string' && /^[01]{63}$/.test(m.slots),
};
function sceneShape(s) {
  return !!s && isId(s.scene_id) && typeof s.name === 'string' && isNum(s.width) && isNum(s.height) &&
    typeof s.idle_color === 'string' && /^#[0-9a-fA-F]{6}$/.test(s.idle_color) && typeof s.status === 'string' &&
    Array.isArray(s.location_methods) && typeof s.updated_at === 'string' && RFC3339.test(s.updated_at);
}

// --- a phone that speaks the protocol ---------------------------------------------------------

/** The phone's own clock, ms (as the web client's: performance.timeOrigin + performance.now()). */
const phoneNow = () => performance.timeOrigin + performance.now();

let server;
let wsBase;
const allPhones = [];

class Phone {
  constructor(sceneId, { autoPong = true, base = wsBase } = {}) {
    this.sceneId = sceneId;
    this.ws = new WebSocket(`${base}/ws/scenes/${sceneId}`, { autoPong });
    this.openedAt = null;
    this.messages = []; // {at, msg, raw}
    this.taken = new Set();
    this.chunks = []; // {at, bytes}
    this.pings = []; // phone-clock instants of the server's ping frames
    this.errors = [];
    this.notParsed = [];
    this.listeners = new Set();
    this.ws.on('open', () => { this.openedAt = phoneNow(); });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('close', () => reject(new Error('closed before opening: ' + this.errors.join('; '))));
    });
    this.opened.catch(() => {});
    this.ws.on('message', (data, isBinary) => {
      const at = phoneNow();
      if (isBinary) {
        this.chunks.push({ at, bytes: Buffer.from(data) });
      } else {
        const raw = data.toString();
        try {
          this.messages.push({ at, msg: JSON.parse(raw), raw });
        } catch {
          this.notParsed.push(raw);
        }
      }
      this.poke();
    });
    this.ws.on('ping', () => { this.pings.push(phoneNow()); this.poke(); });
    this.ws.on('error', (e) => { this.errors.push(e.message); });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8'), reasonBytes: reason.length, at: phoneNow() };
        resolve(this.closeInfo);
        this.poke();
      });
    });
    allPhones.push(this);
  }

  poke() {
    for (const l of [...this.listeners]) l();
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /** Waits (bounded) until `check()` returns something truthy; re-checked on every event. */
  waitFor(check, ms, what) {
    return new Promise((resolve, reject) => {
      const done = (fn, v) => { clearTimeout(timer); this.listeners.delete(listener); fn(v); };
      const listener = () => {
        let v;
        try {
          v = check();
        } catch (e) {
          return done(reject, e);
        }
        if (v) return done(resolve, v);
        if (this.closeInfo) done(reject, new Error(`the session closed (${this.closeInfo.code} "${this.closeInfo.reason}") while waiting for ${what}`));
      };
      const timer = setTimeout(() => done(reject, new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      this.listeners.add(listener);
      listener();
    });
  }

  /** The next message not yet taken that `pred` accepts. */
  next(pred, ms = 5000, what = 'a message') {
    return this.waitFor(() => {
      for (let i = 0; i < this.messages.length; i++) {
        if (!this.taken.has(i) && pred(this.messages[i].msg)) {
          this.taken.add(i);
          return this.messages[i];
        }
      }
      return null;
    }, ms, what);
  }

  nextOfType(type, ms = 5000) {
    return this.next((m) => m.type === type, ms, `a "${type}" message`).then((e) => e.msg);
  }

  async hello(extra = {}) {
    await this.opened;
    this.send({ type: 'hello', protocol: PROTOCOL, ...extra });
    this.welcome = await this.nextOfType('welcome');
    return this.welcome;
  }

  /** One clock-sync exchange: the four NTP timestamps, all in ms (t1, t2 converted). */
  async sync(t0 = phoneNow()) {
    this.send({ type: 'sync', t0 });
    const { at, msg } = await this.next((m) => m.type === 'sync', 5000, 'a sync reply');
    return { sent: t0, reply: msg, t0: msg.t0, t1: msg.t1 / 1000, t2: msg.t2 / 1000, t3: at };
  }

  /** Offset (server clock − phone clock, ms) from the narrowest of `n` exchanges. */
  async offset(n = 8) {
    let best = null;
    for (let i = 0; i < n; i++) {
      const s = await this.sync();
      const delay = s.t3 - s.t0 - (s.t2 - s.t1);
      const offset = (s.t1 - s.t0 + (s.t2 - s.t3)) / 2;
      if (!best || delay < best.delay) best = { delay, offset };
      await sleep(60);
    }
    this.clock = best;
    return best;
  }

  /** The close, or null if none came within `ms`. */
  closeWithin(ms) {
    return Promise.race([this.closed, sleep(ms).then(() => null)]);
  }

  end() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

/**
 * Asserts the session ends within `ms` with a real close frame: `code` and the documented
 * reason `sentence`, at most 123 bytes, not text the client sent (`sent`).
 */
async function expectClose(phone, code, sentence, ms, sent = []) {
  const info = await phone.closeWithin(ms);
  assert.ok(info, `no close within ${ms} ms (expected ${code} "${sentence}")`);
  assert.notEqual(info.code, 1006, `the session ended without a close frame (1006; ws said: ${phone.errors.join('; ') || 'nothing'})`);
  assert.equal(info.code, code, `close code ${info.code} "${info.reason}", expected ${code} "${sentence}"`);
  assert.ok(info.reasonBytes > 0, 'the close frame has a reason');
  assert.ok(info.reasonBytes <= MAX_REASON_BYTES, `reason of ${info.reasonBytes} bytes`);
  assert.ok(reasonMatches(code, info.reason, sentence), `reason "${info.reason}", expected "${sentence}"`);
  for (const s of sent) assert.ok(!info.reason.includes(s), `the reason repeats text the client sent: "${info.reason}"`);
  return info;
}

/**
 * A QR code's format information (ISO/IEC 18004): its error correction level and mask, when
 * both copies agree and are a valid code word; `modules` row by row, '1' dark.
 */
function qrFormat(modules, size) {
  const dark = (x, y) => modules[y * size + x] === '1';
  let first = 0;
  let second = 0;
  const bit = (v, i) => (v ? 1 << i : 0);
  for (let i = 0; i <= 5; i++) first |= bit(dark(8, i), i);
  first |= bit(dark(8, 7), 6) | bit(dark(8, 8), 7) | bit(dark(7, 8), 8);
  for (let i = 9; i < 15; i++) first |= bit(dark(14 - i, 8), i);
  for (let i = 0; i < 8; i++) second |= bit(dark(size - 1 - i, 8), i);
  for (let i = 8; i < 15; i++) second |= bit(dark(8, size - 15 + i), i);
  if (first !== second || !dark(8, size - 8)) return null;
  for (const [ecl, fb] of [['L', 1], ['M', 0], ['Q', 3], ['H', 2]]) {
    for (let mask = 0; mask < 8; mask++) {
      const data = (fb << 3) | mask;
      let rem = data;
      for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
      if ((((data << 10) | rem) ^ 0x5412) === first) return { ecl, mask };
    }
  }
  return null;
}

// --- colour chunks, from the document's table ---------------------------------------------------

function decodeChunk(bytes) {
  const problems = [];
  if (bytes.length < 17) return { problems: [`only ${bytes.length} bytes`], entries: [], bytes };
  const c = {
    kind: bytes[0],
    version: bytes.readUInt32LE(1),
    start: Number(bytes.readBigInt64LE(5)),
    length: bytes.readUInt32LE(13),
    entries: [],
    problems,
    bytes,
  };
  let i = 17;
  let at = c.start;
  while (i < bytes.length) {
    let dt = 0;
    let n = 0;
    let byte;
    do {
      if (i >= bytes.length) { problems.push('a varint runs past the end'); return c; }
      byte = bytes[i++];
      dt += (byte & 0x7f) * 2 ** (7 * n);
      n++;
    } while (byte & 0x80);
    if (i + 3 > bytes.length) { problems.push('an entry without its three colour bytes'); return c; }
    at += dt;
    c.entries.push({ dt, varintBytes: n, at, rgb: [bytes[i], bytes[i + 1], bytes[i + 2]] });
    i += 3;
  }
  return c;
}

/** The colour a chunk gives instant `t`: the last entry at or before it; undefined outside. */
function colourAt(c, t) {
  if (t < c.start || t >= c.start + c.length) return undefined;
  let rgb;
  for (const e of c.entries) if (e.at <= t) rgb = e.rgb;
  return rgb;
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? { n: s.length, min: s[0], median: s[Math.floor(s.length / 2)], max: s[s.length - 1] } : { n: 0 };
};
const fmt = (st) => (st.n ? `n=${st.n} min=${st.min.toFixed(1)} median=${st.median.toFixed(1)} max=${st.max.toFixed(1)} ms` : 'none');

// --- scenes ------------------------------------------------------------------------------------

let token;
const scenes = {};
const SEATS = 'section,row,seat,x,y\nA,1,1,5,5\nA,1,2,15,5\nB,2,7,40,60\n';
// a 100 × 100 scene on a square of about 74.5 m: x east, y south
const GEO = {
  accuracy_m: 20,
  points: [
    { lat: 48.00067, lon: 11.0, x: 0, y: 0 },
    { lat: 48.00067, lon: 11.001, x: 100, y: 0 },
    { lat: 48.0, lon: 11.0, x: 0, y: 100 },
    { lat: 48.0, lon: 11.001, x: 100, y: 100 },
  ],
};
const GPS_CENTRE = { lat: 48.000335, lon: 11.0005 };

async function newScene(body, { open = true } = {}) {
  const scene = await server.api('POST', '/api/scenes', { width: 10, height: 10, ...body }, token);
  if (open) await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  return scene;
}

async function putSeats(id) {
  const res = await fetch(`${server.base}/api/scenes/${id}/seats`, {
    method: 'PUT',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'text/csv' },
    body: SEATS,
  });
  assert.equal(res.status, 200, await res.text());
}

async function uploadFrame(id, rgb, ms) {
  const res = await fetch(`${server.base}/api/scenes/${id}/frames?duration_ms=${ms}`, {
    method: 'POST',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
    body: png(4, 4, rgb),
  });
  assert.equal(res.status, 201, await res.text());
}

const place = (sceneId, pixelId, x, y) => server.api('PUT', `/api/scenes/${sceneId}/pixels/${pixelId}/position`, { x, y }, token);

// --- the tests -----------------------------------------------------------------------------------

describe('the phone protocol (docs/protocol.md)', { concurrency: true }, () => {
  before(async () => {
    server = await Server.start({ bin: BIN });
    wsBase = server.base.replace(/^http/, 'ws');
    token = await server.login();
    scenes.plain = await newScene({ name: 'Protocol plain', idle_color: '#102030', location_methods: ['observer'] });
    scenes.draft = await newScene({ name: 'Protocol draft' }, { open: false });
    scenes.ended = await newScene({ name: 'Protocol ended' });
    await server.api('PATCH', `/api/scenes/${scenes.ended.scene_id}`, { status: 'ended' }, token);
    // locating: one scene allows seat, GPS and QR; one has a seat map and a geo-reference
    // but allows none of them; one allows GPS but is not geo-referenced
    scenes.locate = await newScene({ name: 'Protocol locate', width: 100, height: 100, location_methods: ['seat', 'gps', 'qr', 'observer'] });
    await putSeats(scenes.locate.scene_id);
    await server.api('PUT', `/api/scenes/${scenes.locate.scene_id}/geo-reference`, GEO, token);
    scenes.nolocate = await newScene({ name: 'Protocol no locate', width: 100, height: 100, location_methods: ['seat', 'gps', 'qr', 'observer'] });
    await putSeats(scenes.nolocate.scene_id);
    await server.api('PUT', `/api/scenes/${scenes.nolocate.scene_id}/geo-reference`, GEO, token);
    await server.api('PATCH', `/api/scenes/${scenes.nolocate.scene_id}`, { location_methods: ['observer'] }, token);
    scenes.nogeo = await newScene({ name: 'Protocol no geo', width: 100, height: 100, location_methods: ['gps', 'observer'] });
  });

  after(() => {
    for (const p of allPhones) p.end();
  });

  // --- session ---

  test('hello is answered by a welcome with every documented field', async (t) => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.opened;
    const sentAt = Date.now();
    const w = await phone.hello();
    const gotAt = Date.now();
    t.diagnostic(`welcome: ${JSON.stringify(w)}`);
    assert.equal(w.type, 'welcome');
    assert.equal(w.protocol, PROTOCOL, 'protocol');
    assert.equal(typeof w.token, 'string', 'a new phone is given a token');
    assert.ok(w.token.length > 0);
    assert.ok(isId(w.user_id), 'user_id');
    assert.ok(isId(w.pixel_id), 'pixel_id');
    const s = w.scene;
    assert.ok(s && typeof s === 'object', 'scene');
    assert.equal(s.scene_id, scenes.plain.scene_id, 'scene.scene_id');
    assert.equal(s.name, 'Protocol plain', 'scene.name');
    assert.equal(s.width, 10, 'scene.width');
    assert.equal(s.height, 10, 'scene.height');
    assert.match(s.idle_color, /^#[0-9a-f]{6}$/, 'scene.idle_color is #rrggbb');
    assert.equal(s.idle_color.toLowerCase(), '#102030');
    assert.equal(s.status, 'open', 'scene.status');
    assert.deepEqual(s.location_methods, ['observer'], 'scene.location_methods');
    assert.match(s.updated_at, RFC3339, 'scene.updated_at is RFC 3339');
    assert.ok(Number.isFinite(Date.parse(s.updated_at)));
    assert.equal(w.position, null, 'an unlocated new phone has position null');
    assert.ok(isNum(w.server_time_us), 'server_time_us');
    // µs since the Unix epoch: on this machine, between sending hello and reading welcome
    assert.ok(w.server_time_us >= (sentAt - 50) * 1000 && w.server_time_us <= (gotAt + 50) * 1000,
      `server_time_us ${w.server_time_us} is not µs of now (${sentAt * 1000}..${gotAt * 1000})`);
    assert.equal(w.tick_ms, DEFAULT_TICK_MS, 'tick_ms (default)');
    assert.equal(w.lookahead_ms, DEFAULT_LOOKAHEAD_MS, 'lookahead_ms (default)');
    const documented = ['type', 'protocol', 'token', 'user_id', 'pixel_id', 'scene', 'position', 'server_time_us', 'tick_ms', 'lookahead_ms'];
    const extra = Object.keys(w).filter((k) => !documented.includes(k));
    const sceneDocumented = ['scene_id', 'name', 'width', 'height', 'idle_color', 'status', 'location_methods', 'updated_at'];
    const sceneExtra = Object.keys(s).filter((k) => !sceneDocumented.includes(k));
    t.diagnostic(`undocumented welcome fields: ${extra.join(', ') || 'none'}; undocumented scene fields: ${sceneExtra.join(', ') || 'none'}`);
    assert.ok(phone.open, 'still connected');
    phone.ws.close(1000);
  });

  test('hello with the token resumes identity, pixel and position; without one or with a dead one, a new guest', async () => {
    const a = new Phone(scenes.plain.scene_id);
    const wa = await a.hello();
    // an observer places the phone: it hears `located`
    await place(scenes.plain.scene_id, wa.pixel_id, 3, 4);
    const located = await a.nextOfType('located');
    assert.deepEqual([located.x, located.y], [3, 4], 'located {x, y} where the observer put it');
    a.ws.close(1000);
    await a.closeWithin(5000);

    const b = new Phone(scenes.plain.scene_id);
    const wb = await b.hello({ token: wa.token });
    assert.equal(wb.token, undefined, 'no token when resuming ("only when new")');
    assert.equal(wb.user_id, wa.user_id, 'the same user');
    assert.equal(wb.pixel_id, wa.pixel_id, 'the same pixel');
    assert.deepEqual(wb.position, { x: 3, y: 4 }, 'the same position');
    b.ws.close(1000);

    const c = new Phone(scenes.plain.scene_id);
    const wc = await c.hello({ token: 'dead-' + 'x'.repeat(40) });
    assert.equal(typeof wc.token, 'string', 'a dead token: a new guest gets a token');
    assert.notEqual(wc.token, wa.token);
    assert.notEqual(wc.user_id, wa.user_id, 'a new user');
    assert.notEqual(wc.pixel_id, wa.pixel_id, 'a new pixel');
    assert.equal(wc.position, null);
    c.ws.close(1000);

    const d = new Phone(scenes.plain.scene_id);
    const wd = await d.hello();
    assert.equal(typeof wd.token, 'string', 'no token: a new guest');
    assert.notEqual(wd.pixel_id, wa.pixel_id);
    assert.notEqual(wd.pixel_id, wc.pixel_id);
    d.ws.close(1000);
  });

  test('a hello 9 s after opening is still within the 10 s', { timeout: 20000 }, async () => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.opened;
    await sleep(HELLO_WITHIN_MS - 1000);
    assert.ok(phone.open, `closed before 10 s: ${JSON.stringify(phone.closeInfo)}`);
    const w = await phone.hello();
    assert.equal(w.protocol, PROTOCOL);
    phone.ws.close(1000);
  });

  test('4001: no hello within 10 s of opening', { timeout: 20000 }, async (t) => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.opened;
    const info = await expectClose(phone, 4001, 'hello expected', HELLO_WITHIN_MS + 3000);
    const after = info.at - phone.openedAt;
    t.diagnostic(`closed ${after.toFixed(0)} ms after opening`);
    assert.ok(after >= HELLO_WITHIN_MS - 100, `closed after ${after.toFixed(0)} ms, before the 10 s`);
    assert.ok(after <= HELLO_WITHIN_MS + 1500, `closed only after ${after.toFixed(0)} ms`);
  });

  test('4001: the first message must be hello', async () => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.opened;
    phone.send({ type: 'sync', t0: phoneNow() });
    await expectClose(phone, 4001, 'the first message must be hello', 5000);
  });

  test('4002: an unsupported protocol version', async () => {
    for (const version of [2, 99]) {
      const phone = new Phone(scenes.plain.scene_id);
      await phone.opened;
      phone.send({ type: 'hello', protocol: version });
      await expectClose(phone, 4002, `unsupported protocol version ${version}; this server speaks ${PROTOCOL}`, 5000);
    }
  });

  test('4000: a second hello', async () => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    phone.send({ type: 'hello', protocol: PROTOCOL });
    await expectClose(phone, 4000, 'hello was already said', 5000);
  });

  test('4000: malformed JSON and JSON that is not a message of the protocol', async (t) => {
    const cases = [
      ['malformed JSON', '{"type": "sync", "t0": '],
      ['not JSON at all', 'hello there'],
      ['a JSON array', '[{"type":"sync","t0":1}]'],
      ['a JSON string', '"sync"'],
      ['no type', '{"t0": 1}'],
      ['a field of the wrong type', '{"type":"sync","t0":"soon"}'],
      ['a required field missing', '{"type":"sync"}'],
      ['seat fields not strings', '{"type":"seat","section":1,"row":2,"seat":3}'],
    ];
    const failures = [];
    for (const [what, text] of cases) {
      const phone = new Phone(scenes.plain.scene_id);
      await phone.hello();
      phone.send(text);
      try {
        await expectClose(phone, 4000, 'not a message of this protocol', 5000, ['soon', 'hello there']);
      } catch (e) {
        failures.push(`${what}: ${e.message}`);
      }
      phone.end();
    }
    t.diagnostic(failures.join(' | ') || 'every case closed with 4000');
    assert.deepEqual(failures, []);
  });

  test('4000: an unknown message type', async () => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    phone.send({ type: 'zebra_crossing_x9' });
    await expectClose(phone, 4000, 'not a message of this protocol', 5000, ['zebra']);
  });

  test('4000: unknown fields (after hello, and in hello itself)', async (t) => {
    const failures = [];
    const a = new Phone(scenes.plain.scene_id);
    await a.hello();
    a.send({ type: 'sync', t0: phoneNow(), zebra_field_q7: 1 });
    try {
      await expectClose(a, 4000, 'not a message of this protocol', 5000, ['zebra']);
    } catch (e) {
      failures.push('sync with an unknown field: ' + e.message);
    }
    const b = new Phone(scenes.plain.scene_id);
    await b.opened;
    b.send({ type: 'hello', protocol: PROTOCOL, zebra_field_q7: 1 });
    try {
      await expectClose(b, 4000, 'not a message of this protocol', 5000, ['zebra']);
    } catch (e) {
      failures.push('hello with an unknown field: ' + e.message);
    }
    t.diagnostic(failures.join(' | ') || 'both closed with 4000');
    assert.deepEqual(failures, []);
  });

  test('4000: binary messages', async () => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    phone.ws.send(Buffer.from([1, 2, 3, 4]), { binary: true });
    await expectClose(phone, 4000, 'binary messages are not accepted', 5000);
  });

  test('1009: a message over 4096 bytes; one of exactly 4096 is read', async () => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    const pad = (n) => {
      const head = `{"type":"sync","t0":12345}`;
      return head.slice(0, -1) + ' '.repeat(n - head.length) + '}';
    };
    const exact = pad(MAX_MESSAGE_BYTES);
    assert.equal(Buffer.byteLength(exact), MAX_MESSAGE_BYTES);
    phone.send(exact);
    const reply = await phone.nextOfType('sync');
    assert.equal(reply.t0, 12345, 'a message of exactly 4096 bytes is answered');
    const over = pad(MAX_MESSAGE_BYTES + 1);
    assert.equal(Buffer.byteLength(over), MAX_MESSAGE_BYTES + 1);
    phone.send(over);
    await expectClose(phone, 1009, 'message too big', 5000);
  });

  test('4029: more than 20 messages a second on average (bursts of 40)', { timeout: 30000 }, async (t) => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    // a burst: hello and 39 syncs, 40 messages, is allowed
    for (let i = 0; i < BURST - 1; i++) phone.send({ type: 'sync', t0: i });
    for (let i = 0; i < BURST - 1; i++) await phone.next((m) => m.type === 'sync' && m.t0 === i, 5000, `the reply to sync ${i} of the burst`);
    assert.ok(phone.open, 'a burst of 40 is allowed');
    // the bucket refills; then a steady 15 a second for 3 s is allowed
    await sleep((BURST / RATE_PER_S) * 1000 + 200);
    for (let i = 0; i < 45; i++) {
      phone.send({ type: 'sync', t0: 1000 + i });
      await sleep(1000 / 15);
    }
    await phone.next((m) => m.type === 'sync' && m.t0 === 1044, 5000, 'the last steady reply');
    assert.ok(phone.open, '15 messages a second are allowed');
    // 80 at once is past the burst: on this phone and on three fresh ones (the close frame
    // must reach a phone that is still sending, every time)
    await sleep((BURST / RATE_PER_S) * 1000 + 200);
    const others = [0, 1, 2].map(() => new Phone(scenes.plain.scene_id));
    await Promise.all(others.map((p) => p.hello()));
    await sleep((BURST / RATE_PER_S) * 1000 + 200);
    const seen = [];
    const failures = [];
    await Promise.all([phone, ...others].map(async (p, k) => {
      for (let i = 0; i < 80; i++) p.send({ type: 'sync', t0: 2000 + i });
      try {
        await expectClose(p, 4029, 'too many messages', 5000);
      } catch (e) {
        failures.push(`phone ${k}: ${e.message}`);
      }
      const answered = p.messages.filter((m) => m.msg.type === 'sync' && m.msg.t0 >= 2000).length;
      seen.push(`phone ${k}: ${answered} answered, closed ${p.closeInfo?.code} "${p.closeInfo?.reason ?? ''}"`);
      if (answered < BURST - 2 || answered > BURST + 2) failures.push(`phone ${k}: ${answered} of 80 sent at once were answered, not about 40`);
    }));
    t.diagnostic(`80 syncs at once: ${seen.join('; ')}`);
    assert.deepEqual(failures, []);
  });

  test('the close frame reaches a phone that is still sending (1009, 4000)', async (t) => {
    const cases = [
      [1009, 'message too big', '{"type":"sync","t0":1' + ' '.repeat(MAX_MESSAGE_BYTES + 100) + '}'],
      [4000, 'not a message of this protocol', '{"type":"zebra_crossing_x9"}'],
    ];
    const seen = [];
    const failures = [];
    await Promise.all(cases.flatMap(([code, sentence, bad]) => [0, 1, 2, 3].map(async (k) => {
      const phone = new Phone(scenes.plain.scene_id);
      await phone.hello();
      // the bad message, then ten good ones already on their way (as a busy phone's would be)
      phone.send(bad);
      for (let i = 0; i < 10; i++) phone.send({ type: 'sync', t0: i });
      try {
        await expectClose(phone, code, sentence, 5000);
      } catch (e) {
        failures.push(`${code} #${k}: ${e.message}`);
      }
      seen.push(`${code} #${k} → ${phone.closeInfo?.code}`);
    })));
    t.diagnostic(seen.sort().join('; '));
    assert.deepEqual(failures, []);
  });

  test('a client that closes first is answered with a close frame (before and after hello)', async (t) => {
    const results = [];
    const failures = [];
    for (const [helloFirst, args] of [[true, [1000, 'client-reason-q7']], [false, [1000, 'client-reason-q7']], [true, [4321, 'client-reason-q7']], [true, []]]) {
      const phone = new Phone(scenes.plain.scene_id);
      if (helloFirst) await phone.hello();
      else await phone.opened;
      phone.ws.close(...args);
      const info = await phone.closeWithin(5000);
      const what = `${helloFirst ? 'after' : 'before'} hello, the client's close ${JSON.stringify(args)}`;
      results.push(`${what} → ${info ? `${info.code} "${info.reason}"` : 'nothing within 5 s'}`);
      if (!info) { failures.push(`${what}: no close within 5 s`); continue; }
      // the document: the server answers a phone's close with the phone's own frame (RFC 6455)
      if (info.code === 1006) failures.push(`${what}: no close frame from the server (1006)`);
      else if (info.code !== (args[0] ?? 1005)) failures.push(`${what}: the server answered ${info.code}, not the phone's own code`);
    }
    t.diagnostic(results.join('; '));
    assert.deepEqual(failures, []);
  });

  test('4004: no such scene is open (an unknown scene, a draft)', async (t) => {
    const failures = [];
    for (const [what, id] of [['an unknown scene', '00000000-0000-4000-8000-000000000000'], ['a draft', scenes.draft.scene_id]]) {
      const phone = new Phone(id);
      try {
        await phone.opened;
        phone.send({ type: 'hello', protocol: PROTOCOL });
        await expectClose(phone, 4004, 'no such scene is open', 5000);
      } catch (e) {
        failures.push(`${what}: ${e.message}`);
      }
    }
    // a scene id that is not one at all (not part of the assertion: the document names none)
    const bad = new Phone('not-a-scene');
    await bad.closeWithin(5000);
    t.diagnostic(`/ws/scenes/not-a-scene: ${JSON.stringify(bad.closeInfo)} ${bad.errors.join('; ')}`);
    assert.deepEqual(failures, []);
  });

  test('4010: joining an ended scene, and a connected phone when its scene ends', async () => {
    const late = new Phone(scenes.ended.scene_id);
    await late.opened;
    late.send({ type: 'hello', protocol: PROTOCOL });
    await expectClose(late, 4010, 'the scene has ended', 5000);

    const scene = await newScene({ name: 'Protocol ends' });
    const phone = new Phone(scene.scene_id);
    await phone.hello();
    await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'ended' }, token);
    await expectClose(phone, 4010, 'the scene has ended', 5000);
  });

  test('4009: the same phone connecting again elsewhere', async () => {
    const first = new Phone(scenes.plain.scene_id);
    const w = await first.hello();
    const second = new Phone(scenes.plain.scene_id);
    const w2 = await second.hello({ token: w.token });
    assert.equal(w2.pixel_id, w.pixel_id);
    await expectClose(first, 4009, 'this phone connected again elsewhere', 5000);
    await sleep(300);
    assert.ok(second.open, 'the other tab wins');
    second.ws.close(1000);
  });

  test('4003: removed from the scene', async (t) => {
    const scene = await newScene({ name: 'Protocol kick' });
    const phone = new Phone(scene.scene_id);
    const w = await phone.hello();
    await server.api('POST', `/api/scenes/${scene.scene_id}/pixels/${w.pixel_id}/kick`, {}, token);
    await expectClose(phone, 4003, 'removed from the scene', 5000);
    // (the document does not say what a removed phone that comes back gets)
    const again = new Phone(scene.scene_id);
    await again.opened;
    again.send({ type: 'hello', protocol: PROTOCOL, token: w.token });
    await again.closeWithin(3000);
    t.diagnostic(`a removed phone saying hello again: ${JSON.stringify(again.closeInfo ?? again.messages.map((m) => m.msg.type))}`);
    again.end();
  });

  test('1001: the server shutting down', { timeout: 60000 }, async () => {
    const other = await Server.start({ bin: BIN });
    try {
      const tk = await other.login();
      const scene = await other.api('POST', '/api/scenes', { name: 'Shutdown', width: 10, height: 10 }, tk);
      await other.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, tk);
      const phone = new Phone(scene.scene_id, { base: other.base.replace(/^http/, 'ws') });
      await phone.hello();
      const stopping = other.stop();
      await expectClose(phone, 1001, 'server shutting down', 15000);
      await stopping;
    } finally {
      await other.stop();
    }
  });

  // --- clock sync ---

  test('clock sync: t0 echoed exactly, t1 ≤ t2, server time in µs', async (t) => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    const samples = [];
    const values = [phoneNow(), phoneNow(), Date.now(), 1234.5678, performance.now(), phoneNow() + 0.1];
    for (const v of values) {
      const wallBefore = Date.now();
      const s = await phone.sync(v);
      const wallAfter = Date.now();
      assert.ok(Object.is(s.reply.t0, v), `t0 ${v} came back as ${s.reply.t0}`);
      assert.ok(isNum(s.reply.t1) && isNum(s.reply.t2), 't1 and t2 are numbers');
      assert.ok(s.reply.t1 <= s.reply.t2, `t1 ${s.reply.t1} > t2 ${s.reply.t2}`);
      // µs of server time (this machine's clock): between sending and receiving
      assert.ok(s.reply.t1 >= (wallBefore - 20) * 1000 && s.reply.t2 <= (wallAfter + 20) * 1000,
        `t1..t2 ${s.reply.t1}..${s.reply.t2} µs outside ${wallBefore * 1000}..${wallAfter * 1000}`);
      samples.push(s);
      await sleep(50);
    }
    const keys = Object.keys(samples[0].reply).sort();
    assert.deepEqual(keys, ['t0', 't1', 't2', 'type'], 'the sync reply has t0, t1, t2');
    const { offset, delay } = await phone.offset(6);
    t.diagnostic(`offset (server − phone clock) ${offset.toFixed(3)} ms over the narrowest round trip ${delay.toFixed(3)} ms; t2 − t1 ${samples.map((s) => (s.reply.t2 - s.reply.t1)).join(', ')} µs`);
    assert.ok(delay >= 0, 'round trip ≥ 0');
    // the phone's clock here is this machine's: the offset is within the round trip
    assert.ok(Math.abs(offset) <= delay / 2 + 2, `offset ${offset} ms beyond its bound ${delay / 2} ms`);
    phone.ws.close(1000);
  });

  test('clock sync: the phone\'s clock is whatever it likes (zero, negative, far off)', async () => {
    const failures = [];
    for (const v of [0, -1234.5, 4e15 + 0.5, 1e-3]) {
      const phone = new Phone(scenes.plain.scene_id);
      await phone.hello();
      try {
        const s = await phone.sync(v);
        if (!Object.is(s.reply.t0, v)) failures.push(`t0 ${v} came back as ${s.reply.t0}`);
        else if (!(s.reply.t1 <= s.reply.t2)) failures.push(`t0 ${v}: t1 > t2`);
      } catch (e) {
        failures.push(`t0 ${v}: ${e.message}`);
      }
      phone.end();
    }
    assert.deepEqual(failures, []);
  });

  test('sync_report is taken and counted as synced', async (t) => {
    const scene = await newScene({ name: 'Protocol report' });
    const phone = new Phone(scene.scene_id);
    await phone.hello();
    await phone.offset(4);
    phone.send({ type: 'sync_report', offset_ms: 0.25, error_ms: 0.5 });
    await sleep(300);
    assert.ok(phone.open, 'sync_report does not end the session');
    const deadline = Date.now() + 5000;
    let presence;
    for (;;) {
      presence = await server.api('GET', `/api/scenes/${scene.scene_id}/presence`, undefined, token);
      if (presence.synced >= 1 || Date.now() > deadline) break;
      await sleep(200);
    }
    t.diagnostic(`presence: ${JSON.stringify(presence)}`);
    assert.equal(presence.synced, 1, 'the operator sees the phone as synced');
    assert.equal(presence.sync_error_histogram.reduce((n, b) => n + b.count, 0), 1, 'and in the histogram');
    phone.ws.close(1000);
  });

  // --- heartbeats ---

  test('heartbeat: the server pings every 15 s (WebSocket ping frames); a phone that answers pong stays', { timeout: 60000 }, async (t) => {
    const phone = new Phone(scenes.plain.scene_id);
    await phone.hello();
    await phone.waitFor(() => phone.pings.length >= 3, 3 * PING_EVERY_MS + 5000, 'three pings');
    const gaps = phone.pings.slice(1).map((at, i) => at - phone.pings[i]);
    const first = phone.pings[0] - phone.openedAt;
    t.diagnostic(`first ping ${first.toFixed(0)} ms after opening; then every ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
    const jsonPings = phone.messages.filter((m) => m.msg.type === 'ping' || m.msg.type === 'pong');
    assert.equal(jsonPings.length, 0, 'pings are control frames, not JSON messages');
    assert.ok(first <= PING_EVERY_MS + 1500, `the first ping came ${first.toFixed(0)} ms after opening`);
    for (const g of gaps) assert.ok(Math.abs(g - PING_EVERY_MS) <= 1500, `pings ${g.toFixed(0)} ms apart, not 15 s`);
    assert.ok(phone.open, 'a phone that answers pong stays connected');
    phone.ws.close(1000);
  });

  test('4011: a phone that does not answer pings', { timeout: 90000 }, async (t) => {
    const phone = new Phone(scenes.plain.scene_id, { autoPong: false });
    await phone.hello();
    const info = await expectClose(phone, 4011, 'no answer to pings', 75000);
    t.diagnostic(`closed ${(info.at - phone.openedAt).toFixed(0)} ms after opening, after ${phone.pings.length} pings`);
  });

  // --- locating ---

  test('seat, gps and show_qr on a scene that allows them', async (t) => {
    const id = scenes.locate.scene_id;
    const seat = new Phone(id);
    const ws = await seat.hello();
    assert.deepEqual([...ws.scene.location_methods].sort(), ['gps', 'observer', 'qr', 'seat']);
    seat.send({ type: 'seat', section: 'Z', row: '9', seat: '99' });
    const refused = await seat.nextOfType('locate_refused');
    assert.equal(refused.method, 'seat');
    assert.equal(typeof refused.reason, 'string');
    assert.ok(refused.reason.length > 0, 'a reason to tell the user');
    seat.send({ type: 'seat', section: 'A', row: '1', seat: '2' });
    const located = await seat.nextOfType('located');
    assert.deepEqual([located.x, located.y], [15, 5], 'placed at the seat of the map');

    const gps = new Phone(id);
    await gps.hello();
    const refusals = [];
    for (const [what, fix] of [['inaccurate', { ...GPS_CENTRE, accuracy_m: 500 }], ['outside the scene', { lat: 48.01, lon: 11.02, accuracy_m: 5 }]]) {
      gps.send({ type: 'gps', ...fix });
      const r = await gps.nextOfType('locate_refused');
      assert.equal(r.method, 'gps', what);
      assert.ok(typeof r.reason === 'string' && r.reason.length > 0, `${what}: a reason`);
      refusals.push(`${what}: "${r.reason}"`);
    }
    gps.send({ type: 'gps', ...GPS_CENTRE, accuracy_m: 5 });
    const there = await gps.nextOfType('located');
    assert.ok(Math.abs(there.x - 50) <= 2 && Math.abs(there.y - 50) <= 2, `GPS placed at (${there.x}, ${there.y}), not near (50, 50)`);

    const qr = new Phone(id);
    await qr.hello();
    qr.send({ type: 'show_qr' });
    const code = await qr.nextOfType('qr');
    const nowUs = Date.now() * 1000;
    assert.equal(code.side, 25);
    assert.match(code.modules, /^[01]{625}$/, 'side² modules of 0 and 1');
    assert.ok(code.expires_us > nowUs, 'expires in the future (server µs)');
    const at = (x, y) => code.modules[y * 25 + x];
    const finder = ['1111111', '1000001', '1011101', '1011101', '1011101', '1000001', '1111111'];
    for (const [ox, oy] of [[0, 0], [18, 0], [0, 18]]) {
      const rows = finder.map((_, dy) => Array.from({ length: 7 }, (_, dx) => at(ox + dx, oy + dy)).join(''));
      assert.deepEqual(rows, finder, `a finder pattern at (${ox}, ${oy}), row by row`);
    }
    const align = ['11111', '10001', '10101', '10001', '11111'];
    assert.deepEqual(align.map((_, dy) => Array.from({ length: 5 }, (_, dx) => at(16 + dx, 16 + dy)).join('')), align, 'version 2\'s alignment pattern');
    assert.equal(Array.from({ length: 9 }, (_, i) => at(8 + i, 6)).join(''), '101010101', 'the timing pattern');
    const format = qrFormat(code.modules, 25);
    assert.ok(format, 'both copies of the format information agree and are a valid BCH code word');
    assert.equal(format.ecl, 'M', 'error correction M');
    t.diagnostic(`refusals: ${refusals.join('; ')}; seat refusal: "${refused.reason}"; qr expires in ${((code.expires_us - nowUs) / 1e6).toFixed(0)} s`);
    for (const p of [seat, gps, qr]) assert.ok(p.open);
  });

  test('seat, gps and show_qr on a scene that allows none of them', async (t) => {
    const phone = new Phone(scenes.nolocate.scene_id);
    const w = await phone.hello();
    assert.deepEqual(w.scene.location_methods, ['observer']);
    phone.send({ type: 'seat', section: 'A', row: '1', seat: '2' });
    const seat = await phone.nextOfType('locate_refused');
    assert.equal(seat.method, 'seat');
    assert.ok(seat.reason.length > 0);
    phone.send({ type: 'gps', ...GPS_CENTRE, accuracy_m: 5 });
    const gps = await phone.nextOfType('locate_refused');
    assert.equal(gps.method, 'gps');
    assert.ok(gps.reason.length > 0);
    phone.send({ type: 'show_qr' });
    const qr = await phone.nextOfType('locate_refused');
    assert.equal(qr.method, 'qr');
    t.diagnostic(`seat: "${seat.reason}"; gps: "${gps.reason}"; show_qr: "${qr.reason}"`);
    assert.ok(phone.open, 'show_qr is a message of the protocol: the session goes on');
    assert.ok(!phone.messages.some((m) => m.msg.type === 'located'), 'never located');
    phone.ws.close(1000);
  });

  test('gps on a scene that is not geo-referenced is refused', async (t) => {
    const phone = new Phone(scenes.nogeo.scene_id);
    await phone.hello();
    phone.send({ type: 'gps', ...GPS_CENTRE, accuracy_m: 5 });
    const r = await phone.nextOfType('locate_refused');
    assert.equal(r.method, 'gps');
    assert.ok(r.reason.length > 0);
    t.diagnostic(`reason: "${r.reason}"`);
    phone.ws.close(1000);
  });

  // --- what the operator's and observer's actions bring ---

  test('scene: the operator changes the scene', async (t) => {
    const scene = await newScene({ name: 'Protocol changes', location_methods: ['observer'] });
    const phone = new Phone(scene.scene_id);
    const w = await phone.hello();
    await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { name: 'Protocol changed', idle_color: '#aabbcc' }, token);
    const m1 = await phone.next((m) => m.type === 'scene' && m.scene.name === 'Protocol changed', 5000, 'the renamed scene');
    assert.ok(sceneShape(m1.msg.scene), `scene as in welcome: ${JSON.stringify(m1.msg.scene)}`);
    assert.equal(m1.msg.scene.idle_color.toLowerCase(), '#aabbcc');
    assert.equal(m1.msg.scene.scene_id, scene.scene_id);
    assert.ok(Date.parse(m1.msg.scene.updated_at) >= Date.parse(w.scene.updated_at), 'updated_at does not go back');
    await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { location_methods: ['observer', 'seat'] }, token);
    const m2 = await phone.next((m) => m.type === 'scene' && m.scene.location_methods.includes('seat'), 5000, 'the new locating methods');
    assert.ok(Date.parse(m2.msg.scene.updated_at) >= Date.parse(m1.msg.scene.updated_at), 'updated_at does not go back');
    t.diagnostic(`scene: ${JSON.stringify(m2.msg.scene)}`);
    phone.ws.close(1000);
  });

  test('identify: flash until a server instant', async () => {
    const scene = await newScene({ name: 'Protocol identify' });
    const phone = new Phone(scene.scene_id);
    const w = await phone.hello();
    await server.api('POST', `/api/scenes/${scene.scene_id}/pixels/${w.pixel_id}/identify`, undefined, token);
    const m = await phone.nextOfType('identify');
    assert.ok(isNum(m.until_us));
    const nowUs = Date.now() * 1000;
    assert.ok(m.until_us > nowUs && m.until_us < nowUs + 120e6, `until_us ${m.until_us} is not a server instant soon after now (${nowUs})`);
    phone.ws.close(1000);
  });

  test('flash: each phone its own code of 63 slots', async () => {
    const scene = await newScene({ name: 'Protocol flash', location_methods: ['flash', 'observer'] });
    const a = new Phone(scene.scene_id);
    const b = new Phone(scene.scene_id);
    await Promise.all([a.hello(), b.hello()]);
    const session = await server.api('POST', `/api/scenes/${scene.scene_id}/flash-sessions`, { start_in_ms: 3000 }, token);
    const [fa, fb] = await Promise.all([a.nextOfType('flash'), b.nextOfType('flash')]);
    for (const f of [fa, fb]) {
      assert.ok(SHAPES.flash(f), `flash as documented: ${JSON.stringify(f)}`);
      assert.equal(f.session_id, session.session_id);
      assert.equal(f.starts_at_us, session.starts_at_us);
      assert.equal(f.symbol_us, session.symbol_us);
      assert.ok(f.starts_at_us > Date.now() * 1000, 'a session that starts later');
    }
    assert.notEqual(fa.slots, fb.slots, 'the code is this phone\'s alone');
    a.ws.close(1000);
    b.ws.close(1000);
  });

  // --- colour chunks ---

  test('colour chunks: format, coverage, versions, catch-up and how far ahead they arrive', { timeout: 90000 }, async (t) => {
    const RED = [220, 30, 40];
    const BLUE = [30, 60, 230];
    const GREEN = [40, 200, 60];
    const WHITE = [250, 250, 250];
    const IDLE = [0x10, 0x20, 0x30];
    const FRAMES = [[RED, 1500], [BLUE, 100], [GREEN, 100], [WHITE, 300]];
    const TOTAL = FRAMES.reduce((n, [, ms]) => n + ms, 0);
    const scene = await newScene({ name: 'Protocol show', idle_color: '#102030', location_methods: ['observer'] });
    const id = scene.scene_id;
    for (const [rgb, ms] of FRAMES) await uploadFrame(id, rgb, ms);
    await server.api('PUT', `/api/scenes/${id}/show`, { loop: true }, token);

    const unlocated = new Phone(id);
    const early = new Phone(id); // located before the show plays
    const late = new Phone(id); // located while it plays
    const [, we, wl] = await Promise.all([unlocated.hello(), early.hello(), late.hello()]);
    const { tick_ms: tick, lookahead_ms: lookahead } = we;
    await Promise.all([early.offset(8), late.offset(8)]);
    await place(id, we.pixel_id, 5, 5);
    await early.nextOfType('located');
    await sleep(800);
    const chunksBeforePlay = early.chunks.length;

    const playAt = phoneNow();
    await server.api('POST', `/api/scenes/${id}/playback`, { command: 'play', start_in_ms: 1000 }, token);
    const show = await server.api('GET', `/api/scenes/${id}/show`, undefined, token);
    const { anchor_ms: anchor, base_ms: base } = show.timeline.current;
    const playVersion = show.timeline.version;
    await sleep(Math.max(0, anchor + 700 - Date.now()));
    const placeAt = phoneNow();
    await place(id, wl.pixel_id, 5, 5);
    const lateLocated = await late.next((m) => m.type === 'located', 5000, 'located');
    await sleep(Math.max(0, anchor + 4500 - Date.now()));
    await Promise.all([early.offset(4), late.offset(4)]);

    // a phone that joins (again, with its token) while the show plays
    late.ws.close(1000);
    await late.closeWithin(3000);
    const again = new Phone(id);
    await again.opened;
    const joinAt = phoneNow();
    const wa = await again.hello({ token: wl.token });
    assert.deepEqual(wa.position, { x: 5, y: 5 });
    again.clock = late.clock;
    await sleep(1500);
    const playEnd = phoneNow();

    // every operator command, a new version, a catch-up at once
    const commands = [];
    for (const body of [{ command: 'pause' }, { command: 'resume', start_in_ms: 1000 }, { command: 'seek', position_ms: 500 }, { command: 'stop' }]) {
      const at = phoneNow();
      const seenVersion = Math.max(...early.chunks.map((c) => decodeChunk(c.bytes).version));
      await server.api('POST', `/api/scenes/${id}/playback`, body, token);
      const first = await early.waitFor(() => early.chunks.find((c) => c.at >= at && decodeChunk(c.bytes).version > seenVersion), 3000, `a chunk of a new version after ${body.command}`)
        .catch(() => null);
      commands.push({ command: body.command, at, first, seenVersion, serverNow: () => first && first.at + early.clock.offset });
      await sleep(1200);
    }
    const afterStop = phoneNow();
    await sleep(2000);

    // --- the format ---
    const phones = [['early', early], ['late', late], ['again', again]];
    const decoded = new Map();
    const problems = [];
    for (const [name, p] of phones) {
      decoded.set(p, p.chunks.map((c) => ({ ...decodeChunk(c.bytes), at: c.at })));
      for (const [i, c] of decoded.get(p).entries()) {
        const where = `${name} chunk ${i}`;
        if (c.problems.length) problems.push(`${where}: ${c.problems.join(', ')}`);
        if (c.kind !== 1) problems.push(`${where}: kind ${c.kind}`);
        if (!c.entries.length) problems.push(`${where}: no entries (${c.bytes.length} bytes, length ${c.length})`);
        else if (c.entries[0].dt !== 0) problems.push(`${where}: first dt ${c.entries[0].dt}`);
        for (const [k, e] of c.entries.entries()) {
          const minimal = e.dt < 128 ? 1 : e.dt < 16384 ? 2 : 3;
          if (e.varintBytes !== minimal) problems.push(`${where}: dt ${e.dt} in ${e.varintBytes} bytes`);
          if (e.at >= c.start + c.length && c.length > 0) problems.push(`${where}: an entry at ${e.at} past the window's end ${c.start + c.length}`);
          if (k > 0 && e.rgb.join() === c.entries[k - 1].rgb.join()) problems.push(`${where}: entry ${k} repeats the colour before it (an entry is a colour change)`);
        }
      }
    }
    assert.ok(early.chunks.length > 0 && again.chunks.length > 0, 'chunks arrived');
    t.diagnostic(`chunks: early ${early.chunks.length}, late ${late.chunks.length}, again ${again.chunks.length}, unlocated ${unlocated.chunks.length}; before play (located, nothing playing): ${chunksBeforePlay}`);
    t.diagnostic(`first chunks of early: ${decoded.get(early).slice(0, 4).map((c) => `v${c.version} start ${c.start - anchor} len ${c.length} ${c.entries.map((e) => `+${e.dt}:${e.rgb.join(',')}`).join(' ')}`).join(' | ')}`);

    // --- coverage: the colour of every instant is the show's frame at that instant ---
    const frameAt = (tt) => {
      let p = (((tt - anchor + base) % TOTAL) + TOTAL) % TOTAL;
      for (const [rgb, ms] of FRAMES) {
        if (p < ms) return { rgb, edge: Math.min(p, ms - p) };
        p -= ms;
      }
      return null;
    };
    const wrong = [];
    for (const [name, p] of phones) {
      for (const c of decoded.get(p)) {
        if (c.version !== playVersion) continue;
        for (let tt = c.start; tt < c.start + c.length; tt += 5) {
          const got = colourAt(c, tt);
          if (tt < anchor) {
            if (got && got.join() !== IDLE.join()) wrong.push(`${name}: ${tt - anchor} ms before the start shows ${got}`);
            continue;
          }
          const want = frameAt(tt);
          if (want.edge < 2) continue;
          if (!got || got.join() !== want.rgb.join()) wrong.push(`${name}: at +${tt - anchor} ms ${got} instead of ${want.rgb}`);
        }
      }
    }
    problems.push(...wrong.slice(0, 10));
    if (wrong.length > 10) problems.push(`... ${wrong.length - 10} more wrong instants`);

    // --- timing: contiguous windows of tick_ms, catch-ups at once, the lead ---
    const leads = { regular: [], catchup: [] };
    const catchupDelays = [];
    for (const [name, p] of phones) {
      const list = decoded.get(p).filter((c) => c.at <= playEnd && c.version === playVersion);
      let prev = null;
      for (const [i, c] of list.entries()) {
        const serverNow = c.at + p.clock.offset;
        const lead = c.start - serverNow;
        const isCatchup = i === 0;
        (isCatchup ? leads.catchup : leads.regular).push(lead);
        if (!isCatchup) {
          if (c.start !== prev.start + prev.length) problems.push(`${name}: window ${i} starts at ${c.start}, not where the one before ends (${prev.start + prev.length})`);
          // normally tick_ms; around a catch-up in the phone's cell one or two differ
          if (!(c.length > 0 && c.length <= 2 * tick)) problems.push(`${name}: regular window ${i} is ${c.length} ms, not within (0, 2 × tick_ms ${tick}]`);
        }
        prev = c;
      }
    }
    const catchup = (p, from, what) => {
      const c = decoded.get(p).find((x) => x.at >= from);
      if (!c) return problems.push(`${what}: no chunk at all`);
      const delay = c.at - from;
      catchupDelays.push(`${what} ${delay.toFixed(0)} ms`);
      if (delay > AT_ONCE_MS) problems.push(`${what}: the catch-up came ${delay.toFixed(0)} ms later, not at once`);
      const serverNow = c.at + p.clock.offset;
      if (Math.abs(c.start - serverNow) > 100 && c.start > anchor) problems.push(`${what}: the catch-up starts ${(c.start - serverNow).toFixed(0)} ms from now, not now`);
      const nextOne = decoded.get(p).find((x) => x.at > c.at && x.version === c.version);
      if (nextOne && c.start + c.length !== nextOne.start) problems.push(`${what}: the catch-up ends at ${c.start + c.length}, the regular windows continue at ${nextOne.start}`);
    };
    catchup(late, lateLocated.at - 1000 > placeAt ? placeAt : lateLocated.at, 'located while playing');
    catchup(again, joinAt, 'joined while playing');
    catchup(early, playAt, 'a new version (play)');
    for (const c of commands) {
      if (!c.first) problems.push(`${c.command}: no chunk of a newer version than ${c.seenVersion} within 3 s`);
      else {
        const delay = c.first.at - c.at;
        catchupDelays.push(`${c.command} ${delay.toFixed(0)} ms (v${decodeChunk(c.first.bytes).version})`);
        if (delay > AT_ONCE_MS + 150) problems.push(`${c.command}: the new version came ${delay.toFixed(0)} ms after the command was sent`);
      }
    }
    const versions = early.chunks.map((c) => decodeChunk(c.bytes).version);
    const dropsBack = versions.some((v, i) => i > 0 && v < versions[i - 1]);
    const stopped = decoded.get(early).filter((c) => c.at > afterStop);
    const stoppedColours = [...new Set(stopped.flatMap((c) => c.entries.map((e) => e.rgb.join())))];

    t.diagnostic(`lead of each chunk's first instant over the server clock (by sync): regular ${fmt(stats(leads.regular))}; catch-up ${fmt(stats(leads.catchup))}`);
    t.diagnostic(`catch-up delays: ${catchupDelays.join('; ')}`);
    t.diagnostic(`early's windows of the play version (start − anchor / length / lead, ms): ${decoded.get(early).filter((c) => c.version === playVersion)
      .map((c) => `${c.start - anchor}/${c.length}/${(c.start - c.at - early.clock.offset).toFixed(0)}`).join(' ')}`);
    t.diagnostic(`versions seen by one phone in order: ${[...new Set(versions)].join(' → ')}${dropsBack ? ' (an older version after a newer one)' : ''}; play version ${playVersion} (the API's)`);
    t.diagnostic(`the first chunk after each command (version, start − now, length, entries): ${commands.filter((c) => c.first).map((c) => {
      const d = decodeChunk(c.first.bytes);
      return `${c.command}: v${d.version} ${(d.start - c.serverNow()).toFixed(0)} ${d.length} ${d.entries.map((e) => `+${e.dt}:${e.rgb.join(',')}`).join(' ')}`;
    }).join(' | ')}`);
    t.diagnostic(`after stop: ${stopped.length} chunks, colours ${stoppedColours.join(' / ') || 'none'}`);

    // an unlocated phone: no chunk covers it
    if (unlocated.chunks.length) problems.push(`the unlocated phone got ${unlocated.chunks.length} chunks`);
    // phones in one cell get the same bytes
    const byWindow = new Map(decoded.get(early).map((c) => [`${c.version}/${c.start}/${c.length}`, c.bytes]));
    let compared = 0;
    for (const c of decoded.get(again)) {
      const twin = byWindow.get(`${c.version}/${c.start}/${c.length}`);
      if (!twin) continue;
      compared++;
      if (!twin.equals(c.bytes)) problems.push(`two phones in one cell got different bytes for window ${c.start}`);
    }
    if (!compared) problems.push('no window that two phones of one cell both got');
    // the document's lead: each regular chunk at least lookahead_ms − tick_ms before its first
    // instant (and about lookahead_ms in the steady state); the sync error is a few ms here
    const floor = lookahead - tick - 20;
    const short = leads.regular.filter((l) => l < floor);
    if (short.length) problems.push(`${short.length} of ${leads.regular.length} regular chunks arrived less than lookahead_ms − tick_ms (${floor + 20} ms) before their first instant (least ${Math.min(...short).toFixed(0)} ms)`);
    const median = [...leads.regular].sort((a, b) => a - b)[Math.floor(leads.regular.length / 2)];
    if (!(Math.abs(median - lookahead) < 50)) problems.push(`the median lead ${median?.toFixed(0)} ms is not about lookahead_ms (${lookahead})`);

    for (const p of [unlocated, early, again]) p.ws.close(1000);
    assert.deepEqual(problems, []);
  });
});

test('every message the server sent is of a documented type and shape', () => {
  const bad = [];
  const types = new Map();
  for (const p of allPhones) {
    for (const { msg, raw } of p.messages) {
      types.set(msg.type, (types.get(msg.type) ?? 0) + 1);
      const shape = SHAPES[msg.type];
      if (!shape) bad.push(`undocumented type: ${raw.slice(0, 200)}`);
      else if (!shape(msg)) bad.push(`not as documented: ${raw.slice(0, 300)}`);
    }
    for (const raw of p.notParsed) bad.push(`not JSON: ${raw.slice(0, 200)}`);
  }
  assert.ok(types.size > 0, 'messages were seen');
  assert.deepEqual([...new Set(bad)], []);
});

after(async () => {
  for (const p of allPhones) p.end();
  await server?.stop();
});

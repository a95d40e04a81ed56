// What the browser tests stand on: the real C3S server (the binary `cargo test` built), on a
// fresh PostgreSQL database and GridFS database of the throw-away stores scripts/test started,
// and Debian's Chromium driven by playwright-core.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect } from 'node:net';
import { deflateSync } from 'node:zlib';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { systemClockOffset } from './truth.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ADMIN = { login: 'admin', password: 'browser-test-admin' };

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the browser tests through scripts/test`);
  return v;
}

async function freePort() {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  return port;
}

/** A fresh database on the throw-away cluster; returns its URL. */
function freshDatabase() {
  const admin = need('C3S_TEST_DATABASE_URL');
  const name = 'browser_' + randomUUID().replace(/-/g, '');
  execFileSync(path.join(need('PG_BIN'), 'psql'), [admin, '-qc', `create database ${name}`]);
  const url = new URL(admin);
  url.pathname = '/' + name;
  return url.toString();
}

/** The server, started (and restartable) on one port, one database, one GridFS database;
 * `bin` is the binary (the debug build cargo test made, unless a bench says otherwise). */
export class Server {
  static async start({ bin = path.join(ROOT, 'target/debug/c3s'), env = {} } = {}) {
    const s = new Server();
    s.bin = bin;
    s.port = await freePort();
    s.base = `http://127.0.0.1:${s.port}`;
    s.env = {
      ...process.env,
      C3S_LISTEN: `127.0.0.1:${s.port}`,
      DATABASE_URL: freshDatabase(),
      MONGODB_URL: need('MONGODB_URL'),
      C3S_MONGODB_DATABASE: 'browser_' + randomUUID().slice(0, 8),
      C3S_WEB_ROOT: path.join(ROOT, 'web-client'),
      C3S_BOOTSTRAP_ADMIN: `${ADMIN.login}:${ADMIN.password}`,
      RUST_LOG: 'warn',
      C3S_METRICS_LISTEN: 'none',
      // every page and test client is one loopback address: no per-address or per-account
      // request limits (the API tests of those limits turn them on)
      C3S_LOGINS_PER_MIN: '0',
      C3S_GUESTS_PER_MIN: '0',
      C3S_SEARCHES_PER_MIN: '0',
      C3S_UPLOADS_PER_MIN: '0',
      ...env,
    };
    await s.run();
    return s;
  }

  async run() {
    this.proc = spawn(this.bin, [], { env: this.env, stdio: ['ignore', 'inherit', 'inherit'] });
    this.exited = once(this.proc, 'exit');
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        const res = await fetch(this.base + '/readyz');
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      if (this.proc.exitCode !== null) throw new Error('the server exited at start');
      if (Date.now() > deadline) throw new Error('the server did not become ready in 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops the server we started (by its PID) and waits for it to exit. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    await this.exited;
  }

  async restart() {
    await this.stop();
    await this.run();
  }

  async api(method, p, body, token) {
    const headers = {};
    if (token) headers.authorization = 'Bearer ' + token;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(this.base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return json;
  }

  async login() {
    const r = await this.api('POST', '/api/auth/login', ADMIN);
    return r.token;
  }
}

/** Chromium; `args` are added to its command line (a fake camera, say). */
export async function launchBrowser({ args = [] } = {}) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // every phone page keeps its refresh rate even when it is not the focused one
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows', ...args],
  });
}

/** A solid-colour PNG, `w` × `h`. */
export function png(w, h, rgb) {
  return pngOf(w, h, () => rgb);
}

/** A PNG, `w` × `h`, pixel (x, y) of colour `colourAt(x, y)` ([r, g, b]). */
export function pngOf(w, h, colourAt) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 255] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'ascii');
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.concat(Array.from({ length: h }, (_, y) => {
    const row = Buffer.alloc(1 + 3 * w); // filter byte 0: none
    for (let x = 0; x < w; x++) row.set(colourAt(x, y), 1 + 3 * x);
    return row;
  }));
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/** The colour at the centre of a page's screenshot, [r, g, b]. */
export async function centreColour(page) {
  const shot = await page.screenshot({ type: 'png' });
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
    const c = new OffscreenCanvas(img.width, img.height);
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(Math.floor(img.width / 2), Math.floor(img.height / 2), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, shot.toString('base64'));
}

/**
 * Runs the monotonic clock of a context's pages (performance.now and requestAnimationFrame's
 * time, one timeline) `shiftMs` off, as a phone's clock is anything but the server's: only a
 * working clock sync puts its colours at the right instants. The true clock stays readable as
 * `window.__realNow()`.
 */
export async function shiftClock(context, shiftMs) {
  await context.addInitScript((shift) => {
    const now = performance.now.bind(performance);
    window.__realNow = now;
    performance.now = () => now() + shift;
    const raf = window.requestAnimationFrame.bind(window);
    window.requestAnimationFrame = (cb) => raf((ts) => cb(ts + shift));
  }, shiftMs);
}

/**
 * This machine's system clock (the server's) − the page's true performance.timeOrigin +
 * performance.now(), ms: read at the instants Date.now() ticks over (needs shiftClock).
 */
export function pageClockTruth(page) {
  return page.evaluate(`(${systemClockOffset})(window.__realNow)`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `fn()` is truthy (polling), or fails with `what`. */
export async function until(fn, what, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await sleep(100);
  }
}

/**
 * A TCP proxy in front of the server that can stop forwarding for a while without closing
 * anything, as a Wi-Fi that drops every packet for a second does; what was sent meanwhile
 * arrives, in order, when it resumes.
 */
export class StallingProxy {
  static async start(targetPort) {
    const p = new StallingProxy();
    p.stalled = false;
    p.waiting = [];
    p.server = createServer((client) => {
      const upstream = connect(targetPort, '127.0.0.1');
      const pipe = (from, to) => {
        from.on('data', (data) => (p.stalled ? p.waiting.push(() => to.write(data)) : to.write(data)));
        from.on('close', () => to.destroy());
        from.on('error', () => to.destroy());
      };
      pipe(client, upstream);
      pipe(upstream, client);
    });
    p.server.listen(0, '127.0.0.1');
    await once(p.server, 'listening');
    p.base = `http://127.0.0.1:${p.server.address().port}`;
    return p;
  }

  async stall(ms) {
    this.stalled = true;
    await sleep(ms);
    this.stalled = false;
    for (const write of this.waiting.splice(0)) write();
  }

  close() {
    this.server.close();
  }
}

/**
 * The load generator's delay relay (`c3s-load relay`) in front of a port: each direction
 * delayed on its own by `delay` + U[0, `jitter`) ms (seeded), TCP's order kept; `stall(ms)`
 * holds everything for a while, as a Wi-Fi that drops out. Ends with `close()` (its standard
 * input closes and it is ended by its PID).
 */
export class Relay {
  static async start({ to, up = [0, 0], down = [0, 0], seed = 1, bin = path.join(ROOT, 'target/debug/c3s-load') }) {
    const r = new Relay();
    r.proc = spawn(bin, ['relay', '--to', `127.0.0.1:${to}`,
      '--up-delay-ms', String(up[0]), '--up-jitter-ms', String(up[1]),
      '--down-delay-ms', String(down[0]), '--down-jitter-ms', String(down[1]), '--seed', String(seed)],
    { stdio: ['pipe', 'pipe', 'inherit'] });
    r.exited = once(r.proc, 'exit');
    r.lines = [];
    r.waiters = [];
    let buffered = '';
    r.proc.stdout.on('data', (d) => {
      buffered += d;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        r.lines.push(line);
        for (const w of r.waiters.splice(0)) w();
      }
    });
    const first = await r.next((l) => l.listen);
    r.port = Number(first.listen.split(':').pop());
    r.base = `http://127.0.0.1:${r.port}`;
    return r;
  }

  /** The next line of its output that `pred` accepts (waits up to 10 s). */
  async next(pred) {
    const deadline = Date.now() + 10000;
    for (;;) {
      const i = this.lines.findIndex(pred);
      if (i >= 0) return this.lines.splice(i, 1)[0];
      if (this.proc.exitCode !== null) throw new Error('the relay exited');
      if (Date.now() > deadline) throw new Error('the relay did not answer');
      await new Promise((r) => { this.waiters.push(r); setTimeout(r, 200); });
    }
  }

  /** Nothing goes through, either way, for `ms`; what was sent meanwhile follows in order. */
  async stall(ms) {
    this.proc.stdin.write(`stall ${ms}\n`);
    await this.next((l) => l.stalled_ms === ms);
  }

  async close() {
    if (this.proc.exitCode !== null) return;
    this.proc.stdin.end();
    this.proc.kill('SIGTERM');
    await this.exited;
  }
}

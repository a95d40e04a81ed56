// One peer's clients in the clock-sync bench: `node clients.mjs '<json options>'`.
//
//   peer      'c3s': web-client/clock.js over the phone WebSocket, in a scene whose show plays
//             'timesync': npm timesync 1.0.11 over HTTP to its own server
//   url       where to connect (the relay in front of the server, or the server itself)
//   clients   how many; client i's clock is off by a seeded shift of up to ±100 s and, with
//             `skewPpm`, runs that fast (even i) or slow (odd i)
//   readAtMs  when to read every client's estimate against the truth
//
// Prints one JSON line: each client's error (estimate − truth, ms) and, for C3S, the sync
// messages it sent.
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import { ClockSync } from '../../web-client/clock.js';
import { systemClockOffset, base, wrongClock, percentile } from '../../tests/browser/truth.mjs';
import { random as seeded } from '../../tests/browser/flashclip.mjs';

const require = createRequire(import.meta.url);
// timesync's Node client adds a timeout listener to its keep-alive socket per request
require('node:events').defaultMaxListeners = 1000;
const opts = JSON.parse(process.argv[2]);
const random = seeded(opts.seed * 7919 + (opts.peer === 'c3s' ? 1 : 2));
const start = base();

function clockFor(i) {
  const shift = (random() * 2 - 1) * 100000;
  const skew = (opts.skewPpm ?? 0) * 1e-6 * (i % 2 === 0 ? 1 : -1);
  return wrongClock(shift, skew, start);
}

async function c3sClient(i) {
  const now = clockFor(i);
  const ws = new WebSocket(opts.url, { perMessageDeflate: false });
  const client = { now, ws, sentAt: [] };
  const send = (m) => {
    if (m.type === 'sync') client.sentAt.push(base() - start);
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
  };
  const clock = new ClockSync({ send, now, visibility: null });
  Object.assign(client, { clock, estimate: () => clock.offsetAt(now()) });
  await new Promise((resolve, reject) => {
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', protocol: 1 })));
    ws.on('message', (data, binary) => {
      if (binary) return; // the show's colour chunks
      const msg = JSON.parse(data.toString());
      if (msg.type === 'welcome') {
        client.pixelId = msg.pixel_id;
        clock.start();
        resolve();
      } else if (msg.type === 'sync') clock.handleReply(msg);
    });
    ws.on('error', reject);
    ws.on('close', (code, reason) => reject(new Error(`closed ${code} ${reason}`)));
  });
  return client;
}

async function timesyncClient(i) {
  const timesync = require('timesync');
  const now = clockFor(i);
  // its README's settings: a sync (5 requests 1 s apart, outliers dropped, the mean) every 10 s
  const ts = timesync.create({ server: opts.url, interval: 10000, now });
  return { now, estimate: () => ts.offset, ts };
}

const make = opts.peer === 'c3s' ? c3sClient : timesyncClient;
const clients = await Promise.all(Array.from({ length: opts.clients }, (_, i) => make(i)));
if (opts.peer === 'c3s' && opts.place) {
  // placed phones get the show's colours, as in a real show
  const res = await fetch(opts.place.url, {
    method: 'POST',
    headers: { authorization: 'Bearer ' + opts.place.token, 'content-type': 'application/json' },
    body: JSON.stringify({ positions: clients.map((c, i) => ({ pixel_id: c.pixelId, x: 1 + (i % 10), y: 1 + Math.floor(i / 10) })) }),
  });
  if (!res.ok) throw new Error(`placing: ${res.status} ${await res.text()}`);
}

await new Promise((r) => setTimeout(r, Math.max(0, opts.readAtMs - (base() - start))));
const truthBase = systemClockOffset();
const errors = clients.map((c) => {
  const local = c.now();
  const truth = base() + truthBase - local;
  return c.estimate() - truth;
});
const out = { peer: opts.peer, errors_ms: errors.map((e) => Math.round(e * 1000) / 1000) };
out.p99_ms = percentile(errors.map(Math.abs), 0.99);
if (opts.peer === 'c3s') {
  // sync messages a phone sends per second once settled (after its first 30 s)
  const settledFrom = 30000;
  const span = (base() - start) - settledFrom;
  if (span > 10000) {
    const counts = clients.map((c) => c.sentAt.filter((t) => t >= settledFrom).length);
    out.settled_sync_msgs_per_s = counts.reduce((a, b) => a + b, 0) / clients.length / (span / 1000);
  }
  out.sync_msgs_first_25s = clients.map((c) => c.sentAt.filter((t) => t < 25000).length).reduce((a, b) => a + b, 0) / clients.length;
  out.steps = clients.reduce((a, c) => a + c.clock.steps, 0);
  for (const c of clients) c.ws.terminate();
} else {
  for (const c of clients) c.ts.destroy();
}
console.log(JSON.stringify(out));
process.exit(0);

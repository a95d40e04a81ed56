// The hostile crowd, as an attacker would run it against a live server (loopback, bounded):
// each attack of the hostile-crowd issue, one after another, while the load generator's
// phones watch a show (`scripts/bench hostile` runs this as `c3s-load --attack`). Counts
// every answer by status, samples the server's RSS (C3S_PID) throughout, and prints one JSON
// line: per attack, the statuses seen and whether each was one the server should give.
// Exit status 1 if any answer was a 5xx or not among those expected.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const BASE = process.env.C3S_SERVER;
const PID = process.env.C3S_PID;
if (!BASE) throw new Error('C3S_SERVER is not set: run through scripts/bench hostile');
const WS = BASE.replace('http://', 'ws://');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let peakRssMb = 0;
const rssMb = () => {
  try {
    const status = readFileSync(`/proc/${PID}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024;
  } catch {
    return 0;
  }
};
const sampler = setInterval(() => (peakRssMb = Math.max(peakRssMb, rssMb())), 100);

async function call(method, path, { token, json, body, headers = {}, signal } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (json !== undefined) h['content-type'] = 'application/json';
  try {
    const res = await fetch(BASE + path, {
      method,
      headers: h,
      body: json !== undefined ? JSON.stringify(json) : body,
      signal,
      duplex: body && typeof body.getReader === 'function' ? 'half' : undefined,
    });
    const text = await res.text();
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed };
  } catch (e) {
    return { status: 0, error: String(e) };
  }
}

const results = {};
async function attack(name, expected, run) {
  const seen = {};
  const count = (s) => (seen[s] = (seen[s] || 0) + 1);
  const started = Date.now();
  await run(count);
  const unexpected = Object.keys(seen).filter((s) => !expected.includes(Number(s)) && !expected.includes(s));
  results[name] = { seen, expected, ok: unexpected.length === 0, ms: Date.now() - started, rss_mb: Math.round(rssMb()) };
  process.stderr.write(`${name}: ${JSON.stringify(seen)}${unexpected.length ? ' UNEXPECTED ' + unexpected : ''}\n`);
}

// an operator of our own, and a scene it owns
const login = `attacker${Date.now() % 100000}`;
const reg = await call('POST', '/api/auth/register', { json: { login, password: 'a long password' } });
const token = reg.body.token;
const myScene = (await call('POST', '/api/scenes', { token, json: { name: 'mine', width: 100, height: 60 } })).body.scene_id;
await call('PATCH', `/api/scenes/${myScene}`, { token, json: { status: 'open', location_methods: ['seat', 'observer'] } });
await call('PUT', `/api/scenes/${myScene}/seats`, { token, body: 'A,1,1,10,5\n', headers: { 'content-type': 'text/csv' } });

await attack('nul_in_text', [401, 422], async (count) => {
  const nul = 'a\u0000b';
  const cases = [
    ['POST', '/api/scenes', { name: nul, width: 1, height: 1 }],
    ['POST', '/api/scenes', { name: 'x', description: nul, width: 1, height: 1 }],
    ['POST', '/api/scenes', { name: 'x', venue: nul, width: 1, height: 1 }],
    ['PATCH', `/api/scenes/${myScene}`, { name: nul }],
    ['POST', '/api/organizers', { name: nul }],
    ['POST', '/api/auth/guest', { display_name: nul }],
  ];
  for (const [m, p, j] of cases) count((await call(m, p, { token, json: j })).status);
  count((await call('POST', '/api/auth/login', { json: { login: nul, password: 'x' } })).status);
  count((await call('POST', `/api/scenes/${myScene}/frames?name=a%00b`, { token, body: gif(2, 0), headers: { 'content-type': 'image/gif' } })).status);
});

// a GIF of a side×side first frame and `tiny` one-pixel frames, by hand (8-bit literal codes)
function gif(side, tiny) {
  const out = [];
  const u16 = (v) => out.push(v & 255, v >> 8);
  out.push(...Buffer.from('GIF89a'));
  u16(side);
  u16(side);
  out.push(0xf6, 0, 0, ...new Array(128 * 3).fill(0));
  const frame = (w, h) => {
    out.push(0x21, 0xf9, 4, 0, 5, 0, 0, 0, 0x2c, 0, 0, 0, 0);
    u16(w);
    u16(h);
    out.push(0, 7);
    const codes = [];
    for (let i = 0; i < w * h; i++) {
      if (i % 100 === 0) codes.push(128);
      codes.push(0);
    }
    codes.push(129);
    for (let i = 0; i < codes.length; i += 255) {
      const block = codes.slice(i, i + 255);
      out.push(block.length, ...block);
    }
    out.push(0);
  };
  frame(side, side);
  for (let i = 0; i < tiny; i++) frame(1, 1);
  out.push(0x3b);
  return Buffer.from(out);
}

await attack('gif_bomb', [413, 422, 429, 'hung_up'], async (count) => {
  // 6000 × 6000, then 19 one-pixel frames: 720 million pixels to decode
  const bomb = gif(6000, 19);
  count((await call('POST', `/api/scenes/${myScene}/frames`, { token, body: bomb, headers: { 'content-type': 'image/gif' } })).status);
  // and clients that hang up after 2 s, four at once
  await Promise.all(
    [0, 1, 2, 3].map(async () => {
      const r = await call('POST', `/api/scenes/${myScene}/frames`, { token, body: bomb, headers: { 'content-type': 'image/gif' }, signal: AbortSignal.timeout(2000) });
      count(r.status === 0 ? 'hung_up' : r.status);
    }),
  );
});

await attack('login_crowd', [401, 429], async (count) => {
  await Promise.all(
    Array.from({ length: 400 }, (_, i) => call('POST', '/api/auth/login', { json: { login: `nobody${i}`, password: 'a long password' } }).then((r) => count(r.status))),
  );
});

await attack('search_nanoseconds', [200, 429], async (count) => {
  for (let batch = 0; batch < 30; batch++) {
    await Promise.all(
      Array.from({ length: 100 }, (_, i) => {
        const ns = String(batch * 100 + i + 1).padStart(9, '0');
        return call('GET', `/api/search?from=2030-01-01T00:00:00.${ns}Z`).then((r) => count(r.status));
      }),
    );
  }
});

function phone(scene) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${WS}/ws/scenes/${scene}`);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', protocol: 1 })));
    ws.on('message', (data, binary) => {
      if (!binary && JSON.parse(String(data)).type === 'welcome') resolve(ws);
    });
    ws.on('error', () => resolve(null));
  });
}

await attack('same_seat_200_times', ['located', 'slowed', 'closed_4029'], async (count) => {
  const ws = await phone(myScene);
  if (!ws) return count('no_socket');
  ws.on('message', (data, binary) => {
    if (!binary) {
      const t = JSON.parse(String(data)).type;
      if (t === 'located') count(t);
      if (t === 'locate_refused') count(JSON.parse(String(data)).reason.startsWith('too many') ? 'slowed' : 'refused');
    }
  });
  const closed = new Promise((r) => ws.on('close', (code) => r(code)));
  for (let i = 0; i < 200; i++) ws.send(JSON.stringify({ type: 'seat', section: 'A', row: '1', seat: '1' }));
  const code = await Promise.race([closed, sleep(3000).then(() => null)]);
  if (code) count(`closed_${code}`);
  ws.terminate();
});

await attack('schedule_64_at_once', [200, 409], async (count) => {
  const org = (await call('POST', '/api/organizers', { token, json: { name: 'Club' } })).body.organizer_id;
  const venue = (await call('POST', '/api/venues', { token, json: { organizer_id: org, name: 'Arena', lat: 55, lon: 37, capacity: 1000 } })).body.venue_id;
  const starts = new Date(Date.now() + 3600e3).toISOString();
  await Promise.all(
    Array.from({ length: 64 }, (_, i) =>
      call('PUT', `/api/scenes/${myScene}/schedule`, { token, json: { organizer_id: org, venue_id: venue, starts_at: starts, capacity: 100 + i } }).then((r) => count(r.status)),
    ),
  );
});

await attack('co_operator_takes_the_scene', [403], async (count) => {
  const co = await call('POST', '/api/auth/register', { json: { login: login + 'co', password: 'a long password' } });
  await call('POST', `/api/users/${co.body.user.user_id}/permissions`, { token, json: { permission: 'operator', scene_id: myScene } });
  const me = (await call('GET', '/api/auth/me', { token })).body.user.user_id;
  count((await call('DELETE', `/api/users/${me}/permissions/operator?scene_id=${myScene}`, { token: co.body.token })).status);
  count((await call('DELETE', `/api/scenes/${myScene}`, { token: co.body.token })).status);
});

await attack('trickling_uploads', [408, 400, 'cut'], async (count) => {
  // four uploads at 100 bytes a second
  await Promise.all(
    [0, 1, 2, 3].map(async () => {
      let stop = false;
      const body = new ReadableStream({
        async pull(controller) {
          if (stop) return controller.close();
          await sleep(1000);
          controller.enqueue(new Uint8Array(100));
        },
      });
      const r = await call('POST', `/api/scenes/${myScene}/frames`, { token, body, headers: { 'content-type': 'image/png' }, signal: AbortSignal.timeout(40000) });
      stop = true;
      count(r.status === 0 ? 'cut' : r.status);
    }),
  );
});

await attack('silent_sockets_3000', ['open', 'refused', 'closed_4001', 'closed_1006'], async (count) => {
  const sockets = [];
  await Promise.all(
    Array.from({ length: 3000 }, () =>
      new Promise((resolve) => {
        const ws = new WebSocket(`${WS}/ws/scenes/${myScene}`);
        ws.on('open', () => {
          count('open');
          sockets.push(ws);
          resolve();
        });
        ws.on('unexpected-response', () => {
          count('refused');
          resolve();
        });
        ws.on('error', () => resolve());
      }),
    ),
  );
  const closed = sockets.map((ws) => new Promise((r) => ws.on('close', (code) => (count(`closed_${code}`), r()))));
  await Promise.race([Promise.all(closed), sleep(15000)]);
  for (const ws of sockets) ws.terminate();
});

await attack('malformed_messages', ['closed_4000_short'], async (count) => {
  for (let i = 0; i < 20; i++) {
    const ws = await phone(myScene);
    if (!ws) {
      count('no_socket');
      continue;
    }
    const closed = new Promise((r) => ws.on('close', (code, reason) => r([code, reason.length])));
    ws.send(JSON.stringify({ type: 'x'.repeat(4000) }));
    const [code, len] = await Promise.race([closed, sleep(5000).then(() => [0, 0])]);
    count(code === 4000 && len <= 123 ? 'closed_4000_short' : `closed_${code}_${len}`);
  }
});

clearInterval(sampler);
peakRssMb = Math.max(peakRssMb, rssMb());
const ok = Object.values(results).every((r) => r.ok);
console.log(JSON.stringify({ attacks: results, ok, server_peak_rss_mb: Math.round(peakRssMb) }));
process.exit(ok ? 0 : 1);

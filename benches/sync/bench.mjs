// `scripts/bench sync`: C3S's clock sync (web-client/clock.js, the code the phone page runs)
// side by side with npm timesync 1.0.11 (its own HTTP server and client), each peer's clients
// behind the same per-direction delay relay (`c3s-load relay`), in the same conditions at the
// same time, with a show playing to the C3S phones. Prints a JSON line per peer and condition,
// one per condition with the ratio, and a final summary line.
//
// Options (environment): SYNC_SEEDS (default 1,2,3), SYNC_CLIENTS (20), SYNC_READ_S (25),
// SYNC_DRIFT_READ_S (300), SYNC_CONDITIONS (all: loopback,wifi,cellular,asymmetric,drift).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, Relay, png, ROOT } from '../../tests/browser/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SEEDS = (process.env.SYNC_SEEDS ?? '1,2,3').split(',').map(Number);
const CLIENTS = Number(process.env.SYNC_CLIENTS ?? 20);
const READ_MS = Number(process.env.SYNC_READ_S ?? 25) * 1000;
const DRIFT_READ_MS = Number(process.env.SYNC_DRIFT_READ_S ?? 300) * 1000;
// the binaries: the release build scripts/bench made (C3S_BENCH_BIN_DIR to use another)
const RELEASE = process.env.C3S_BENCH_BIN_DIR ?? path.join(ROOT, 'target/release');

/** Each direction: [fixed delay, uniform jitter] in ms. */
const CONDITIONS = [
  { name: 'loopback', up: null, down: null, readAtMs: READ_MS },
  { name: 'wifi', up: [10, 10], down: [10, 10], readAtMs: READ_MS },
  { name: 'cellular', up: [30, 30], down: [30, 30], readAtMs: READ_MS },
  // the bound no sync can beat: half the difference of the legs' fastest, (40 − 10) / 2
  { name: 'asymmetric', up: [40, 10], down: [10, 10], readAtMs: READ_MS, boundMs: 15 },
  { name: 'drift', up: [10, 10], down: [10, 10], readAtMs: DRIFT_READ_MS, skewPpm: 100 },
].filter((c) => !process.env.SYNC_CONDITIONS || process.env.SYNC_CONDITIONS.split(',').includes(c.name));

function spawnJson(args, input) {
  const proc = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  if (input !== undefined) proc.stdin.end(input);
  return { proc, done: once(proc, 'exit').then(([code]) => {
    if (code !== 0) throw new Error(`${args.join(' ')} exited with ${code}`);
    return JSON.parse(out.trim().split('\n').pop());
  }) };
}

async function timesyncServer() {
  const proc = spawn(process.execPath, [path.join(HERE, 'timesync-server.cjs'), '0'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const [line] = await once(proc.stdout, 'data');
  return { proc, port: JSON.parse(String(line)).listen };
}

async function showScene(server) {
  const token = await server.login();
  const scene = await server.api('POST', '/api/scenes', { name: 'sync bench', width: 10, height: 10 }, token);
  await server.api('PATCH', `/api/scenes/${scene.scene_id}`, { status: 'open' }, token);
  // a second of 30 frames, a different colour each, looped
  for (let i = 0; i < 30; i++) {
    const duration = Math.floor((1000 * (i + 1)) / 30) - Math.floor((1000 * i) / 30);
    const res = await fetch(`${server.base}/api/scenes/${scene.scene_id}/frames?duration_ms=${duration}`, {
      method: 'POST',
      headers: { authorization: 'Bearer ' + token, 'content-type': 'image/png' },
      body: png(8, 8, [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256]),
    });
    if (!res.ok) throw new Error(`frame: ${res.status} ${await res.text()}`);
  }
  await server.api('PUT', `/api/scenes/${scene.scene_id}/show`, { loop: true }, token);
  await server.api('POST', `/api/scenes/${scene.scene_id}/playback`, { command: 'play', start_in_ms: 1000 }, token);
  return { sceneId: scene.scene_id, token };
}

const round = (v) => Math.round(v * 1000) / 1000;

const server = await Server.start({ bin: path.join(RELEASE, 'c3s') });
const ts = await timesyncServer();
const { sceneId, token } = await showScene(server);
const results = [];
try {
  for (const seed of SEEDS) {
    for (const c of CONDITIONS) {
      const relays = [];
      const front = async (port) => {
        if (!c.up) return port;
        const r = await Relay.start({ to: port, up: c.up, down: c.down, seed, bin: path.join(RELEASE, 'c3s-load') });
        relays.push(r);
        return r.port;
      };
      const c3sPort = await front(server.port);
      const tsPort = await front(ts.port);
      const common = { clients: CLIENTS, seed, readAtMs: c.readAtMs, skewPpm: c.skewPpm ?? 0 };
      const ours = spawnJson([path.join(HERE, 'clients.mjs'), JSON.stringify({ ...common, peer: 'c3s', url: `ws://127.0.0.1:${c3sPort}/ws/scenes/${sceneId}`, place: { url: `${server.base}/api/scenes/${sceneId}/pixels/positions`, token } })]);
      const theirs = spawnJson([path.join(HERE, 'clients.mjs'), JSON.stringify({ ...common, peer: 'timesync', url: `http://127.0.0.1:${tsPort}/timesync` })]);
      const [a, b] = await Promise.all([ours.done, theirs.done]);
      for (const r of relays) await r.close();
      for (const r of [a, b]) {
        const line = { bench: 'sync', peer: r.peer, condition: c.name, seed, clients: CLIENTS, read_at_s: c.readAtMs / 1000, p99_ms: round(r.p99_ms), errors_ms: r.errors_ms };
        if (r.settled_sync_msgs_per_s !== undefined) line.settled_sync_msgs_per_s = round(r.settled_sync_msgs_per_s);
        if (r.sync_msgs_first_25s !== undefined) line.sync_msgs_first_25s = round(r.sync_msgs_first_25s);
        if (r.steps !== undefined) line.steps = r.steps;
        console.log(JSON.stringify(line));
      }
      const ratio = a.p99_ms / b.p99_ms;
      const row = { bench: 'sync', condition: c.name, seed, c3s_p99_ms: round(a.p99_ms), timesync_p99_ms: round(b.p99_ms), ratio: round(ratio) };
      if (a.settled_sync_msgs_per_s !== undefined) row.settled_sync_msgs_per_s = round(a.settled_sync_msgs_per_s);
      console.log(JSON.stringify(row));
      results.push({ ...row, boundMs: c.boundMs });
    }
  }
} finally {
  ts.proc.stdin.end();
  ts.proc.kill();
  await server.stop();
}

// the summary: each condition's range over the seeds, and the goals of issue 15
const summary = { bench: 'sync', clients: CLIENTS, seeds: SEEDS, conditions: {} };
for (const c of CONDITIONS) {
  const rows = results.filter((r) => r.condition === c.name);
  const range = (k) => [Math.min(...rows.map((r) => r[k])), Math.max(...rows.map((r) => r[k]))];
  summary.conditions[c.name] = { c3s_p99_ms: range('c3s_p99_ms'), timesync_p99_ms: range('timesync_p99_ms'), ratio: range('ratio') };
  if (rows[0]?.settled_sync_msgs_per_s !== undefined) summary.conditions[c.name].settled_sync_msgs_per_s = range('settled_sync_msgs_per_s');
}
const s = summary.conditions;
const goal = (name, check) => (s[name] ? check(s[name]) : 'not run');
summary.goals = {
  wifi_ratio_le_0_5: goal('wifi', (c) => c.ratio[1] <= 0.5),
  cellular_ratio_le_0_5: goal('cellular', (c) => c.ratio[1] <= 0.5),
  loopback_le_0_1_ms: goal('loopback', (c) => c.c3s_p99_ms[1] <= 0.1),
  asymmetric_within_1_ms_of_15: goal('asymmetric', (c) => c.c3s_p99_ms[1] <= 16),
  drift_le_1_ms: goal('drift', (c) => c.c3s_p99_ms[1] <= 1),
  // measured from 30 s on: a drift case read sooner has no settled rate
  settled_le_1_msg_per_s: goal('drift', (c) => (c.settled_sync_msgs_per_s ? c.settled_sync_msgs_per_s[1] <= 1 : 'not measured')),
};
console.log(JSON.stringify(summary));

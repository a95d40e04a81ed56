// `scripts/bench crowd`: what the crowd sees. 20 Chromium phone pages behind the Wi-Fi-like
// relay (10 ms + U[0, 10] ms each way), each clock shifted, a 10 s show at 30 fps of a different
// colour every frame, against the release server. Figures (tests/browser/crowd.mjs) for the
// steady show, after every tab was hidden 3 s and shown, and after a 3 s network stall; the
// last line is JSON. CROWD_PAGES sets the number of pages.
import path from 'node:path';
import { Server, Relay, launchBrowser, ROOT } from '../tests/browser/harness.mjs';
import { crowdRun } from '../tests/browser/crowd.mjs';

const PAGES = Number(process.env.CROWD_PAGES ?? 20);
const bin = process.env.C3S_BENCH_BIN_DIR ?? path.join(ROOT, 'target/release');
const server = await Server.start({ bin: path.join(bin, 'c3s') });
const relay = await Relay.start({ to: server.port, up: [10, 10], down: [10, 10], seed: 20, bin: path.join(bin, 'c3s-load') });
const browser = await launchBrowser();
try {
  const run = await crowdRun({ browser, server, relay, count: PAGES, log: (line) => console.error(line) });
  const goals = {
    share_ge_99_9_pct: ['steady', 'after_hidden', 'after_stall'].every((k) => run[k].within_refresh_share >= 0.999),
    spread_p99_le_refresh: ['steady', 'after_hidden', 'after_stall'].every((k) => run[k].spread_p99_ms <= run[k].refresh_ms + 0.5),
  };
  console.log(JSON.stringify({ bench: 'crowd', pages: PAGES, relay: 'up 10+U[0,10] ms, down 10+U[0,10] ms', ...run, goals }));
} finally {
  await browser.close();
  await relay.close();
  await server.stop();
}

// What the crowd sees, in a real browser: six phone pages behind a Wi-Fi-like relay (10 ms +
// U[0, 10] ms each way), each clock shifted by up to ten minutes, play a show of a different
// colour every frame at 30 fps; by the true clock, nearly every colour change appears within a
// refresh of its instant on every page, and the pages agree within a refresh: while the show
// plays, after every tab was hidden and shown again, and after a 3 s network stall. A broken
// clock sync fails it (an offset off by more than half a refresh moves the changes off their
// refresh). The 20-page figures are benches/crowd.mjs's.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, Relay, launchBrowser } from './harness.mjs';
import { crowdRun } from './crowd.mjs';

let server;
let relay;
let browser;

before(async () => {
  server = await Server.start();
  relay = await Relay.start({ to: server.port, up: [10, 10], down: [10, 10], seed: 15 });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await relay?.close();
  await server?.stop();
});

test('six phones behind Wi-Fi show every colour change on its refresh, in step, through a hidden tab and a stall', async (t) => {
  const run = await crowdRun({ browser, server, relay, count: 6, log: (line) => t.diagnostic(line) });
  for (const [phase, f] of [['steady', run.steady], ['after hidden', run.after_hidden], ['after stall', run.after_stall]]) {
    assert.ok(f.counted >= 0.9 * f.changes * f.pages, `${phase}: ${f.counted} of ${f.changes * f.pages} changes had a refresh near them`);
    assert.ok(f.within_refresh_share >= 0.99, `${phase}: ${(100 * f.within_refresh_share).toFixed(2)} % of changes within a refresh (${JSON.stringify(f)})`);
    assert.ok(f.missing <= 0.01 * f.counted, `${phase}: ${f.missing} changes never shown`);
    assert.ok(f.spread_p99_ms <= f.refresh_ms + 1, `${phase}: spread p99 ${f.spread_p99_ms} ms, a refresh is ${f.refresh_ms} ms`);
  }
});

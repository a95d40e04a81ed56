// The phone's colour timeline (web-client/chunks.js) against the protocol's rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseChunk, Timeline } from '../../web-client/chunks.js';

/** Builds a chunk as the server does (src/chunk.rs). */
function chunk(version, start, length, entries) {
  const bytes = [1];
  const u32 = (v) => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
  bytes.push(...u32(version));
  const big = new DataView(new ArrayBuffer(8));
  big.setBigInt64(0, BigInt(start), true);
  bytes.push(...new Uint8Array(big.buffer));
  bytes.push(...u32(length));
  let last = start;
  for (const [at, r, g, b] of entries) {
    let dt = at - last;
    last = at;
    do {
      let byte = dt & 0x7f;
      dt = Math.floor(dt / 128);
      if (dt > 0) byte |= 0x80;
      bytes.push(byte);
    } while (dt > 0);
    bytes.push(r, g, b);
  }
  return new Uint8Array(bytes).buffer;
}

test('parses a chunk with one- and two-byte gaps', () => {
  const t0 = 1_800_000_000_000;
  const c = parseChunk(chunk(7, t0, 500, [[t0, 255, 0, 0], [t0 + 100, 0, 255, 0], [t0 + 400, 0, 0, 255]]));
  assert.equal(c.version, 7);
  assert.equal(c.start, t0);
  assert.equal(c.end, t0 + 500);
  assert.deepEqual(c.entries.map((e) => e.at - t0), [0, 100, 400]);
  assert.deepEqual(c.entries[2].rgb, [0, 0, 255]);
  assert.throws(() => parseChunk(new Uint8Array([2, 0, 0]).buffer));
});

test('colours hold until the next entry; gaps are idle', () => {
  const tl = new Timeline();
  tl.add(parseChunk(chunk(1, 1000, 500, [[1000, 1, 1, 1], [1200, 2, 2, 2]])));
  tl.add(parseChunk(chunk(1, 1500, 500, [[1500, 3, 3, 3]])));
  assert.equal(tl.colorAt(999), null);
  assert.deepEqual(tl.colorAt(1199), [1, 1, 1]);
  assert.deepEqual(tl.colorAt(1200), [2, 2, 2]);
  assert.deepEqual(tl.colorAt(1999), [3, 3, 3]);
  assert.equal(tl.colorAt(2000), null);
  assert.equal(tl.coveredAhead(1100), 900);
});

test('a newer version voids older ones from its start; an older one is dropped', () => {
  const tl = new Timeline();
  tl.add(parseChunk(chunk(1, 1000, 1000, [[1000, 1, 1, 1]])));
  assert.ok(tl.add(parseChunk(chunk(2, 1400, 300, [[1400, 9, 9, 9]]))));
  assert.deepEqual(tl.colorAt(1300), [1, 1, 1]);
  assert.deepEqual(tl.colorAt(1500), [9, 9, 9]);
  assert.equal(tl.colorAt(1800), null, 'version 1 said nothing valid after 1400');
  assert.equal(tl.add(parseChunk(chunk(1, 1700, 300, [[1700, 1, 1, 1]]))), false);
  tl.prune(1750);
  assert.equal(tl.chunks.length, 0);
});

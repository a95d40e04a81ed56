// The operator's phone counts: connected, located and synced, and the histogram of the
// phones' clock-sync errors, as the live stream's `presence` events tell them.

import { $, state } from './state.js';

export function renderPresence() {
  const p = state.presence;
  $('count-connected').textContent = p ? p.connected : '–';
  $('count-located').textContent = p ? p.located : '–';
  $('count-synced').textContent = p ? p.synced : '–';
  const list = $('histogram');
  list.textContent = '';
  if (!p) return;
  const max = Math.max(1, ...p.sync_error_histogram.map((b) => b.count));
  let lower = null;
  for (const b of p.sync_error_histogram) {
    const li = document.createElement('li');
    const label = document.createElement('span');
    label.textContent = b.le_ms != null ? `≤ ${b.le_ms} ms` : `> ${lower} ms`;
    const track = document.createElement('span');
    track.setAttribute('aria-hidden', 'true');
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.display = 'block';
    bar.style.width = `${(b.count / max) * 100}%`;
    if (b.count === 0) bar.style.opacity = '0.25';
    track.append(bar);
    const n = document.createElement('span');
    n.className = 'n';
    n.textContent = b.count;
    li.append(label, track, n);
    li.setAttribute('aria-label', `${label.textContent}: ${b.count} phone${b.count === 1 ? '' : 's'}`);
    list.append(li);
    lower = b.le_ms;
  }
}

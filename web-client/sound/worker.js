// The phone's detector in a Web Worker, so that a few tens of ms of FFTs never hold up the
// page's frames. Start it as a module worker:
//     new Worker(new URL('./sound/worker.js', import.meta.url), { type: 'module' })
// and post {id, samples (Float32Array, mono; transfer its buffer), sampleRate, firstSampleMs,
// session}; it answers {id, arrivals, tookMs} (detect.js), or {id, error} if detection threw.
// {id, warm: {sampleRate, session}} prepares the codes' spectra ahead (the first detection at
// a rate otherwise spends ~0.1–0.3 s on them) and answers {id, warmed: true}.

import { detect, warm } from './detect.js';

self.onmessage = (event) => {
  const { id, samples, sampleRate, firstSampleMs, session } = event.data;
  try {
    if (event.data.warm) {
      warm(event.data.warm.sampleRate, event.data.warm.session);
      self.postMessage({ id, warmed: true });
      return;
    }
    self.postMessage({ id, ...detect(samples, sampleRate, { firstSampleMs, session }) });
  } catch (err) {
    self.postMessage({ id, error: String(err?.message ?? err) });
  }
};

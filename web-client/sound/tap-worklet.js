// The microphone's samples, off the audio thread in blocks: each block says which frame of the
// AudioContext its first sample is, so the page can put every sample on the server's clock.
const BLOCK = 4096;

class Tap extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buf = new Float32Array(BLOCK);
    this.fill = 0;
    this.first = 0;
  }

  process(inputs) {
    const ch = inputs[0]?.[0];
    if (!ch) return true;
    if (this.fill === 0) this.first = currentFrame;
    let i = 0;
    while (i < ch.length) {
      const n = Math.min(ch.length - i, BLOCK - this.fill);
      this.buf.set(ch.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === BLOCK) {
        this.port.postMessage({ frame: this.first, samples: this.buf }, [this.buf.buffer]);
        this.buf = new Float32Array(BLOCK);
        this.fill = 0;
        this.first = currentFrame + i;
      }
    }
    return true;
  }
}

registerProcessor('c3s-tap', Tap);

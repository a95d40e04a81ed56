// A scene map on a canvas: the scene rectangle (width × height scene units) scaled to fit, and
// dots for phones. Click positions come back in scene units.

export class SceneMap {
  constructor(canvas, { width, height, background = '#222' }) {
    Object.assign(this, { canvas, width, height, background });
    this.scale = 1;
    this.resize();
  }

  /** Fits the canvas's drawing size to its CSS box (call after layout changes). */
  resize() {
    const box = this.canvas.getBoundingClientRect();
    const cssW = box.width || 400;
    this.scale = cssW / this.width;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(cssW * ratio);
    this.canvas.height = Math.round(this.height * this.scale * ratio);
    this.canvas.style.height = `${this.height * this.scale}px`;
    this.ratio = ratio;
  }

  toScene(event) {
    const box = this.canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * this.width;
    const y = ((event.clientY - box.top) / box.height) * this.height;
    return { x: Math.max(0, Math.min(this.width, x)), y: Math.max(0, Math.min(this.height, y)) };
  }

  /** Draws `dots`: [{x, y, color, ring?, label?}]; `image` (optional) fills the scene first. */
  draw(dots = [], image = null) {
    const ctx = this.canvas.getContext('2d');
    const s = this.scale * this.ratio;
    ctx.fillStyle = this.background;
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (image) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image, 0, 0, this.canvas.width, this.canvas.height);
    }
    const r = Math.max(3, Math.min(12, s * 0.6));
    for (const d of dots) {
      ctx.beginPath();
      ctx.arc(d.x * s, d.y * s, r, 0, 2 * Math.PI);
      ctx.fillStyle = d.color ?? '#fff';
      ctx.fill();
      ctx.lineWidth = d.ring ? 3 : 1;
      ctx.strokeStyle = d.ring ?? '#888';
      ctx.stroke();
      if (d.label) {
        ctx.fillStyle = '#fff';
        ctx.font = `${12 * this.ratio}px system-ui, sans-serif`;
        ctx.fillText(d.label, d.x * s + r + 2, d.y * s + 4);
      }
    }
  }
}

// Draws a QR code the server sent as modules ('1' dark, row by row) on a canvas, with a light
// quiet zone of `quiet` modules, as large as the canvas allows with whole pixels per module.

export function drawQr(canvas, side, modules, { quiet = 4, dark = '#000', light = '#fff' } = {}) {
  const total = side + 2 * quiet;
  const size = Math.min(canvas.width, canvas.height);
  const px = Math.max(1, Math.floor(size / total));
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = light;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const x0 = Math.floor((canvas.width - total * px) / 2) + quiet * px;
  const y0 = Math.floor((canvas.height - total * px) / 2) + quiet * px;
  ctx.fillStyle = dark;
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      if (modules[y * side + x] === '1') ctx.fillRect(x0 + x * px, y0 + y * px, px, px);
    }
  }
}

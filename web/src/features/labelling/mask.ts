// Masks as the manifest keeps them: COCO run-length encoding over the image in column-major
// order ([height, width], runs starting with background). The brush and the polygon tool paint
// into a bitmap (one byte per pixel, row-major) that is encoded when a stroke ends.

export interface Rle {
  size: [number, number]; // [height, width]
  counts: number[] | string;
}

export interface Bitmap {
  width: number;
  height: number;
  bits: Uint8Array; // row-major: bits[y * width + x]
}

export function emptyBitmap(width: number, height: number): Bitmap {
  return { width, height, bits: new Uint8Array(width * height) };
}

/** COCO's compressed counts string (pycocotools' rleToString) to the run lengths. */
export function countsFromString(text: string): number[] {
  const counts: number[] = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10) !== 0) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2] ?? 0;
    counts.push(x);
  }
  return counts;
}

export function decodeRle(rle: Rle): Bitmap {
  const [height, width] = rle.size;
  const out = emptyBitmap(width, height);
  const counts = typeof rle.counts === "string" ? countsFromString(rle.counts) : rle.counts;
  let at = 0; // column-major position
  let value = 0;
  for (const run of counts) {
    if (value) {
      for (let i = at; i < at + run && i < width * height; i += 1) {
        const x = Math.floor(i / height);
        const y = i - x * height;
        out.bits[y * width + x] = 1;
      }
    }
    at += run;
    value ^= 1;
  }
  return out;
}

export function encodeRle(bitmap: Bitmap): Rle {
  const { width, height, bits } = bitmap;
  const counts: number[] = [];
  let value = 0;
  let run = 0;
  for (let x = 0; x < width; x += 1) {
    for (let y = 0; y < height; y += 1) {
      const v = bits[y * width + x] ? 1 : 0;
      if (v === value) run += 1;
      else {
        counts.push(run);
        value = v;
        run = 1;
      }
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

export function area(bitmap: Bitmap): number {
  let n = 0;
  for (const b of bitmap.bits) n += b;
  return n;
}

/** Paint a filled disc of radius ``r`` (image pixels) centred on a pixel-space point. */
export function paintDisc(bitmap: Bitmap, cx: number, cy: number, r: number): void {
  const { width, height, bits } = bitmap;
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(height - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y += 1) {
    const dy = y + 0.5 - cy;
    const half = Math.sqrt(Math.max(0, r * r - dy * dy));
    const x0 = Math.max(0, Math.ceil(cx - half - 0.5));
    const x1 = Math.min(width - 1, Math.floor(cx + half - 0.5));
    for (let x = x0; x <= x1; x += 1) bits[y * width + x] = 1;
  }
}

/** A brush stroke: discs along the path, close enough that no gap shows between them. */
export function paintStroke(bitmap: Bitmap, points: { x: number; y: number }[], r: number): void {
  const step = Math.max(0.5, r / 2);
  points.forEach((p, i) => {
    const prev = points[i - 1];
    if (!prev) {
      paintDisc(bitmap, p.x, p.y, r);
      return;
    }
    const length = Math.hypot(p.x - prev.x, p.y - prev.y);
    const n = Math.max(1, Math.ceil(length / step));
    for (let k = 1; k <= n; k += 1) paintDisc(bitmap, prev.x + ((p.x - prev.x) * k) / n, prev.y + ((p.y - prev.y) * k) / n, r);
  });
}

/** Fill a polygon ring (flat x, y pairs) by scanlines through pixel centres (even-odd rule). */
export function fillPolygon(bitmap: Bitmap, ring: number[]): void {
  const { width, height, bits } = bitmap;
  const n = ring.length / 2;
  for (let y = 0; y < height; y += 1) {
    const cy = y + 0.5;
    const xs: number[] = [];
    for (let i = 0; i < n; i += 1) {
      const ax = ring[2 * i] ?? 0;
      const ay = ring[2 * i + 1] ?? 0;
      const bx = ring[2 * ((i + 1) % n)] ?? 0;
      const by = ring[2 * ((i + 1) % n) + 1] ?? 0;
      if ((ay <= cy && by > cy) || (by <= cy && ay > cy)) xs.push(ax + ((cy - ay) * (bx - ax)) / (by - ay));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      const x0 = Math.max(0, Math.ceil((xs[k] ?? 0) - 0.5));
      const x1 = Math.min(width - 1, Math.floor((xs[k + 1] ?? 0) - 0.5));
      for (let x = x0; x <= x1; x += 1) bits[y * width + x] = 1;
    }
  }
}

/** The mask's pixels in a colour, as a canvas the labelling canvas can draw over the image. */
export function maskCanvas(bitmap: Bitmap, rgb: [number, number, number]): HTMLCanvasElement {
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  if (!context) return canvas;
  const pixels = context.createImageData(bitmap.width, bitmap.height);
  bitmap.bits.forEach((b, i) => {
    if (!b) return;
    pixels.data[4 * i] = rgb[0];
    pixels.data[4 * i + 1] = rgb[1];
    pixels.data[4 * i + 2] = rgb[2];
    pixels.data[4 * i + 3] = 255;
  });
  context.putImageData(pixels, 0, 0);
  return canvas;
}

/** The labels after painting into the current label's mask (made when it has none yet). */
export function paintInto<S extends { type: string; label: string }>(
  shapes: S[],
  label: string,
  width: number,
  height: number,
  paint: (bitmap: Bitmap) => void,
  make: (rle: Rle) => S,
): S[] {
  let at = -1;
  shapes.forEach((s, i) => {
    if (s.type === "mask" && s.label === label) at = i;
  });
  const existing = at >= 0 ? (shapes[at] as unknown as { rle: Rle }).rle : null;
  const bitmap = existing && existing.size[0] === height && existing.size[1] === width ? decodeRle(existing) : emptyBitmap(width, height);
  paint(bitmap);
  if (area(bitmap) === 0) return shapes;
  const next = make(encodeRle(bitmap));
  return at >= 0 ? shapes.map((s, i) => (i === at ? next : s)) : [...shapes, next];
}

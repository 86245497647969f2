// The labelling canvas's logic, free of React and Konva: shapes in image pixels, the view
// (zoom and pan), drags turned into boxes, and an undo/redo history.

export type Point = { x: number; y: number };

export type Shape =
  | { type: "class"; label: string }
  | { type: "box"; label: string; bbox: [number, number, number, number]; score?: number }
  | { type: "polygon"; label: string; polygons: number[][]; score?: number }
  | { type: "keypoints"; label: string; keypoints: number[]; score?: number }
  | { type: "mask"; label: string; rle: { size: [number, number]; counts: number[] | string }; score?: number };

export interface View {
  scale: number;
  x: number; // screen position of the image's origin
  y: number;
}

export const MIN_SCALE = 0.02;
export const MAX_SCALE = 40;

/** The view that shows the whole image centred in a viewport of the given size. */
export function fitView(imageW: number, imageH: number, viewW: number, viewH: number): View {
  const scale = clamp(Math.min(viewW / imageW, viewH / imageH) * 0.95, MIN_SCALE, MAX_SCALE);
  return { scale, x: (viewW - imageW * scale) / 2, y: (viewH - imageH * scale) / 2 };
}

/** Zoom by ``factor`` keeping the image point under ``pointer`` (screen) where it is. */
export function zoomAt(view: View, pointer: Point, factor: number): View {
  const scale = clamp(view.scale * factor, MIN_SCALE, MAX_SCALE);
  const image = toImage(view, pointer);
  return { scale, x: pointer.x - image.x * scale, y: pointer.y - image.y * scale };
}

export function toImage(view: View, screen: Point): Point {
  return { x: (screen.x - view.x) / view.scale, y: (screen.y - view.y) / view.scale };
}

export function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

/** The box a drag from ``a`` to ``b`` draws (image pixels, any direction), clipped to the
 * image and rounded to tenths; null when it is smaller than ``minSize`` on either side. */
export function boxFromDrag(
  a: Point,
  b: Point,
  imageW: number,
  imageH: number,
  minSize = 2,
): [number, number, number, number] | null {
  const x0 = clamp(Math.min(a.x, b.x), 0, imageW);
  const y0 = clamp(Math.min(a.y, b.y), 0, imageH);
  const x1 = clamp(Math.max(a.x, b.x), 0, imageW);
  const y1 = clamp(Math.max(a.y, b.y), 0, imageH);
  const round = (v: number) => Math.round(v * 10) / 10;
  if (x1 - x0 < minSize || y1 - y0 < minSize) return null;
  return [round(x0), round(y0), round(x1 - x0), round(y1 - y0)];
}

/** The labels of one item as the annotation service takes them (the manifest's format). */
export function toSubmission(shapes: Shape[]): Record<string, unknown>[] {
  return shapes.map((shape) => {
    const { score: _score, ...rest } = shape as Shape & { score?: number };
    void _score; // a suggestion's score is the model's, not the annotator's
    return rest;
  });
}

/** Shapes from labels the server sent (pre-label suggestions, earlier submissions). */
export function fromLabels(labels: unknown): Shape[] {
  if (!Array.isArray(labels)) return [];
  return labels.flatMap((raw): Shape[] => {
    const label = raw as Record<string, unknown>;
    const name = String(label.label ?? "");
    if (!name) return [];
    const score = typeof label.score === "number" ? label.score : undefined;
    switch (label.type) {
      case "class":
        return [{ type: "class", label: name }];
      case "box":
        return Array.isArray(label.bbox) && label.bbox.length === 4
          ? [{ type: "box", label: name, bbox: label.bbox.map(Number) as [number, number, number, number], score }]
          : [];
      case "polygon":
        return Array.isArray(label.polygons)
          ? [{ type: "polygon", label: name, polygons: (label.polygons as number[][]).map((r) => r.map(Number)), score }]
          : [];
      case "mask": {
        const rle = label.rle as { size?: unknown; counts?: unknown } | undefined;
        return rle && Array.isArray(rle.size) && (typeof rle.counts === "string" || Array.isArray(rle.counts))
          ? [{ type: "mask", label: name, rle: { size: rle.size.map(Number) as [number, number], counts: rle.counts as number[] | string }, score }]
          : [];
      }
      case "keypoints":
        return Array.isArray(label.keypoints)
          ? [{ type: "keypoints", label: name, keypoints: (label.keypoints as number[]).map(Number), score }]
          : [];
      default:
        return [];
    }
  });
}

/** A closed polygon ring from clicked points, as flat x, y pairs (null under 3 points). */
export function ringFrom(points: Point[]): number[] | null {
  if (points.length < 3) return null;
  return points.flatMap((p) => [Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10]);
}

export interface History<T> {
  past: T[];
  present: T;
  future: T[];
}

export function history<T>(present: T): History<T> {
  return { past: [], present, future: [] };
}

export function commit<T>(h: History<T>, next: T, limit = 200): History<T> {
  return { past: [...h.past, h.present].slice(-limit), present: next, future: [] };
}

export function undo<T>(h: History<T>): History<T> {
  const previous = h.past[h.past.length - 1];
  if (previous === undefined) return h;
  return { past: h.past.slice(0, -1), present: previous, future: [h.present, ...h.future] };
}

export function redo<T>(h: History<T>): History<T> {
  const [next, ...rest] = h.future;
  if (next === undefined) return h;
  return { past: [...h.past, h.present], present: next, future: rest };
}

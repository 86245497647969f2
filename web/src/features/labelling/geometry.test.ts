import { describe, expect, it } from "vitest";
import {
  boxFromDrag,
  commit,
  fitView,
  fromLabels,
  history,
  redo,
  ringFrom,
  toImage,
  toSubmission,
  undo,
  zoomAt,
} from "./geometry";

describe("view", () => {
  it("fits a 4000x3000 image into 1000x600, centred", () => {
    const view = fitView(4000, 3000, 1000, 600);
    expect(view.scale).toBeCloseTo(0.19);
    expect(view.y).toBeCloseTo(15);
    expect(view.x).toBeCloseTo((1000 - 4000 * view.scale) / 2);
  });

  it("keeps the point under the pointer still while zooming", () => {
    const view = { scale: 0.5, x: 10, y: 20 };
    const pointer = { x: 300, y: 200 };
    const before = toImage(view, pointer);
    const zoomed = zoomAt(view, pointer, 2.5);
    expect(zoomed.scale).toBe(1.25);
    const after = toImage(zoomed, pointer);
    expect(after.x).toBeCloseTo(before.x);
    expect(after.y).toBeCloseTo(before.y);
  });

  it("never zooms past its limits", () => {
    expect(zoomAt({ scale: 30, x: 0, y: 0 }, { x: 0, y: 0 }, 10).scale).toBe(40);
  });
});

describe("boxes", () => {
  it("draws a box in any drag direction, clipped to the image", () => {
    expect(boxFromDrag({ x: 50, y: 40 }, { x: 10, y: 5 }, 100, 100)).toEqual([10, 5, 40, 35]);
    expect(boxFromDrag({ x: -20, y: 90 }, { x: 30, y: 130 }, 100, 100)).toEqual([0, 90, 30, 10]);
  });

  it("ignores a click that did not drag", () => {
    expect(boxFromDrag({ x: 5, y: 5 }, { x: 6, y: 5.5 }, 100, 100)).toBeNull();
  });

  it("closes polygons only from three points", () => {
    expect(ringFrom([{ x: 0, y: 0 }, { x: 1, y: 1 }])).toBeNull();
    expect(ringFrom([{ x: 0, y: 0 }, { x: 4, y: 0 }, { x: 4, y: 3.333 }])).toEqual([0, 0, 4, 0, 4, 3.3]);
  });
});

describe("labels", () => {
  it("round-trips the manifest format and drops suggestion scores on submit", () => {
    const shapes = fromLabels([
      { type: "box", label: "cat", bbox: [1, 2, 3, 4], score: 0.7 },
      { type: "class", label: "indoor" },
      { type: "mask", label: "ignored" },
      { type: "box", label: "", bbox: [1, 2, 3, 4] },
    ]);
    expect(shapes).toHaveLength(2);
    expect(toSubmission(shapes)).toEqual([
      { type: "box", label: "cat", bbox: [1, 2, 3, 4] },
      { type: "class", label: "indoor" },
    ]);
  });

  it("keeps markup in a class name as plain data", () => {
    const [shape] = fromLabels([{ type: "class", label: "<img src=x onerror=alert(1)>" }]);
    expect(shape?.label).toBe("<img src=x onerror=alert(1)>");
  });
});

describe("history", () => {
  it("undoes and redoes, and a new change clears the redo stack", () => {
    let h = history<number[]>([]);
    h = commit(h, [1]);
    h = commit(h, [1, 2]);
    h = undo(h);
    expect(h.present).toEqual([1]);
    h = redo(h);
    expect(h.present).toEqual([1, 2]);
    h = undo(undo(h));
    expect(h.present).toEqual([]);
    expect(undo(h)).toBe(h);
    h = commit(h, [9]);
    expect(h.future).toEqual([]);
    expect(redo(h)).toBe(h);
  });
});

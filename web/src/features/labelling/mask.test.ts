import { describe, expect, it } from "vitest";
import { area, countsFromString, decodeRle, emptyBitmap, encodeRle, fillPolygon, paintDisc, paintInto, paintStroke } from "./mask";

describe("mask run-length encoding", () => {
  it("encodes column-major runs starting with background, and decodes them back", () => {
    const m = emptyBitmap(3, 2); // 3 wide, 2 high
    m.bits[0 * 3 + 1] = 1; // (x=1, y=0)
    m.bits[1 * 3 + 1] = 1; // (x=1, y=1)
    m.bits[1 * 3 + 2] = 1; // (x=2, y=1)
    const rle = encodeRle(m);
    // columns: x=0 [0,0], x=1 [1,1], x=2 [0,1] -> 0 0 1 1 0 1
    expect(rle).toEqual({ size: [2, 3], counts: [2, 2, 1, 1] });
    expect(Array.from(decodeRle(rle).bits)).toEqual(Array.from(m.bits));
  });
  it("reads pycocotools' compressed counts", () => {
    // Strings written by pycocotools' mask.encode for the 2×3 mask above, a 12×10 mask with
    // 100 background pixels then 20 set, and a 50×40 mask with two rectangles (665 pixels).
    expect(countsFromString("221O")).toEqual([2, 2, 1, 1]);
    expect(countsFromString("T3d0")).toEqual([100, 20]);
    const two = decodeRle({ size: [50, 40], counts: "\\45]1000Q2d0[M0000000000000000000000000000000000000000000000000i:" });
    expect(area(two)).toBe(25 * 26 + 5 * 3);
    expect(two.bits[10 * 40 + 10]).toBe(1); // inside the big rectangle (rows 5–29, columns 7–32)
    expect(two.bits[42 * 40 + 3]).toBe(1); // inside the small one (rows 40–44, columns 2–4)
    expect(two.bits[35 * 40 + 20]).toBe(0);
  });
  it("round-trips a painted stroke", () => {
    const m = emptyBitmap(40, 30);
    paintStroke(m, [{ x: 5, y: 5 }, { x: 30, y: 20 }], 3);
    const back = decodeRle(encodeRle(m));
    expect(Array.from(back.bits)).toEqual(Array.from(m.bits));
    const runs = encodeRle(m).counts as number[];
    expect(runs.reduce((a, b) => a + b, 0)).toBe(40 * 30);
  });
});

describe("painting", () => {
  it("paints a disc of about pi r squared pixels, clipped to the image", () => {
    const m = emptyBitmap(100, 100);
    paintDisc(m, 50, 50, 10);
    expect(area(m)).toBeGreaterThan(290);
    expect(area(m)).toBeLessThan(340);
    const edge = emptyBitmap(10, 10);
    paintDisc(edge, 0, 0, 4);
    expect(area(edge)).toBeGreaterThan(8);
    expect(area(edge)).toBeLessThan(20);
  });
  it("fills a polygon's inside and nothing outside", () => {
    const m = emptyBitmap(20, 20);
    fillPolygon(m, [2, 2, 12, 2, 12, 8, 2, 8]);
    expect(area(m)).toBe(60);
    expect(m.bits[5 * 20 + 5]).toBe(1);
    expect(m.bits[10 * 20 + 5]).toBe(0);
  });
});

describe("painting into a label's mask", () => {
  type S = { type: string; label: string; rle?: { size: [number, number]; counts: number[] | string } };
  const make = (rle: { size: [number, number]; counts: number[] | string }): S => ({ type: "mask", label: "road", rle });
  it("adds a mask for a new label, then grows the same one", () => {
    let shapes: S[] = [{ type: "box", label: "car" }];
    shapes = paintInto(shapes, "road", 20, 10, (b) => paintDisc(b, 5, 5, 2), make);
    expect(shapes).toHaveLength(2);
    const first = area(decodeRle(shapes[1]!.rle!));
    shapes = paintInto(shapes, "road", 20, 10, (b) => paintDisc(b, 15, 5, 2), make);
    expect(shapes).toHaveLength(2);
    expect(area(decodeRle(shapes[1]!.rle!))).toBe(2 * first);
  });
  it("leaves the labels alone when nothing was painted", () => {
    const shapes: S[] = [];
    expect(paintInto(shapes, "road", 20, 10, () => undefined, make)).toBe(shapes);
  });
});

import { describe, expect, it } from "vitest";
import { pickRendition, wantsPreview } from "./images";

const preview = { naturalWidth: 960 };
const original = { naturalWidth: 4000 };

describe("pickRendition", () => {
  it("draws the preview while it is sharp enough at this zoom", () => {
    expect(pickRendition([preview, original], 720)).toBe(preview);
  });
  it("switches to the original once zoomed past the preview's pixels", () => {
    expect(pickRendition([preview, original], 1500)).toBe(original);
  });
  it("uses whatever has arrived while the rest loads", () => {
    expect(pickRendition([preview, null], 3000)).toBe(preview);
    expect(pickRendition([null, original], 500)).toBe(original);
    expect(pickRendition([null, null], 500)).toBeNull();
  });
});

describe("wantsPreview", () => {
  it("gives large images a preview and leaves small or unsized ones alone", () => {
    expect(wantsPreview(4000, 3000)).toBe(true);
    expect(wantsPreview(320, 240)).toBe(false);
    expect(wantsPreview(1100, 900)).toBe(false);
    expect(wantsPreview(undefined, 3000)).toBe(false);
  });
});

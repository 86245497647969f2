import { describe as group, expect, it } from "vitest";
import { describe, summarise } from "./compression";

const report = { parent_version: 1, size_ratio: 0.27, size_change_bytes: -3000, top1_agreement: 0.984, accuracy_change: "not measured: no evaluation data" };

group("compression summary", () => {
  it("reports agreement and the registry's note when accuracy was not measured", () => {
    const s = summarise(report, { accuracy: 0.9 }, { top1_agreement: 0.984 });
    expect(s.accuracyDelta).toBeNull();
    expect(s.accuracyNote).toContain("not measured");
    expect(describe(s)).toBe("int8 of v1 · 0.27× size · top-1 agreement 98.4 % · accuracy Δ not measured");
  });
  it("gives the accuracy delta when both versions carry an accuracy", () => {
    const s = summarise(report, { accuracy: 0.9 }, { accuracy: 0.88 });
    expect(s.accuracyDelta).toBeCloseTo(-0.02);
    expect(describe(s)).toContain("accuracy Δ -2.0 pts");
  });
});

import { describe, expect, it } from "vitest";
import { gateResults, type ModelVersion, type Policy } from "./gates";

const policy = {
  model_name: "m",
  gated_aliases: ["production"],
  metric_gates: [{ metric: "accuracy", op: ">=", value: 0.9 }],
  regression_gates: [{ metric: "accuracy", max_drop: 0.02, higher_is_better: true }],
  promoter_roles: [],
  auto_promote: null,
  updated_at: null,
  updated_by: "",
} as Policy;

const version = (n: number, accuracy: number | undefined, split = "val") =>
  ({ version: n, version_id: `v${n}`, metrics: accuracy === undefined ? {} : { accuracy }, evaluation_split: split }) as unknown as ModelVersion;

describe("promotion gates", () => {
  it("passes a version over the threshold with no production yet", () => {
    expect(gateResults(policy, "production", version(1, 0.95), undefined)).toEqual([{ gate: "accuracy >= 0.9", passed: true, detail: "has 0.9500" }]);
  });

  it("fails a regression against production and a missing metric", () => {
    const results = gateResults(policy, "production", version(2, 0.91), version(1, 0.95));
    expect(results.map((r) => r.passed)).toEqual([true, false]);
    expect(gateResults(policy, "production", version(3, undefined), version(1, 0.95)).every((r) => !r.passed)).toBe(true);
  });

  it("refuses to compare versions evaluated on different splits", () => {
    const [, regression] = gateResults(policy, "production", version(2, 0.99, "test"), version(1, 0.95));
    expect(regression?.passed).toBe(false);
    expect(regression?.detail).toContain("not comparable");
  });

  it("has no gates for an alias the policy does not guard", () => {
    expect(gateResults(policy, "staging", version(2, 0.1), version(1, 0.95))).toEqual([]);
  });
});

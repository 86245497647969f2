import { describe, expect, it } from "vitest";
import type { MetricPoint } from "./api/training";
import { alignRuns, metricNames, rankTrials } from "./compare";

const point = (epoch: number, metrics: Record<string, number>): MetricPoint => ({ kind: "epoch", step: epoch * 10, epoch, metrics, at: "2026-01-01T00:00:00Z" });

describe("alignRuns", () => {
  it("puts runs of different lengths on the union of their epochs", () => {
    const a = [point(1, { val_accuracy: 0.5 }), point(2, { val_accuracy: 0.7 })];
    const b = [point(1, { accuracy: 0.4 }), point(2, { loss: 1 }), point(3, { accuracy: 0.9 })];
    expect(alignRuns([a, b], "accuracy")).toEqual([
      [1, 2, 3],
      [0.5, 0.7, null],
      [0.4, null, 0.9],
    ]);
  });
  it("lists metric names without their prefixes", () => {
    expect(metricNames([[point(1, { train_loss: 1, val_accuracy: 0.2, loss: 2 })]])).toEqual(["accuracy", "loss"]);
  });
});

describe("rankTrials", () => {
  const trial = (id: string, accuracy?: number) => ({ id, status: "succeeded", params: {}, metrics: accuracy === undefined ? {} : { accuracy } });
  it("puts the best first for either direction, unscored trials last", () => {
    const trials = [trial("a", 0.6), trial("b"), trial("c", 0.9), trial("d", 0.1)];
    expect(rankTrials(trials, "accuracy", "maximize").map((t) => t.id)).toEqual(["c", "a", "d", "b"]);
    expect(rankTrials(trials, "accuracy", "minimize").map((t) => t.id)).toEqual(["d", "a", "c", "b"]);
  });
  it("breaks ties by id, as the training service does", () => {
    const tied = [trial("z", 1), trial("m", 1), trial("a", 0.5)];
    expect(rankTrials(tied, "accuracy", "maximize").map((t) => t.id)).toEqual(["m", "z", "a"]);
  });
});

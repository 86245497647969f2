import { describe, expect, it } from "vitest";
import { appendSample, columns } from "./canary";

const analysis = (requests: number, errors: number, p99: number) => ({
  step: 0,
  candidate: { requests, errors, error_rate: errors / requests, p99_ms: p99, score_mean: 0.7 },
  stable: { requests: requests * 9, errors: 0, error_rate: 0, p99_ms: 20, score_mean: 0.9 },
  shadow: { compared: 4, agreed: 3, agreement: 0.75 },
  score_shift: 0.4,
});

describe("canary samples", () => {
  it("keeps one sample per new answer and skips repeats", () => {
    let history = appendSample([], analysis(10, 1, 30), 100);
    history = appendSample(history, analysis(10, 1, 30), 102);
    history = appendSample(history, analysis(20, 1, 35), 104);
    expect(history.map((s) => s.at)).toEqual([100, 104]);
    expect(history[1]?.candidateErrorRate).toBeCloseTo(0.05);
    expect(history[1]?.agreement).toBe(0.75);
  });
  it("reads an empty analysis as no figures yet", () => {
    const [sample] = appendSample([], {}, 1);
    expect(sample?.candidateP99).toBeNull();
    expect(sample?.candidateRequests).toBe(0);
  });
  it("gives both versions' series for the chart", () => {
    const history = appendSample(appendSample([], analysis(10, 1, 30), 1), analysis(20, 2, 40), 2);
    expect(columns(history, "p99")).toEqual([[1, 2], [30, 40], [20, 20]]);
    expect(columns(history, "errorRate")).toEqual([[1, 2], [10, 10], [0, 0]]);
    expect(columns(history, "confidence")).toEqual([[1, 2], [0.7, 0.7], [0.9, 0.9]]);
    expect(history[1]?.scoreShift).toBe(0.4);
  });
  it("keeps a bounded history", () => {
    let history = appendSample([], analysis(1, 0, 1), 0);
    for (let i = 2; i < 10; i += 1) history = appendSample(history, analysis(i, 0, 1), i, 5);
    expect(history).toHaveLength(5);
  });
});

// The canary's analysis over time: the serving API answers the current step's counters per
// version; the endpoint page polls it and keeps one sample per answer for its chart.

export interface Sample {
  at: number; // seconds since the epoch
  step: number;
  candidateErrorRate: number | null;
  stableErrorRate: number | null;
  candidateP99: number | null;
  stableP99: number | null;
  candidateRequests: number;
  stableRequests: number;
  agreement: number | null;
  candidateConfidence: number | null; // mean top score of the version's answers
  stableConfidence: number | null;
  scoreShift: number | null; // two-sample KS statistic between the versions' scores
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const side = (analysis: Record<string, unknown>, name: string): Record<string, unknown> =>
  (analysis[name] as Record<string, unknown> | undefined) ?? {};

/** One sample of an analysis; repeated answers with nothing new add nothing. */
export function appendSample(history: Sample[], analysis: Record<string, unknown>, at: number, keep = 600): Sample[] {
  const cand = side(analysis, "candidate");
  const stable = side(analysis, "stable");
  const sample: Sample = {
    at,
    step: num(analysis.step) ?? 0,
    candidateErrorRate: num(cand.error_rate),
    stableErrorRate: num(stable.error_rate),
    candidateP99: num(cand.p99_ms),
    stableP99: num(stable.p99_ms),
    candidateRequests: num(cand.requests) ?? 0,
    stableRequests: num(stable.requests) ?? 0,
    agreement: num(side(analysis, "shadow").agreement),
    candidateConfidence: num(cand.score_mean),
    stableConfidence: num(stable.score_mean),
    scoreShift: num(analysis.score_shift),
  };
  const last = history[history.length - 1];
  if (last && last.candidateRequests === sample.candidateRequests && last.stableRequests === sample.stableRequests && last.step === sample.step) {
    return history;
  }
  return [...history, sample].slice(-keep);
}

const percent = (v: number | null) => (v === null ? null : v * 100);

/** uPlot's columns for one measure of both versions (error rates in percent). */
export type Measure = "errorRate" | "p99" | "confidence";

export function columns(history: Sample[], measure: Measure): [number[], (number | null)[], (number | null)[]] {
  const pick = {
    errorRate: (s: Sample) => [percent(s.candidateErrorRate), percent(s.stableErrorRate)],
    p99: (s: Sample) => [s.candidateP99, s.stableP99],
    confidence: (s: Sample) => [s.candidateConfidence, s.stableConfidence],
  }[measure];
  return [history.map((s) => s.at), history.map((s) => pick(s)[0] ?? null), history.map((s) => pick(s)[1] ?? null)];
}

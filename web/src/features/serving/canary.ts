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
  };
  const last = history[history.length - 1];
  if (last && last.candidateRequests === sample.candidateRequests && last.stableRequests === sample.stableRequests && last.step === sample.step) {
    return history;
  }
  return [...history, sample].slice(-keep);
}

const percent = (v: number | null) => (v === null ? null : v * 100);

/** uPlot's columns for one measure of both versions (error rates in percent). */
export function columns(history: Sample[], measure: "errorRate" | "p99"): [number[], (number | null)[], (number | null)[]] {
  const pick =
    measure === "errorRate" ? (s: Sample) => [percent(s.candidateErrorRate), percent(s.stableErrorRate)] : (s: Sample) => [s.candidateP99, s.stableP99];
  return [history.map((s) => s.at), history.map((s) => pick(s)[0] ?? null), history.map((s) => pick(s)[1] ?? null)];
}

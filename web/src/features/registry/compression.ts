// What a compression report (the registry's job result, kept on the derived version) says, in
// the words the console shows.

export interface CompressionSummary {
  parent: number | null;
  sizeRatio: number | null;
  sizeChangeBytes: number | null;
  agreement: number | null;
  accuracyDelta: number | null;
  accuracyNote: string;
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);

/** The report's figures; the accuracy delta when both versions have an accuracy, else the
 * registry's own note (it measures top-1 agreement with the parent instead). */
export function summarise(report: Record<string, unknown>, parentMetrics: Record<string, unknown> = {}, ownMetrics: Record<string, unknown> = {}): CompressionSummary {
  const before = num(parentMetrics.accuracy);
  const after = num(ownMetrics.accuracy);
  const delta = before !== null && after !== null ? after - before : null;
  const note = typeof report.accuracy_change === "string" ? report.accuracy_change : "not measured";
  return {
    parent: num(report.parent_version),
    sizeRatio: num(report.size_ratio),
    sizeChangeBytes: num(report.size_change_bytes),
    agreement: num(report.top1_agreement),
    accuracyDelta: delta,
    accuracyNote: delta === null ? note : "",
  };
}

export function describe(s: CompressionSummary): string {
  const parts = [`int8 of v${s.parent ?? "?"}`];
  if (s.sizeRatio !== null) parts.push(`${s.sizeRatio.toFixed(2)}× size`);
  if (s.agreement !== null) parts.push(`top-1 agreement ${(s.agreement * 100).toFixed(1)} %`);
  parts.push(s.accuracyDelta !== null ? `accuracy Δ ${s.accuracyDelta >= 0 ? "+" : ""}${(s.accuracyDelta * 100).toFixed(1)} pts` : "accuracy Δ not measured");
  return parts.join(" · ");
}
